"""Rule levelset_refine: DRLSE refinement of the PN+MNet and PN+UNet patch masks, each
network with its own coefficients."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import levelset

image_id = snakemake.wildcards.image_id
record = levelset.levelset_refine(
    patches=snakemake.input.patches,
    network_masks={m: Path(snakemake.input[m]) / f"{image_id}.npz" for m in ("mnet", "unet")},
    geometry=snakemake.input.geometry,
    out=snakemake.output.masks,
    params=snakemake.input.params,
)
for key, info in record.get("levelset", {}).items():
    print(f"{image_id} {key}: {info}", file=sys.stderr)
print(f"{image_id}: {record['status']} {record['message']}", file=sys.stderr)
