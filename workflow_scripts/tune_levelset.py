"""Rule tune_levelset: each network's level-set coefficients from a grid search on validation."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
ids = snakemake.params.val_ids
sys.stderr = sys.stdout = log

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.workflow.environment import model_job

# Threads and oneDNN before Keras is imported. The grid search is level-set work on the
# CPU around small M-net and U-net inferences: it runs on the CPU, in the CPU environment, always.
with model_job(snakemake.rule, threads=snakemake.threads, device="cpu", log=log):
    from lumbar_core.steps import levelset

    levelset.tune_levelset(
        models={"mnet": snakemake.input.mnet, "unet": snakemake.input.unet},
        io_images=image_paths(snakemake.input.io, ids),
        points=image_paths(snakemake.input.points, ids),
        masks=image_paths(snakemake.input.masks, ids),
        geometry=image_paths(snakemake.input.geometry, ids),
        out_table=snakemake.output.table,
        out_params=snakemake.output.params,
        settings=snakemake.params.settings,
        patch_size=snakemake.params.patch_size,
        jitter_px=snakemake.params.jitter_px,
        threshold=snakemake.params.threshold,
        seed=snakemake.params.seed,
        log=log,
    )
