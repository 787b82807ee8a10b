"""Rule select_peaks: five centres from the Pose-net map (docs/method.md section 2)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_select_peaks

image_id = snakemake.wildcards.image_id
result = run_select_peaks(
    Path(snakemake.input.maps) / f"{image_id}.npz",
    snakemake.input.geometry,
    snakemake.output.peaks,
    settings=snakemake.params.settings,
    annotated=bool(snakemake.params.annotated),
)
print(f"{image_id}: {result['status']} {result.get('message', '')}", file=sys.stderr)
