"""Rule morphometry_table: cohort heights, grade counts and agreement with the annotation."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_morphometry_summary

out = snakemake.output
summary = run_morphometry_summary(snakemake.input, out.rows, out.agreement, out.counts)
for row in summary["agreement"]:
    print(row, file=sys.stderr)
