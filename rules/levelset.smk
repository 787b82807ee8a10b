rule levelset_refine:
    """Paper 2.4: DRLSE with the network-mask fidelity, for PN+MNet and PN+UNet."""
    input:
        patches="results/crop/{image_id}.npz",
        mnet=shard_dir("segmentation", "mnet_infer"),
        unet=shard_dir("segmentation", "unet_infer"),
        geometry="results/preprocess/{image_id}.geometry.json",
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
        settings=config["levelset"],
        threshold=config["segmentation"]["threshold"],
    script:
        "../workflow_scripts/levelset_refine.py"
