rule make_demo_cohort:
    """Writes the synthetic demo cohort (images, annotations, sample sheet) from a seed."""
    output:
        sheet=DEMO_SHEET,
        images=directory(Path(config["demo"]["out_dir"]) / "images"),
        annotations=directory(Path(config["demo"]["out_dir"]) / "annotations"),
        contact_sheet=report(
            "results/figures/demo_contact_sheet.png",
            caption="../report/demo_contact_sheet.rst",
            category="Demo cohort",
        ),
    log:
        "logs/make_demo_cohort.log",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        demo=config["demo"],
    script:
        "../workflow_scripts/make_demo_cohort.py"
