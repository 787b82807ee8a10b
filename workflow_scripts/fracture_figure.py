"""Rule fracture_figure: fractured vertebrae with their measured heights drawn on them."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import morphometry

inp = snakemake.input
ids = snakemake.params.image_ids
inputs = {
    i: {"image": image, "refined": refined}
    for i, image, refined in zip(ids, inp.images, image_paths(inp.refined, ids), strict=True)
}
shown = morphometry.fracture_figure(
    rows=inp.rows, inputs=inputs, out_stem=Path(snakemake.output.png).with_suffix("")
)
print("shown: " + ", ".join(shown), file=sys.stderr)
