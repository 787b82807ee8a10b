"""Rule morphometry: heights ha, hm, hp and Genant grades of L1..L5 for one image."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import morphometry

inp = snakemake.input
morphometry.morphometry(
    image_id=snakemake.wildcards.image_id,
    refined=inp.refined,
    geometry=inp.geometry,
    peaks=inp.peaks,
    out=snakemake.output.heights,
    points=inp.get("points"),
    masks=inp.get("masks"),
)
