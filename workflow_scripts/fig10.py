"""Rule fig10: CDF and box plot of the centre error per level (paper Fig. 10)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import report

report.fig10(
    localization=snakemake.input.localization,
    out_stem=Path(snakemake.output.png).with_suffix(""),
)
