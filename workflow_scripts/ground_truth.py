"""Rule ground_truth: the annotation in input, Io and I pixels, and its label masks."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_ground_truth

record = run_ground_truth(
    snakemake.input.annotation,
    snakemake.input.geometry,
    snakemake.output.points,
    snakemake.output.masks,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
