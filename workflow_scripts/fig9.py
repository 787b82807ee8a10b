"""Rule fig9: loss curves of every trained model (paper Fig. 9)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import report

report.fig9(
    histories=snakemake.input.histories,
    out_stem=Path(snakemake.output.png).with_suffix(""),
)
