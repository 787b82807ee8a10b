"""Rules mnet_whole_infer and unet_whole_infer: whole-image masks for one shard."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.model_stages import run_whole_infer

    run_whole_infer(
        snakemake.input.model,
        snakemake.input.images,
        snakemake.input.geometry,
        snakemake.output.masks,
        log=log,
    )
