"""Rule image_overlay: one image with its centres, level names and refined outlines."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import report

title = report.image_overlay(
    image_id=snakemake.wildcards.image_id,
    image=snakemake.input.image,
    peaks=snakemake.input.peaks,
    geometry=snakemake.input.geometry,
    refined=snakemake.input.refined,
    out_png=snakemake.output.png,
    points=snakemake.input.get("points"),
)
print(title, file=sys.stderr)
