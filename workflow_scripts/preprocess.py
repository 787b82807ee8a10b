"""Rule preprocess: Io (CLAHE + Gaussian at 3072 x 1536) and the geometry JSON."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import preprocess

record = preprocess.preprocess(
    image=snakemake.input.image,
    out_io=snakemake.output.io,
    out_geometry=snakemake.output.geometry,
    image_id=snakemake.wildcards.image_id,
    settings=snakemake.params.settings,
    spacing=snakemake.params.spacing,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
