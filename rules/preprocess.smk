rule preprocess:
    """Paper 2.1: Io = Gaussian(CLAHE(resize(input, 3072 x 1536))), with its geometry."""
    input:
        image=image_of,
    output:
        io=intermediate("results/preprocess/{image_id}.npz"),
        geometry="results/preprocess/{image_id}.geometry.json",
    log:
        "logs/preprocess/{image_id}.log",
    benchmark:
        "results/benchmarks/preprocess/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=config["preprocess"],
        spacing=spacing_of,
    script:
        "../workflow_scripts/preprocess.py"


rule resize:
    """Paper 2.1: I = Io resized to 512 x 256, the Pose-net input."""
    input:
        io="results/preprocess/{image_id}.npz",
        geometry="results/preprocess/{image_id}.geometry.json",
    output:
        i=intermediate("results/resize/{image_id}.npz"),
    log:
        "logs/resize/{image_id}.log",
    benchmark:
        "results/benchmarks/resize/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow_scripts/resize.py"


rule ground_truth:
    """Annotation -> centres and outlines in input, Io and I pixels, label masks 0..5."""
    input:
        annotation=annotation_of,
        geometry="results/preprocess/{image_id}.geometry.json",
    output:
        points="results/ground_truth/{image_id}.json",
        masks="results/ground_truth/{image_id}.npz",
    log:
        "logs/ground_truth/{image_id}.log",
    benchmark:
        "results/benchmarks/ground_truth/{image_id}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow_scripts/ground_truth.py"


rule preprocess_all:
    """Target: every image pre-processed and resized (Io and I), with its ground truth."""
    input:
        images("results/resize/{image_id}.npz", SAMPLES.index),
        images("results/ground_truth/{image_id}.json", ANNOTATED.index),
