"""Rule qc: the cohort's QC table (image_id, stage, status, message)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import evaluate

rows = evaluate.qc(
    geometry=snakemake.input.geometry,
    points=snakemake.input.points,
    peaks=snakemake.input.peaks,
    out=snakemake.output.qc,
)
print(f"{len(rows)} problem(s) recorded", file=sys.stderr)
