rule pose_infer:
    """Paper 2.2: Pose-net confidence maps yL5, yL1-5 for a shard of images."""
    input:
        model=POSENET_MODELS,
        images=shard_images("posenet", "results/resize/{image_id}.npz"),
    output:
        maps=intermediate(directory("results/pose_infer/{shard}")),
    log:
        "logs/pose_infer/{shard}.log",
    benchmark:
        "results/benchmarks/pose_infer/{shard}.tsv"
    conda:
        MODEL_ENV
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        ids=shard_ids("posenet"),
        scales=config["posenet"]["test_time_scales"],
    script:
        "../workflow_scripts/pose_infer.py"


rule select_peaks:
    """docs/method.md section 2, steps 1-6: five centres from yL1-5, mapped to Io and the input,
    and whether they form a plausible lumbar spine (annotated images stay evaluated)."""
    input:
        maps=shard_dir("posenet", "pose_infer"),
        geometry="results/preprocess/{image_id}.geometry.json",
    output:
        peaks="results/select_peaks/{image_id}.json",
    log:
        "logs/select_peaks/{image_id}.log",
    benchmark:
        "results/benchmarks/select_peaks/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        settings=config["peaks"],
        annotated=lambda wildcards: wildcards.image_id in ANNOTATED.index,
    script:
        "../workflow_scripts/select_peaks.py"
