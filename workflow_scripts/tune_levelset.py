"""Rule tune_levelset: each network's level-set coefficients from a grid search on validation."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.environment import limit_framework_threads

limit_framework_threads(snakemake.threads)

from lumbar_core.model_stages import run_tune_levelset

run_tune_levelset(
    {"mnet": snakemake.input.mnet, "unet": snakemake.input.unet},
    snakemake.input.io,
    snakemake.input.points,
    snakemake.input.masks,
    snakemake.input.geometry,
    snakemake.output.table,
    snakemake.output.params,
    settings=snakemake.params.settings,
    patch_size=snakemake.params.patch_size,
    jitter_px=snakemake.params.jitter_px,
    threshold=snakemake.params.threshold,
    seed=snakemake.params.seed,
    log=log,
)
