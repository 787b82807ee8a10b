"""Rules mnet_infer and unet_infer: patch masks for one shard, pasted back."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.steps import segment

    # segment.mnet_infer or segment.unet_infer, named as the rule.
    getattr(segment, snakemake.rule)(
        model=snakemake.input.model,
        patches=image_paths(snakemake.input.patches, snakemake.params.ids),
        geometry=image_paths(snakemake.input.geometry, snakemake.params.ids),
        out_dir=snakemake.output.masks,
        threshold=snakemake.params.threshold,
        log=log,
    )
