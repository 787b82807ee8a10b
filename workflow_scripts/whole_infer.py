"""Rules mnet_whole_infer and unet_whole_infer: whole-image masks for one shard."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.environment import limit_framework_threads
from lumbar_core.gpu import claim_gpu_for_job

limit_framework_threads(snakemake.threads)
with claim_gpu_for_job():
    from lumbar_core.model_stages import run_whole_infer

    run_whole_infer(
        snakemake.input.model,
        snakemake.input.images,
        snakemake.input.geometry,
        snakemake.output.masks,
        log=log,
    )
