"""Rule crop: the five Eq. 6 patches around the detected centres."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_crop

record = run_crop(
    snakemake.input.io,
    snakemake.input.peaks,
    snakemake.output.patches,
    patch_size=snakemake.params.patch_size,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
