rule morphometry:
    """Beyond the paper: vertebral heights and Genant grades per vertebra."""
    input:
        refined="results/levelset_refine/{image_id}.npz",
        geometry="results/preprocess/{image_id}.geometry.json",
        peaks="results/select_peaks/{image_id}.json",
        points=if_annotated("results/ground_truth/{image_id}.json"),
        masks=if_annotated("results/ground_truth/{image_id}.npz"),
    output:
        heights="results/morphometry/{image_id}.tsv",
    log:
        "logs/morphometry/{image_id}.log",
    benchmark:
        "results/benchmarks/morphometry/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../workflow_scripts/morphometry.py"


rule morphometry_table:
    """Cohort heights, grade counts and agreement with the annotated grades."""
    input:
        heights=images("results/morphometry/{image_id}.tsv", PRED_IDS),
    output:
        rows="results/tables/morphometry.tsv",
        agreement=report(
            "results/tables/fracture_agreement.tsv",
            caption="../report/fracture_agreement.rst",
            category="Fracture grading",
        ),
        counts="results/tables/grade_counts.tsv",
    log:
        "logs/morphometry_table.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        image_ids=PRED_IDS,
    script:
        "../workflow_scripts/morphometry_table.py"


rule fracture_figure:
    """Fractured vertebrae (pipeline grade >= 1) with their measured heights drawn on them."""
    input:
        rows="results/tables/morphometry.tsv",
        images=[IMAGE[i] for i in PRED_IDS],
        refined=images("results/levelset_refine/{image_id}.npz", PRED_IDS),
    output:
        png=report(
            "results/figures/fracture_examples.png",
            caption="../report/fracture_examples.rst",
            category="Fracture grading",
        ),
        pdf="results/figures/fracture_examples.pdf",
    log:
        "logs/fracture_figure.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        image_ids=PRED_IDS,
    script:
        "../workflow_scripts/fracture_figure.py"
