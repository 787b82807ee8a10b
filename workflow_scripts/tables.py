"""Rule tables: Table 1 and Table 2 with strata, bootstrap CIs and the paper's numbers."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.stages import run_tables

settings = snakemake.params.settings
run_tables(
    snakemake.input.segmentation,
    snakemake.input.localization,
    snakemake.input.qc,
    snakemake.params.sheet,
    Path(snakemake.output.table1_md).with_suffix(""),
    Path(snakemake.output.table2_md).with_suffix(""),
    n_boot=settings["n_boot"],
    seed=settings["seed"],
)
