rule metrics:
    """Paper 3.3: centre errors and region metrics of the six methods, per image and level."""
    input:
        points="results/ground_truth/{image_id}.json",
        masks="results/ground_truth/{image_id}.npz",
        peaks="results/select_peaks/{image_id}.json",
        mnet=shard_dir("segmentation", "mnet_infer"),
        unet=shard_dir("segmentation", "unet_infer"),
        refined="results/levelset_refine/{image_id}.npz",
        mnet_whole=shard_dir("whole_image", "mnet_whole_infer"),
        unet_whole=shard_dir("whole_image", "unet_whole_infer"),
    output:
        segmentation="results/metrics/{image_id}.segmentation.tsv",
        localization="results/metrics/{image_id}.localization.tsv",
    log:
        "logs/metrics/{image_id}.log",
    benchmark:
        "results/benchmarks/metrics/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../workflow_scripts/metrics.py"


rule qc:
    """Cohort QC: every image's status at each stage, and why an image was excluded."""
    input:
        geometry=images("results/preprocess/{image_id}.geometry.json", SAMPLES.index),
        points=images("results/ground_truth/{image_id}.json", ANNOTATED.index),
        peaks=images("results/select_peaks/{image_id}.json", PRED_IDS),
    output:
        qc=report(
            "results/qc.tsv", caption="../report/qc.rst", category="Quality control"
        ),
    log:
        "logs/qc.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        ids={
            "geometry": list(SAMPLES.index),
            "points": list(ANNOTATED.index),
            "peaks": PRED_IDS,
        },
    script:
        "../workflow_scripts/qc.py"


rule tables:
    """Table 1 (localisation) and Table 2 (segmentation), with strata, CIs and the paper's numbers."""
    input:
        segmentation=images("results/metrics/{image_id}.segmentation.tsv", EVAL_IDS),
        localization=images("results/metrics/{image_id}.localization.tsv", EVAL_IDS),
        qc="results/qc.tsv",
    output:
        table1=multiext("results/tables/table1", ".csv", ".tex"),
        table1_md=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
        table2=multiext("results/tables/table2", ".csv", ".tex"),
        table2_md=report(
            "results/tables/table2.md",
            caption="../report/table2.rst",
            category="Tables",
        ),
    log:
        "logs/tables.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        eval_ids=EVAL_IDS,
        sheet=SAMPLES[["image_id", "split", "modality", "group"]].to_dict("records"),
        settings=config["evaluation"],
    script:
        "../workflow_scripts/tables.py"
