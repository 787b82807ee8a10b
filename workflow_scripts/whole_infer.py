"""Rules mnet_whole_infer and unet_whole_infer: whole-image masks for one shard."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.gpu import gpu_slot, slots_from_env

with gpu_slot(slots_from_env()):
    from lumbar_core.model_stages import run_whole_infer

    run_whole_infer(
        snakemake.input.model,
        snakemake.input.images,
        snakemake.input.geometry,
        snakemake.output.masks,
        log=log,
    )
