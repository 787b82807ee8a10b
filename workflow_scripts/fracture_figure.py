"""Rule fracture_figure: fractured vertebrae with their measured heights drawn on them."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_fracture_figure

inputs = {
    i: {"image": path, "refined": f"results/levelset_refine/{i}.npz"}
    for i, path in snakemake.params.images.items()
}
shown = run_fracture_figure(
    snakemake.input.rows, inputs, Path(snakemake.output.png).with_suffix("")
)
print("shown: " + ", ".join(shown), file=sys.stderr)
