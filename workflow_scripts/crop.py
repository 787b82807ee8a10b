"""Rule crop: the five Eq. 6 patches around the detected centres."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import segment

record = segment.crop(
    io_image=snakemake.input.io,
    peaks=snakemake.input.peaks,
    out=snakemake.output.patches,
    patch_size=snakemake.params.patch_size,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
