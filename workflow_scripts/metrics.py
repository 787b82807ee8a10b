"""Rule metrics: centre errors and region metrics of the six methods for one image."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import PREDICTION_SOURCES, run_metrics

image_id = snakemake.wildcards.image_id
inp = snakemake.input
# The refined masks are one file per image; the other predictions one folder per shard.
predictions = {
    name: inp[name] if name == "refined" else Path(inp[name]) / f"{image_id}.npz"
    for name in PREDICTION_SOURCES
}
run_metrics(
    image_id,
    inp.points,
    inp.masks,
    inp.peaks,
    predictions,
    snakemake.output.segmentation,
    snakemake.output.localization,
)
