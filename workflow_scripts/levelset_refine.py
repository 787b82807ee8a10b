"""Rule levelset_refine: DRLSE refinement of the PN+MNet and PN+UNet patch masks, each
network with its own coefficients."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.io import read_json
from lumbar_core.levelset import LevelSetParams
from lumbar_core.stages import run_levelset

image_id = snakemake.wildcards.image_id
record = run_levelset(
    snakemake.input.patches,
    {m: Path(snakemake.input[m]) / f"{image_id}.npz" for m in ("mnet", "unet")},
    snakemake.input.geometry,
    snakemake.output.masks,
    params={m: LevelSetParams(**p) for m, p in read_json(snakemake.input.params).items()},
)
for key, info in record.get("levelset", {}).items():
    print(f"{image_id} {key}: {info}", file=sys.stderr)
print(f"{image_id}: {record['status']} {record['message']}", file=sys.stderr)
