# Training rules: every model of the paper is trained here, on the train split, with the
# validation split for early stopping. A model given in the config skips its rule.


rule train_posenet:
    """Paper 2.2: Pose-net (Eq. 1-5) on I with heatmap targets from the GT centres; the
    first member of the ensemble (posenet: members), the paper's one Pose-net."""
    input:
        images=images("results/resize/{image_id}.npz", TRAIN_IDS + VAL_IDS),
        points=images("results/ground_truth/{image_id}.json", TRAIN_IDS + VAL_IDS),
    output:
        model="results/models/posenet.keras",
        history="results/models/posenet.history.csv",
    log:
        main="logs/train_posenet.log",
        epochs="logs/train_posenet.epochs.csv",
    benchmark:
        "results/benchmarks/train_posenet.tsv"
    conda:
        MODEL_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        train_ids=TRAIN_IDS,
        val_ids=VAL_IDS,
        settings=POSENET_TRAIN_SETTINGS,
        training=config["training"],
    script:
        "../workflow_scripts/train_posenet.py"


use rule train_posenet as train_posenet_member with:
    output:
        model="results/models/posenet_member{member}.keras",
        history="results/models/posenet_member{member}.history.csv",
    log:
        main="logs/train_posenet_member{member}.log",
        epochs="logs/train_posenet_member{member}.epochs.csv",
    benchmark:
        "results/benchmarks/train_posenet_member{member}.tsv"
    # Keyword params named here replace the original's; the others are kept.
    params:
        # Member m: the same training from the training seed plus m - 1.
        training=lambda wildcards: {
            **config["training"],
            "seed": config["training"]["seed"] + int(wildcards.member) - 1,
        },


rule train_patches:
    """Paper 2.3: training patches from GT centres plus random jitter (Eq. 6 boxes)."""
    input:
        io="results/preprocess/{image_id}.npz",
        points="results/ground_truth/{image_id}.json",
        masks="results/ground_truth/{image_id}.npz",
    output:
        patches=intermediate("results/train_patches/{image_id}.npz"),
    log:
        "logs/train_patches/{image_id}.log",
    benchmark:
        "results/benchmarks/train_patches/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=config["segmentation"],
        seed=config["training"]["seed"],
    script:
        "../workflow_scripts/train_patches.py"


rule train_mnet:
    """Paper 2.3: M-net on 224 x 224 patches, centre vertebra's mask (Eq. 7, 8)."""
    input:
        patches=images("results/train_patches/{image_id}.npz", TRAIN_IDS + VAL_IDS),
    output:
        model="results/models/mnet.keras",
        history="results/models/mnet.history.csv",
    log:
        main="logs/train_mnet.log",
        epochs="logs/train_mnet.epochs.csv",
    benchmark:
        "results/benchmarks/train_mnet.tsv"
    conda:
        MODEL_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        arch="mnet",
        train_ids=TRAIN_IDS,
        val_ids=VAL_IDS,
        settings=config["segmentation"],
        training=config["training"],
    script:
        "../workflow_scripts/train_segmentation.py"


rule train_unet:
    """Paper 2.3: the U-net compared with M-net, same patches and recipe."""
    input:
        patches=images("results/train_patches/{image_id}.npz", TRAIN_IDS + VAL_IDS),
    output:
        model="results/models/unet.keras",
        history="results/models/unet.history.csv",
    log:
        main="logs/train_unet.log",
        epochs="logs/train_unet.epochs.csv",
    benchmark:
        "results/benchmarks/train_unet.tsv"
    conda:
        MODEL_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        arch="unet",
        train_ids=TRAIN_IDS,
        val_ids=VAL_IDS,
        settings=config["segmentation"],
        training=config["training"],
    script:
        "../workflow_scripts/train_segmentation.py"


rule train_mnet_whole:
    """Table 2 row 2: "Original M-net", the whole I in, L1..L5 out (6 classes)."""
    input:
        images=images("results/resize/{image_id}.npz", TRAIN_IDS + VAL_IDS),
        masks=images("results/ground_truth/{image_id}.npz", TRAIN_IDS + VAL_IDS),
    output:
        model="results/models/mnet_whole.keras",
        history="results/models/mnet_whole.history.csv",
    log:
        main="logs/train_mnet_whole.log",
        epochs="logs/train_mnet_whole.epochs.csv",
    benchmark:
        "results/benchmarks/train_mnet_whole.tsv"
    conda:
        MODEL_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        arch="mnet",
        train_ids=TRAIN_IDS,
        val_ids=VAL_IDS,
        settings=config["whole_image"],
        training=config["training"],
    script:
        "../workflow_scripts/train_whole.py"


rule train_unet_whole:
    """Table 2 row 1: "Original U-net", the whole I in, L1..L5 out (6 classes)."""
    input:
        images=images("results/resize/{image_id}.npz", TRAIN_IDS + VAL_IDS),
        masks=images("results/ground_truth/{image_id}.npz", TRAIN_IDS + VAL_IDS),
    output:
        model="results/models/unet_whole.keras",
        history="results/models/unet_whole.history.csv",
    log:
        main="logs/train_unet_whole.log",
        epochs="logs/train_unet_whole.epochs.csv",
    benchmark:
        "results/benchmarks/train_unet_whole.tsv"
    conda:
        MODEL_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        arch="unet",
        train_ids=TRAIN_IDS,
        val_ids=VAL_IDS,
        settings=config["whole_image"],
        training=config["training"],
    script:
        "../workflow_scripts/train_whole.py"
