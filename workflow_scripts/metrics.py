"""Rule metrics: centre errors and region metrics of the six methods for one image."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_metrics

image_id = snakemake.wildcards.image_id
inp = snakemake.input
predictions = {
    name: Path(inp[name]) / f"{image_id}.npz"
    for name in ("mnet", "unet", "mnet_whole", "unet_whole")
}
predictions["refined"] = inp.refined
run_metrics(
    image_id,
    inp.points,
    inp.masks,
    inp.peaks,
    predictions,
    snakemake.output.segmentation,
    snakemake.output.localization,
)
