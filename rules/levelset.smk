rule tune_levelset:
    """Paper 2.4: each network's level-set coefficients, by a grid search on the validation
    split scored as Table 2 is (Dice of the pasted-back masks in Io)."""
    input:
        mnet=model_path("segmentation", "mnet_model", "mnet"),
        unet=model_path("segmentation", "unet_model", "unet"),
        io=images("results/preprocess/{image_id}.npz", VAL_IDS),
        geometry=images("results/preprocess/{image_id}.geometry.json", VAL_IDS),
        points=images("results/ground_truth/{image_id}.json", VAL_IDS),
        masks=images("results/ground_truth/{image_id}.npz", VAL_IDS),
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
        val_ids=VAL_IDS,
        settings=config["levelset"],
        threshold=config["segmentation"]["threshold"],
        patch_size=config["segmentation"]["patch_size"],
        jitter_px=config["segmentation"]["jitter_px"],
        seed=config["training"]["seed"],
    script:
        "../workflow_scripts/tune_levelset.py"


rule levelset_refine:
    """Paper 2.4: DRLSE with the network-mask fidelity, for PN+MNet and PN+UNet, each with
    its own tuned coefficients; pasted back by the rule the network masks used."""
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
    script:
        "../workflow_scripts/levelset_refine.py"
