"""Rule fracture_figure: fractured vertebrae with their measured heights drawn on them."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import morphometry

inp = snakemake.input
inputs = {
    i: {"image": image, "refined": refined}
    for i, image, refined in zip(snakemake.params.image_ids, inp.images, inp.refined, strict=True)
}
shown = morphometry.fracture_figure(
    rows=inp.rows, inputs=inputs, out_stem=Path(snakemake.output.png).with_suffix("")
)
print("shown: " + ", ".join(shown), file=sys.stderr)
