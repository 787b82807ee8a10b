"""Rule qc: the cohort's QC table (image_id, stage, status, message)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from lumbar_core.io import write_table
from lumbar_core.stages import qc_rows

rows = qc_rows(snakemake.input.geometry, snakemake.input.points, snakemake.input.peaks)
table = pd.DataFrame(rows, columns=["image_id", "stage", "status", "message"])
write_table(snakemake.output.qc, table)
print(f"{len(table)} problem(s) recorded", file=sys.stderr)
