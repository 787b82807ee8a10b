"""Rule tables: Table 1 and Table 2 with strata, bootstrap CIs and the paper's numbers."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.workflow.per_image import image_paths
from lumbar_core.steps import evaluate

settings = snakemake.params.settings
ids = snakemake.params.eval_ids
evaluate.tables(
    segmentation=image_paths(snakemake.input.segmentation, ids),
    localization=image_paths(snakemake.input.localization, ids),
    qc=snakemake.input.qc,
    sheet=snakemake.params.sheet,
    table1_stem=Path(snakemake.output.table1_md).with_suffix(""),
    table2_stem=Path(snakemake.output.table2_md).with_suffix(""),
    n_boot=settings["n_boot"],
    seed=settings["seed"],
)
