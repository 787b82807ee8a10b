"""Rule morphometry_table: cohort heights, grade counts and agreement with the annotation."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import morphometry

out = snakemake.output
summary = morphometry.morphometry_table(
    heights=image_paths(snakemake.input.heights, snakemake.params.image_ids),
    out_rows=out.rows,
    out_agreement=out.agreement,
    out_counts=out.counts,
)
for row in summary["agreement"]:
    print(row, file=sys.stderr)
