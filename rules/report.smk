rule fig9:
    """Fig. 9: training and validation loss of every trained model."""
    input:
        histories=list(TRAINED.values()),
    output:
        png=report(
            "results/figures/fig9_loss_curves.png",
            caption="../report/fig9.rst",
            category="Figures",
        ),
        pdf="results/figures/fig9_loss_curves.pdf",
    log:
        "logs/fig9.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow_scripts/fig9.py"


rule fig10:
    """Fig. 10: CDF and box plot of the centre error per level."""
    input:
        localization=images("results/metrics/{image_id}.localization.tsv", EVAL_IDS),
    output:
        png=report(
            "results/figures/fig10_centre_error.png",
            caption="../report/fig10.rst",
            category="Figures",
        ),
        pdf="results/figures/fig10_centre_error.pdf",
    log:
        "logs/fig10.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        eval_ids=EVAL_IDS,
    script:
        "../workflow_scripts/fig10.py"


rule overlays:
    """Per-image overlays: best, worst and median test images (or the first unlabelled ones)."""
    input:
        segmentation=images("results/metrics/{image_id}.segmentation.tsv", EVAL_IDS),
        images=[IMAGE[i] for i in PRED_IDS],
        points=images("results/ground_truth/{image_id}.json", EVAL_IDS),
        peaks=images("results/select_peaks/{image_id}.json", PRED_IDS),
        refined=images("results/levelset_refine/{image_id}.npz", PRED_IDS),
        mnet=sorted({f"results/mnet_infer/{s}" for s in SHARDS["segmentation"]}),
        mnet_whole=sorted(
            {f"results/mnet_whole_infer/{s}" for s in SHARDS["whole_image"]}
        ),
    output:
        overlays=report(
            directory("results/figures/overlays"),
            patterns=["{name}.png"],
            caption="../report/overlays.rst",
            category="Overlays",
        ),
    log:
        "logs/overlays.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        n=config["evaluation"]["overlays"],
        image_ids=PRED_IDS,
        annotated=EVAL_IDS,
        shard_of=SHARD_OF,
    script:
        "../workflow_scripts/overlays.py"


rule image_overlay:
    """One image, whatever its status: centres with L1-L5, refined outlines, or the candidates found."""
    input:
        image=image_of,
        peaks="results/select_peaks/{image_id}.json",
        geometry="results/preprocess/{image_id}.geometry.json",
        refined="results/levelset_refine/{image_id}.npz",
        points=if_annotated("results/ground_truth/{image_id}.json"),
    output:
        png="results/figures/every_image/{image_id}.png",
    log:
        "logs/image_overlay/{image_id}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../workflow_scripts/image_overlay.py"


rule figures:
    """Target: Fig. 9, Fig. 10, the overlays and the fracture figure."""
    input:
        figure_targets(),


rule all_overlays:
    """Target: an overlay of every predicted image and the QC table (e.g. the real-film check)."""
    input:
        images("results/figures/every_image/{image_id}.png", PRED_IDS),
        "results/qc.tsv",
