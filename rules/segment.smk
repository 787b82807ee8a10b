rule crop:
    """Paper 2.3, Eq. 6: five 224 x 224 patches around the detected centres, with boxes."""
    input:
        io="results/preprocess/{image_id}.npz",
        peaks="results/select_peaks/{image_id}.json",
    output:
        patches=intermediate("results/crop/{image_id}.npz"),
    log:
        "logs/crop/{image_id}.log",
    benchmark:
        "results/benchmarks/crop/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1500,
    params:
        patch_size=config["segmentation"]["patch_size"],
    script:
        "../workflow_scripts/crop.py"


rule mnet_infer:
    """Paper 2.3: M-net per patch, centre component kept, pasted back (Io and input)."""
    input:
        model=model_path("segmentation", "mnet_model", "mnet"),
        patches=shard_images("segmentation", "results/crop/{image_id}.npz"),
        geometry=shard_images(
            "segmentation", "results/preprocess/{image_id}.geometry.json"
        ),
    output:
        masks=intermediate(directory("results/mnet_infer/{shard}")),
    log:
        "logs/mnet_infer/{shard}.log",
    benchmark:
        "results/benchmarks/mnet_infer/{shard}.tsv"
    conda:
        MODEL_ENV
    threads: 1
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        ids=shard_ids("segmentation"),
        threshold=config["segmentation"]["threshold"],
    script:
        "../workflow_scripts/segment_infer.py"


rule unet_infer:
    """Paper 2.3: the U-net on the same patches, for comparison."""
    input:
        model=model_path("segmentation", "unet_model", "unet"),
        patches=shard_images("segmentation", "results/crop/{image_id}.npz"),
        geometry=shard_images(
            "segmentation", "results/preprocess/{image_id}.geometry.json"
        ),
    output:
        masks=intermediate(directory("results/unet_infer/{shard}")),
    log:
        "logs/unet_infer/{shard}.log",
    benchmark:
        "results/benchmarks/unet_infer/{shard}.tsv"
    conda:
        MODEL_ENV
    threads: 1
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        ids=shard_ids("segmentation"),
        threshold=config["segmentation"]["threshold"],
    script:
        "../workflow_scripts/segment_infer.py"


rule mnet_whole_infer:
    """Table 2 row 2: the whole-image M-net, upsampled back to Io and the input grid."""
    input:
        model=model_path("whole_image", "mnet_model", "mnet_whole"),
        images=shard_images("whole_image", "results/resize/{image_id}.npz"),
        geometry=shard_images(
            "whole_image", "results/preprocess/{image_id}.geometry.json"
        ),
    output:
        masks=intermediate(directory("results/mnet_whole_infer/{shard}")),
    log:
        "logs/mnet_whole_infer/{shard}.log",
    benchmark:
        "results/benchmarks/mnet_whole_infer/{shard}.tsv"
    conda:
        MODEL_ENV
    threads: 1
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        ids=shard_ids("whole_image"),
    script:
        "../workflow_scripts/whole_infer.py"


rule unet_whole_infer:
    """Table 2 row 1: the whole-image U-net, upsampled back to Io and the input grid."""
    input:
        model=model_path("whole_image", "unet_model", "unet_whole"),
        images=shard_images("whole_image", "results/resize/{image_id}.npz"),
        geometry=shard_images(
            "whole_image", "results/preprocess/{image_id}.geometry.json"
        ),
    output:
        masks=intermediate(directory("results/unet_whole_infer/{shard}")),
    log:
        "logs/unet_whole_infer/{shard}.log",
    benchmark:
        "results/benchmarks/unet_whole_infer/{shard}.tsv"
    conda:
        MODEL_ENV
    threads: 1
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        ids=shard_ids("whole_image"),
    script:
        "../workflow_scripts/whole_infer.py"
