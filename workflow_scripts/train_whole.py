"""Rules train_mnet_whole and train_unet_whole: Table 2's whole-image baselines."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
sys.stderr = sys.stdout = log

from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.steps import train

    # train.train_mnet_whole or train.train_unet_whole, named as the rule.
    getattr(train, snakemake.rule)(
        images=snakemake.input.images,
        masks=snakemake.input.masks,
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        train_ids=snakemake.params.train_ids,
        val_ids=snakemake.params.val_ids,
        settings=snakemake.params.settings,
        training=snakemake.params.training,
        log=log,
        epochs_csv=snakemake.log.epochs,
    )
