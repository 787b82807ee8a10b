"""Rule ground_truth: the annotation in input, Io and I pixels, and its label masks."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import preprocess

record = preprocess.ground_truth(
    annotation=snakemake.input.annotation,
    geometry=snakemake.input.geometry,
    out_points=snakemake.output.points,
    out_masks=snakemake.output.masks,
)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
