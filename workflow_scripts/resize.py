"""Rule resize: I = Io resized to 512 x 256."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_resize

record = run_resize(snakemake.input.io, snakemake.output.i)
print(f"{snakemake.wildcards.image_id}: {record['status']} {record['message']}", file=sys.stderr)
