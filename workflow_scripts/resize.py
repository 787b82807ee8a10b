"""Rule resize: I (512 x 256, the Pose-net input) from the stored Io."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import preprocess

record = preprocess.resize(
    io_image=snakemake.input.io,
    geometry=snakemake.input.geometry,
    out=snakemake.output.i,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
