rule fig9:
    """Fig. 9: training and validation loss of every trained model."""
    input:
        histories=[
            f"results/models/{name}.history.csv"
            for name in ("posenet", "mnet", "unet", "mnet_whole", "unet_whole")
        ],
    output:
        png=report(
            "results/figures/fig9_loss_curves.png",
            caption="../report/fig9.rst",
            category="Figures",
        ),
        pdf="results/figures/fig9_loss_curves.pdf",
    threads: 1
    resources:
        mem_mb=1000,
    log:
        "logs/fig9.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/fig9.py"


rule fig10:
    """Fig. 10: CDF and box plot of the centre error per level."""
    input:
        localization=per_image("results/metrics/{image_id}.localization.tsv", EVAL_IDS),
    output:
        png=report(
            "results/figures/fig10_centre_error.png",
            caption="../report/fig10.rst",
            category="Figures",
        ),
        pdf="results/figures/fig10_centre_error.pdf",
    threads: 1
    resources:
        mem_mb=1000,
    log:
        "logs/fig10.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/fig10.py"


rule overlays:
    """Per-image overlays (best, median and worst test images by PN+MNet+LS Dice)."""
    input:
        segmentation=per_image("results/metrics/{image_id}.segmentation.tsv", EVAL_IDS),
    output:
        overlays=report(
            directory("results/figures/overlays"),
            patterns=["{name}.png"],
            caption="../report/overlays.rst",
            category="Overlays",
        ),
    params:
        n=config["evaluation"]["overlays"],
        images={i: SAMPLES.loc[i, "image"] for i in EVAL_IDS},
        shards=SHARD_OF,
    threads: 1
    resources:
        mem_mb=4000,
    log:
        "logs/overlays.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/overlays.py"
