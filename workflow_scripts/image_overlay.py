"""Rule image_overlay: one image with its centres, level names and refined outlines."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_image_overlay

title = run_image_overlay(
    snakemake.wildcards.image_id,
    snakemake.input.image,
    snakemake.input.peaks,
    snakemake.input.geometry,
    snakemake.input.refined,
    snakemake.output.png,
    points_path=snakemake.input.get("points"),
)
print(title, file=sys.stderr)
