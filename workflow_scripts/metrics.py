"""Rule metrics: centre errors and region metrics of the six methods for one image."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import evaluate

image_id = snakemake.wildcards.image_id
inp = snakemake.input
# The refined masks are one file per image; the other predictions one folder per shard.
predictions = {
    name: inp[name] if name == "refined" else Path(inp[name]) / f"{image_id}.npz"
    for name in evaluate.PREDICTION_SOURCES
}
evaluate.metrics(
    image_id=image_id,
    points=inp.points,
    masks=inp.masks,
    peaks=inp.peaks,
    predictions=predictions,
    out_segmentation=snakemake.output.segmentation,
    out_localization=snakemake.output.localization,
)
