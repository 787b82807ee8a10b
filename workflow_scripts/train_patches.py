"""Rule train_patches: jittered Eq. 6 patches and centre-vertebra masks for training."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import train

settings = snakemake.params.settings
record = train.train_patches(
    io_image=snakemake.input.io,
    points=snakemake.input.points,
    masks=snakemake.input.masks,
    out=snakemake.output.patches,
    image_id=snakemake.wildcards.image_id,
    seed=snakemake.params.seed,
    patch_size=settings["patch_size"],
    jitter_px=settings["jitter_px"],
    jitter_copies=settings["jitter_copies"],
)
print(f"{snakemake.wildcards.image_id}: {record['status']}", file=sys.stderr)
