# lumbar-xray-seg: L1-L5 localisation, segmentation and level-set refinement in lateral
# lumbar radiographs. This file only wires: the steps live in rules/*.smk, their scripts in
# workflow_scripts/, the algorithms in lumbar_core/.
from snakemake.utils import min_version

min_version("9.0")


# The defaults live beside this file, so that --directory can point anywhere.
configfile: f"{workflow.basedir}/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/pose.smk"
include: "rules/train.smk"
include: "rules/segment.smk"
include: "rules/levelset.smk"
include: "rules/evaluate.smk"
include: "rules/morphometry.smk"
include: "rules/report.smk"
include: "rules/shards.smk"


# Cohort-level summaries are light: on a cluster they run where Snakemake runs.
localrules:
    all,
    figures,
    qc,
    tables,
    fig9,
    fig10,
    morphometry_table,
    fracture_figure,


rule all:
    default_target: True
    input:
        all_targets(),
