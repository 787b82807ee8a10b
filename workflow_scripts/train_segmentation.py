"""Rules train_mnet and train_unet: per-vertebra patch segmentation (paper 2.3, 3.2)."""

import sys

log = open(snakemake.log[0], "w", buffering=1)
ids = snakemake.params.train_ids + snakemake.params.val_ids
sys.stderr = sys.stdout = log

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.workflow.environment import model_job

# Threads, oneDNN, GPU slot and Keras backend: all before Keras is imported.
with model_job(snakemake.rule, threads=snakemake.threads, log=log):
    from lumbar_core.steps import train

    # train.train_mnet or train.train_unet, named as the rule.
    getattr(train, snakemake.rule)(
        patches=image_paths(snakemake.input.patches, ids),
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        train_ids=snakemake.params.train_ids,
        val_ids=snakemake.params.val_ids,
        settings=snakemake.params.settings,
        training=snakemake.params.training,
        log=log,
        epochs_csv=snakemake.log.epochs,
    )
