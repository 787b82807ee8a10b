"""Rule fig9: loss curves of every trained model (paper Fig. 9)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_fig9

run_fig9(snakemake.input.histories, Path(snakemake.output.png).with_suffix(""))
