"""Rule qc: the cohort's QC table (image_id, stage, status, message)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import evaluate

ids = snakemake.params.ids
rows = evaluate.qc(
    geometry=image_paths(snakemake.input.geometry, ids["geometry"]),
    points=image_paths(snakemake.input.points, ids["points"]),
    peaks=image_paths(snakemake.input.peaks, ids["peaks"]),
    out=snakemake.output.qc,
)
print(f"{len(rows)} problem(s) recorded", file=sys.stderr)
