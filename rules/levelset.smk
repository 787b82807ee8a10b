rule tune_levelset:
    """Paper 2.4: level-set coefficients chosen by a grid search on the validation split."""
    input:
        model=model_path("segmentation", "mnet_model", "mnet"),
        patches=per_image("results/train_patches/{image_id}.npz", VAL_IDS),
    output:
        table="results/levelset/tuning.csv",
        params="results/levelset/params.json",
    log:
        "logs/tune_levelset.log",
    benchmark:
        "results/benchmarks/tune_levelset.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=config["levelset"],
        threshold=config["segmentation"]["threshold"],
        seed=config["training"]["seed"],
    script:
        "../workflow_scripts/tune_levelset.py"


rule levelset_refine:
    """Paper 2.4: DRLSE with the network-mask fidelity, for PN+MNet and PN+UNet."""
    input:
        patches="results/crop/{image_id}.npz",
        mnet=shard_dir("segmentation", "mnet_infer"),
        unet=shard_dir("segmentation", "unet_infer"),
        geometry="results/preprocess/{image_id}.geometry.json",
        params=LEVELSET_PARAMS,
    output:
        masks="results/levelset_refine/{image_id}.npz",
    log:
        "logs/levelset_refine/{image_id}.log",
    benchmark:
        "results/benchmarks/levelset_refine/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        threshold=config["segmentation"]["threshold"],
    script:
        "../workflow_scripts/levelset_refine.py"
