"""Rule pose_infer: Pose-net confidence maps for one shard (model loaded once)."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.environment import limit_framework_threads
from lumbar_core.gpu import claim_gpu_for_job

limit_framework_threads(snakemake.threads)
with claim_gpu_for_job():
    from lumbar_core.model_stages import run_pose_infer

    run_pose_infer(snakemake.input.model, snakemake.input.images, snakemake.output.maps, log=log)
