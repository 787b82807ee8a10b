"""Rule preprocess: Io (CLAHE + Gaussian at 3072 x 1536), the geometry JSON and I (512 x 256)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_preprocess

record = run_preprocess(
    snakemake.input.image,
    snakemake.output.io,
    snakemake.output.geometry,
    snakemake.output.i,
    image_id=snakemake.wildcards.image_id,
    settings=snakemake.params.settings,
    spacing=snakemake.params.spacing,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
