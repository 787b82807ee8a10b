"""Rule select_peaks: five centres from the Pose-net map (docs/method.md section 2)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import pose

image_id = snakemake.wildcards.image_id
result = pose.select_peaks(
    maps=Path(snakemake.input.maps) / f"{image_id}.npz",
    geometry=snakemake.input.geometry,
    out=snakemake.output.peaks,
    settings=snakemake.params.settings,
    annotated=bool(snakemake.params.annotated),
)
print(f"{image_id}: {result['status']} {result.get('message', '')}", file=sys.stderr)
