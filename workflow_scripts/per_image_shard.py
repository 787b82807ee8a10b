"""Rules <step>_shard: a per-image step on every image of a shard, one job for all of
them (lumbar_core.workflow.per_image.run_shard; rules/shards.smk)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import run_shard

run_shard(snakemake)
