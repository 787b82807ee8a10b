"""Rule pose_infer: Pose-net confidence maps for one shard (model loaded once)."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.steps import pose

    models = snakemake.input.model
    pose.pose_infer(
        model=[models] if isinstance(models, str) else list(models),
        images=image_paths(snakemake.input.images, snakemake.params.ids),
        out_dir=snakemake.output.maps,
        scales=snakemake.params.scales,
        log=log,
    )
