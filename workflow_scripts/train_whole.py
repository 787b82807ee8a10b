"""Rules train_mnet_whole and train_unet_whole: Table 2's whole-image baselines."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
ids = snakemake.params.train_ids + snakemake.params.val_ids
sys.stderr = sys.stdout = log

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.steps import train

    # train.train_mnet_whole or train.train_unet_whole, named as the rule.
    getattr(train, snakemake.rule)(
        images=image_paths(snakemake.input.images, ids),
        masks=image_paths(snakemake.input.masks, ids),
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        train_ids=snakemake.params.train_ids,
        val_ids=snakemake.params.val_ids,
        settings=snakemake.params.settings,
        training=snakemake.params.training,
        log=log,
        epochs_csv=snakemake.log.epochs,
    )
