"""Rule fig10: CDF and box plot of the centre error per level (paper Fig. 10)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.plots import plot_centre_errors
from lumbar_core.stages import read_rows

plot_centre_errors(
    read_rows(snakemake.input.localization), Path(snakemake.output.png).with_suffix("")
)
