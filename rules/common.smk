import sys
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library lives beside this workflow; make it importable here and by every job, also
# in conda environments that do not have the package installed.
sys.path.insert(0, workflow.basedir)
from lumbar_core.workflow.cohort import load_sample_sheet, make_shards
from lumbar_core.workflow.environment import (
    export_device,
    export_gpu_slots,
    export_library_path,
)
from lumbar_core.workflow.scheduling import coalesce_reevaluation_timers

export_library_path(workflow.basedir)
# Snakemake 9 starts one endless 1 s re-selection timer per job that finishes while others
# wait; hundreds of them took up to most of a core on 2-core runs. Keep one (only on the
# Snakemake versions the patch was tested on; elsewhere it warns and the run goes on).
SCHEDULER_PATCHED = coalesce_reevaluation_timers()
if not SCHEDULER_PATCHED:
    print(
        "lumbar-xray-seg: Snakemake's scheduler timers are not coalesced on this version",
        file=sys.stderr,
    )

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

DEMO_SHEET = Path(config["demo"]["out_dir"]) / "samples.tsv"
SHEET = Path(config["samples"])
if SHEET.exists() or SHEET != DEMO_SHEET:
    # Sheet-level problems stop the run here, before any job starts.
    SAMPLES = load_sample_sheet(
        SHEET, schema=workflow.source_path("../schemas/samples.schema.yaml")
    )
else:
    # A fresh clone has no demo cohort yet: `all` then only writes it (make_demo_cohort),
    # and a second invocation runs the workflow on it (the Makefile's `demo` does both).
    SAMPLES = pd.DataFrame(
        columns=[
            "image_id",
            "image",
            "annotation",
            "split",
            "modality",
            "group",
            "pixel_spacing_mm",
        ]
    )

ANNOTATED = SAMPLES[SAMPLES["annotation"] != ""]
TRAIN_IDS = sorted(ANNOTATED.index[ANNOTATED["split"] == "train"])
VAL_IDS = sorted(ANNOTATED.index[ANNOTATED["split"] == "val"])
PRED_IDS = sorted(SAMPLES.index[SAMPLES["split"].isin(config["predict_splits"])])
EVAL_IDS = sorted(set(PRED_IDS) & set(ANNOTATED.index))
_CUTS = {}


def _cut(ids, size):
    """Shards of ``ids`` and the shard of each id, cut once per id list and size."""
    key = (tuple(ids), size)
    if key not in _CUTS:
        shards = make_shards(ids, size)
        _CUTS[key] = shards, {i: s for s, members in shards.items() for i in members}
    return _CUTS[key]


# Inference runs on shards (one model load per shard); each block has its own shard size.
# The cuts depend on the ids alone (make_shards), so an image added to the sheet reruns
# only the shard it falls into; a shard is named by its first image id.
SHARDS = {
    block: _cut(PRED_IDS, config[block]["shard_size"])[0]
    for block in ("posenet", "segmentation", "whole_image")
}
SHARD_OF = {
    block: _cut(PRED_IDS, config[block]["shard_size"])[1]
    for block in ("posenet", "segmentation", "whole_image")
}


#: Per-image steps (rules/shards.smk): one job per image, or one per shard of images.
SHARD_JOBS = config["per_image_steps"]["jobs"] == "shard"
#: The images each per-image rule runs on; in shard mode they are cut into its shards.
STEP_IDS = {
    "preprocess": list(SAMPLES.index),
    "resize": list(SAMPLES.index),
    "ground_truth": list(ANNOTATED.index),
    "train_patches": TRAIN_IDS + VAL_IDS,
    "select_peaks": PRED_IDS,
    "crop": PRED_IDS,
    "levelset_refine": PRED_IDS,
    "metrics": EVAL_IDS,
    "morphometry": PRED_IDS,
    "image_overlay": PRED_IDS,
}
STEP_SHARDS = {
    step: _cut(ids, config["per_image_steps"]["shard_size"])[0]
    for step, ids in STEP_IDS.items()
}
STEP_SHARD_OF = {
    step: _cut(ids, config["per_image_steps"]["shard_size"])[1]
    for step, ids in STEP_IDS.items()
}


wildcard_constraints:
    image_id="[A-Za-z0-9_-]+",
    shard="[A-Za-z0-9_-]+",
    part="[A-Za-z0-9_-]+",
    member="[2-9]|[1-9][0-9]+",


# Plain dicts: input functions run once per job, and a DataFrame lookup per call adds up
# on sheets of tens of thousands of images.
IMAGE = SAMPLES["image"].to_dict()
ANNOTATION = SAMPLES["annotation"].to_dict()
SPACING = {
    i: None if pd.isna(v) else float(v) for i, v in SAMPLES["pixel_spacing_mm"].items()
}


def image_of(wildcards):
    return IMAGE[wildcards.image_id]


def annotation_of(wildcards):
    return ANNOTATION[wildcards.image_id]


def spacing_of(wildcards):
    return SPACING[wildcards.image_id]


def intermediate(path):
    """An array file the tables and figures do not need once the run is done: temp()
    (deleted as soon as no job of the run needs it) unless keep_intermediates is true.
    docs/storage.md lists them and what a rerun then recomputes."""
    return path if config["keep_intermediates"] else temp(path)


def per_image(pattern, ids):
    return [pattern.format(image_id=i) for i in ids]


_OUTPUTS = {"steps": [], "found": {}, "by_prefix": {}}


def _defined(name):
    try:
        getattr(rules, name)
    except WorkflowError:
        return False
    return True


def _per_image_outputs():
    """Every output of the per-image rules defined so far: pattern -> (step, output name,
    shard folder less the shard), and by the pattern's part before {image_id}:
    [(suffix, pattern)]."""
    if len(_OUTPUTS["steps"]) < len(STEP_IDS):
        defined = [step for step in STEP_IDS if _defined(step)]
        if defined != _OUTPUTS["steps"]:
            found, by_prefix = {}, {}
            for step in defined:
                for name, pattern in getattr(rules, step).output.items():
                    prefix, suffix = str(pattern).split("{image_id}")
                    folder = shard_folder_of(str(pattern), name, "")
                    found[str(pattern)] = (step, name, folder)
                    by_prefix.setdefault(prefix, []).append((suffix, str(pattern)))
            _OUTPUTS.update(steps=defined, found=found, by_prefix=by_prefix)
    return _OUTPUTS


def shard_folder_of(pattern, name, part):
    """results/<step>/<output name>/<shard>: a per-shard job's folder of one output."""
    return f"{Path(pattern).parent}/{name}/{part}"


def shard_folders(pattern, image_ids):
    """The folder of each image where the per-shard jobs of the per-image rule with
    output `pattern` write that output: results/<step>/<output name>/<shard>."""
    step, _, folder = _per_image_outputs()["found"][pattern]
    shard_of = STEP_SHARD_OF[step]
    missing = [i for i in image_ids if i not in shard_of]
    if missing:
        raise ValueError(
            f"rule {step} does not run on image {missing[0]}, so it writes no "
            f"{pattern.format(image_id=missing[0])} (per_image_steps: shard)"
        )
    return [folder + shard_of[i] for i in image_ids]


def in_shards(path):
    """A per-image rule's file, named by its path in a one-job-per-image run, as the
    per-shard job writes it, with the shard folder that holds it; any other path as it
    is, with None."""
    cut = path.rfind("/") + 1
    for suffix, pattern in _per_image_outputs()["by_prefix"].get(path[:cut], ()):
        image_id = path[cut : len(path) - len(suffix)]
        if path.endswith(suffix) and image_id and "." not in image_id:
            folder = shard_folders(pattern, [image_id])[0]
            return f"{folder}/{path[cut:]}", folder
    return path, None


def images(pattern, ids):
    """Input: what a rule needs of the per-image files `pattern` of `ids` (a list, or a
    function of the wildcards): the files, or in shard mode the shard folders that hold
    them. Scripts find each image's file with per_image.image_paths."""

    def needs(image_ids):
        if not SHARD_JOBS:
            return per_image(pattern, image_ids)
        return sorted(set(shard_folders(pattern, image_ids)))

    return (lambda wildcards: needs(ids(wildcards))) if callable(ids) else needs(ids)


def shard_images(block, pattern):
    """Input function: the per-image files of an inference shard's images."""
    return images(pattern, shard_ids(block))


def shard_ids(block):
    """Params function: the image ids of an inference shard, in order."""
    return lambda wildcards: SHARDS[block][wildcards.shard]


def shard_dir(block, step):
    """Input function: the output folder of the shard that holds the image."""
    return lambda wildcards: f"results/{step}/{SHARD_OF[block][wildcards.image_id]}"


def model_path(block, key, name):
    """A model given in the config, or the one this workflow trains."""
    return config[block][key] or f"results/models/{name}.keras"


def posenet_names():
    """The Pose-nets this workflow trains (posenet: members): posenet, posenet_member2, ..."""
    members = range(2, config["posenet"]["members"] + 1)
    return ["posenet"] + [f"posenet_member{m}" for m in members]


#: The Pose-net files whose maps are averaged: given in the config (one path or a list),
#: or the members this workflow trains.
POSENET_MODELS = (
    [config["posenet"]["model"]]
    if isinstance(config["posenet"]["model"], str)
    else config["posenet"]["model"]
    or [f"results/models/{n}.keras" for n in posenet_names()]
)
#: What a Pose-net's training depends on: the posenet block without the inference-only
#: scales and the number of members, so that changing those retrains nothing.
POSENET_TRAIN_SETTINGS = {
    k: v
    for k, v in config["posenet"].items()
    if k not in ("test_time_scales", "members")
}


# Level-set coefficients given in the config, or those rule tune_levelset chooses.
LEVELSET_PARAMS = (
    config["levelset"].get("params_file") or "results/levelset/params.json"
)


# Snakemake counts GPUs (--resources gpu=K) but does not say which one a job may use: the
# model rules claim one of K slots themselves (lumbar_core.workflow.gpu). K reaches the jobs through
# the environment, not params, so that changing it never triggers a rerun.
if "gpu" in workflow.global_resources:
    export_gpu_slots(workflow.global_resources["gpu"])

# Where the model rules (training, inference; resources: gpu=1) run: `device` in the config.
# With `gpu` they use the GPU environment (Keras on JAX with CUDA) under
# --software-deployment-method conda, and fail if they find no GPU; with `auto` they use
# a GPU if the installed backend sees one, else the CPU; with `cpu` always the CPU. Every
# other rule (per image, tables, level-set tuning) uses the CPU environment. The setting
# reaches the jobs through the environment (lumbar_core.workflow.environment.model_job).
MODEL_ENV = "../envs/gpu.yaml" if config["device"] == "gpu" else "../envs/cpu.yaml"
export_device(config["device"])

# Threads: model jobs size TensorFlow's pool to their `threads`
# (lumbar_core.workflow.environment.limit_framework_threads). Inference and tune_levelset
# declare 1, since most of such a job is Keras start-up, file I/O and pasting masks back,
# all on one core, and the other cores go on with the per-image jobs. A training declares
# half the cores, at most 2, so that two trainings run side by side: the small networks
# scale poorly with threads (docs/benchmarks.md, "Threads and the scheduler").
TRAIN_THREADS = max(1, min(2, workflow.cores // 2))


def if_annotated(pattern):
    """Input function: the image's ground-truth file, or nothing where it has none."""
    return lambda wildcards: (
        pattern.format(image_id=wildcards.image_id)
        if wildcards.image_id in ANNOTATED.index
        else []
    )


#: Models this run trains (a model given in the config is used as it is): name -> history.
TRAINED = {
    name: f"results/models/{name}.history.csv"
    for name, (block, key) in {
        **{name: ("posenet", "model") for name in posenet_names()},
        "mnet": ("segmentation", "mnet_model"),
        "unet": ("segmentation", "unet_model"),
        "mnet_whole": ("whole_image", "mnet_model"),
        "unet_whole": ("whole_image", "unet_model"),
    }.items()
    if not config[block][key]
}


def figure_targets():
    """Fig. 9, Fig. 10, the overlays and the fracture figure, as far as the run has them."""
    targets = []
    if PRED_IDS:
        targets += ["results/figures/overlays", "results/figures/fracture_examples.png"]
    if EVAL_IDS:
        targets += ["results/figures/fig10_centre_error.png"]
    if TRAINED:
        targets += ["results/figures/fig9_loss_curves.png"]
    return targets


def all_targets():
    if SAMPLES.empty:
        return [str(DEMO_SHEET)]
    targets = ["results/qc.tsv"]
    targets += images("results/select_peaks/{image_id}.json", PRED_IDS)
    targets += images("results/levelset_refine/{image_id}.npz", PRED_IDS)
    if PRED_IDS:
        targets += ["results/tables/morphometry.tsv"]
    if EVAL_IDS:
        targets += expand(
            "results/tables/{table}.{ext}",
            table=["table1", "table2"],
            ext=["csv", "md", "tex"],
        )
    return targets + figure_targets()
