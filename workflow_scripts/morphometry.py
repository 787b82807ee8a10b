"""Rule morphometry: heights ha, hm, hp and Genant grades of L1..L5 for one image."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_morphometry

inp = snakemake.input
run_morphometry(
    snakemake.wildcards.image_id,
    inp.refined,
    inp.geometry,
    inp.peaks,
    snakemake.output.heights,
    points_path=inp.get("points"),
    masks_path=inp.get("masks"),
)
