"""Rule fracture_figure: fractured vertebrae with their measured heights drawn on them."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_fracture_figure

inp = snakemake.input
inputs = {
    i: {"image": image, "refined": refined}
    for i, image, refined in zip(snakemake.params.image_ids, inp.images, inp.refined, strict=True)
}
shown = run_fracture_figure(inp.rows, inputs, Path(snakemake.output.png).with_suffix(""))
print("shown: " + ", ".join(shown), file=sys.stderr)
