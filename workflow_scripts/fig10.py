"""Rule fig10: CDF and box plot of the centre error per level (paper Fig. 10)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import report

report.fig10(
    localization=image_paths(snakemake.input.localization, snakemake.params.eval_ids),
    out_stem=Path(snakemake.output.png).with_suffix(""),
)
