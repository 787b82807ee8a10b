"""Rules mnet_infer and unet_infer: patch masks for one shard, pasted back."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.model_stages import run_segment_infer

    run_segment_infer(
        snakemake.input.model,
        snakemake.input.patches,
        snakemake.input.geometry,
        snakemake.output.masks,
        threshold=snakemake.params.threshold,
        log=log,
    )
