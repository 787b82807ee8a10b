"""Rule tune_levelset: level-set coefficients from a grid search on the validation split."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.environment import model_job

# Threads and oneDNN before Keras is imported. The grid search is level-set work on the
# CPU around a small M-net inference: it runs on the CPU, in the CPU environment, always.
with model_job(snakemake.rule, threads=snakemake.threads, device="cpu", log=log):
    from lumbar_core.model_stages import run_tune_levelset

    run_tune_levelset(
        snakemake.input.model,
        snakemake.input.patches,
        snakemake.output.table,
        snakemake.output.params,
        settings=snakemake.params.settings,
        threshold=snakemake.params.threshold,
        seed=snakemake.params.seed,
        log=log,
    )
