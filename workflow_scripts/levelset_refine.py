"""Rule levelset_refine: DRLSE refinement of the PN+MNet and PN+UNet patch masks, each
network with its own coefficients.

The call is in lumbar_core.workflow.per_image, shared with the rule's per-shard form."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import run_image

run_image(snakemake)
