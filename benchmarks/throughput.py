"""Throughput of the inference part of the workflow: Snakemake jobs against one loop.

The same N test images go through the per-image inference chain up to the level set
(paper 2.1-2.4: ``preprocess`` (``Io``), ``resize`` (``I``), ``pose_infer``,
``select_peaks``, ``crop``, ``mnet_infer``, ``unet_infer``, ``tune_levelset``,
``levelset_refine``) two ways:

1. Snakemake on the repository's Snakefile, target
   ``results/levelset_refine/{image_id}.npz`` for every image, ``--cores C``, with the
   shard sizes of ``config.yaml`` (a model rule loads its model once per shard);
2. one Python process that calls the same ``lumbar_core.steps`` functions in a loop, each model loaded once for all
   images, writing the same files.

Both timings include their own start-up (Snakemake: parsing and the DAG; the loop: a
fresh interpreter importing TensorFlow). The script prints seconds and images/s of
each, their ratio, the 1-minute load average before and after each run
(``os.getloadavg``; other work on the machine slows both), a per-stage table built from
Snakemake's ``results/benchmarks/*.tsv`` beside the loop's own stage times (the
difference per job is what a job costs beyond the work itself: interpreter, imports,
model loading), and whether both ways wrote identical level-set masks.

The cohort is ``--sources`` phantom test images rendered by
``lumbar_core.phantom.write_demo_cohort`` (one per DR/CR x normal/abnormal stratum),
symlinked under N distinct ids, all in split ``test``. The models are given to both
ways through the config keys ``posenet.model``, ``segmentation.mnet_model`` and
``segmentation.unet_model``. By default they are trained first by the workflow's own
rules (``train_posenet``, ``train_mnet``, ``train_unet``) on a tiny phantom cohort with
the training lengths of the workflow tests' TINY settings and the architectures of
``config.yaml``: barely trained, but their maps have peaks, so images go through crop,
M-net and level set (the number with five centres is printed). ``--models DIR`` takes
trained ``posenet.keras``, ``mnet.keras`` and ``unet.keras`` from a folder (a
workflow's ``results/models``) instead; ``--untrained`` builds untrained ones with the
library builders (the Pose-net's zero-initialised outputs then give constant maps, and
every image stops after peak selection).

``--groups`` adds a third run with the ``groups`` and ``group-components`` of
``profiles/slurm/config.yaml`` on the local executor.

``--jobs shard`` runs the per-image steps one Snakemake job per shard of images
(``per_image_steps`` in config.yaml, rule ``<step>_shard``) instead of one job per image;
the per-stage table then counts shard jobs.

``--no-loop`` times Snakemake alone (a large N without the loop's hour).

``--shard-size K`` sets the images per ``pose_infer``, ``mnet_infer`` and ``unet_infer``
job instead of the shard sizes of ``config.yaml`` (larger shards pay the model jobs'
start-up fewer times).

Usage: ``python benchmarks/throughput.py [-n N] [--cores C] [--sources K]
[--models DIR | --untrained] [--jobs image|shard] [--shard-size K] [--no-loop] [--groups]
[--workdir DIR]``
"""

import argparse
import copy
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

_ROOT = Path(__file__).resolve().parents[1]
_SNAKEMAKE = Path(sys.executable).with_name("snakemake")
_MODEL_KEYS = {
    "posenet": ("posenet", "model"),
    "mnet": ("segmentation", "mnet_model"),
    "unet": ("segmentation", "unet_model"),
}
#: The rules up to the level set, in workflow order (the loop times the same stages).
_STAGES = ["preprocess", "resize", "pose_infer", "select_peaks", "crop", "mnet_infer",
           "unet_infer", "tune_levelset", "levelset_refine"]


def _import_root():
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))


def _load():
    return os.getloadavg()[0]


def make_cohort(folder, n, *, sources=4, seed=0):
    """Write a sheet of ``n`` test images symlinked to ``sources`` rendered phantoms.

    Returns the sheet path and the sorted image ids.
    """
    _import_root()
    import pandas as pd

    from lumbar_core.phantom import write_demo_cohort

    folder = Path(folder)
    rendered = write_demo_cohort(folder / "phantoms", seed=seed, n_train=0, n_val=0,
                                 n_test_per_stratum=math.ceil(sources / 4))
    phantoms = pd.read_csv(rendered, sep="\t", dtype=str, keep_default_na=False).head(sources)
    for sub in ("images", "annotations"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        src = phantoms.iloc[k % len(phantoms)]
        image_id = f"img{k:05d}"
        image = Path("images") / (image_id + Path(src["image"]).suffix)
        annotation = Path("annotations") / f"{image_id}.json"
        for link, target in ((image, src["image"]), (annotation, src["annotation"])):
            path = folder / link
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to((rendered.parent / target).resolve())
        rows.append({"image_id": image_id, "image": str(image), "annotation": str(annotation),
                     "split": "test", "modality": src["modality"], "group": src["group"],
                     "pixel_spacing_mm": src["pixel_spacing_mm"]})
    sheet = folder / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet, sorted(r["image_id"] for r in rows)


def _tiny():
    """The TINY settings of the workflow tests (``tests/conftest.py``)."""
    spec = importlib.util.spec_from_file_location("_lumbar_conftest", _ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest.TINY


def train_models(folder, config, *, seed=0, cores=2):
    """Train the three models with the workflow's own rules on a tiny phantom cohort.

    The training lengths are the TINY settings of the workflow tests (a few epochs);
    the architectures stay those of ``config`` so that inference costs what it costs
    in that configuration. Returns ``{name: path}``.
    """
    _import_root()
    from lumbar_core.phantom import write_demo_cohort

    folder = Path(folder)
    tiny = _tiny()
    sheet = write_demo_cohort(folder / "cohort", seed=tiny["demo"]["seed"],
                              n_train=tiny["demo"]["n_train"], n_val=tiny["demo"]["n_val"],
                              n_test_per_stratum=0)
    train = copy.deepcopy(config)
    train["samples"] = str(sheet)
    train["training"]["seed"] = seed
    for block in ("posenet", "segmentation"):
        for key in ("epochs", "warmup_epochs", "patience", "jitter_copies"):
            if key in tiny[block]:
                train[block][key] = tiny[block][key]
    configfile = folder / "config.yaml"
    configfile.write_text(yaml.safe_dump(train))
    targets = [f"results/models/{name}.keras" for name in _MODEL_KEYS]
    run_snakemake(folder, configfile, targets, cores=cores)
    return {name: str(folder / f"results/models/{name}.keras") for name in _MODEL_KEYS}


def build_models(folder, config, *, seed=0):
    """Untrained models at the sizes of ``config``, saved as ``<folder>/<name>.keras``.

    The Pose-net's output convolutions start at zero, so its maps are constant and every
    image fails peak selection: the chain then stops after ``select_peaks``.
    """
    _import_root()
    import keras

    from lumbar_core.models import build_mnet, build_posenet, build_unet, save_model

    keras.utils.set_random_seed(seed)
    pose, seg = config["posenet"], config["segmentation"]
    size = seg["patch_size"]
    models = {
        "posenet": build_posenet(width=pose["width"], depth=pose["depth"],
                                 downsample=pose["downsample"]),
        "mnet": build_mnet((size, size, 1), num_classes=2, filters=tuple(seg["filters"])),
        "unet": build_unet((size, size, 1), num_classes=2, filters=tuple(seg["filters"])),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = str(Path(folder) / f"{name}.keras")
        save_model(model, paths[name])
    return paths


def run_loop(workdir, sheet, config, models):
    """The inference chain in this process, one stage after the other over all images.

    Writes ``<workdir>/results/<step>/...`` as the workflow does (the model outputs in
    one folder ``all`` instead of one per shard). Returns the seconds of each stage and
    the ids whose peak selection found five centres.
    """
    _import_root()
    from lumbar_core.io import read_json
    from lumbar_core.steps import levelset as levelset_step
    from lumbar_core.steps import pose, preprocess as preprocess_step, segment
    from lumbar_core.workflow.cohort import load_sample_sheet

    out = Path(workdir) / "results"
    log = open(os.devnull, "w")
    samples = load_sample_sheet(sheet)
    ids = sorted(samples.index)
    seg = config["segmentation"]
    times = {}

    def path(step, image_id, ext=".npz"):
        return out / step / f"{image_id}{ext}"

    def timed(stage, run):
        start = time.perf_counter()
        run()
        times[stage] = time.perf_counter() - start

    def preprocess():
        for i in ids:
            spacing = samples.loc[i, "pixel_spacing_mm"]
            preprocess_step.preprocess(
                image=samples.loc[i, "image"], out_io=path("preprocess", i),
                out_geometry=path("preprocess", i, ".geometry.json"), image_id=i,
                settings=config["preprocess"],
                spacing=None if math.isnan(spacing) else float(spacing))

    geometries = [path("preprocess", i, ".geometry.json") for i in ids]
    crops = [path("crop", i) for i in ids]
    timed("preprocess", preprocess)
    timed("resize", lambda: [preprocess_step.resize(
        io_image=path("preprocess", i), geometry=path("preprocess", i, ".geometry.json"),
        out=path("resize", i)) for i in ids])
    timed("pose_infer", lambda: pose.pose_infer(
        model=models["posenet"], images=[path("resize", i) for i in ids],
        out_dir=out / "pose_infer" / "all", log=log))
    timed("select_peaks", lambda: [pose.select_peaks(
        maps=out / "pose_infer" / "all" / f"{i}.npz",
        geometry=path("preprocess", i, ".geometry.json"),
        out=path("select_peaks", i, ".json"), settings=config["peaks"]) for i in ids])
    timed("crop", lambda: [segment.crop(io_image=path("preprocess", i),
                                        peaks=path("select_peaks", i, ".json"),
                                        out=path("crop", i), patch_size=seg["patch_size"])
                           for i in ids])
    for arch in ("mnet", "unet"):
        timed(f"{arch}_infer", lambda arch=arch: getattr(segment, f"{arch}_infer")(
            model=models[arch], patches=crops, geometry=geometries,
            out_dir=out / f"{arch}_infer" / "all", threshold=seg["threshold"], log=log))
    params_path = out / "levelset" / "params.json"
    # No validation split in this cohort: the configured coefficients are written unchanged.
    timed("tune_levelset", lambda: levelset_step.tune_levelset(
        models={m: models[m] for m in ("mnet", "unet")}, io_images=[], points=[], masks=[],
        geometry=[], out_table=out / "levelset" / "tuning.csv", out_params=params_path,
        settings=config["levelset"], patch_size=seg["patch_size"], jitter_px=seg["jitter_px"],
        threshold=seg["threshold"], seed=config["training"]["seed"], log=log))

    def levelset():
        for i in ids:
            levelset_step.levelset_refine(
                patches=path("crop", i),
                network_masks={m: out / f"{m}_infer" / "all" / f"{i}.npz"
                               for m in ("mnet", "unet")},
                geometry=path("preprocess", i, ".geometry.json"),
                out=path("levelset_refine", i), params=params_path)

    timed("levelset_refine", levelset)
    detected = [i for i in ids if read_json(path("select_peaks", i, ".json"))["status"] == "ok"]
    return times, detected


def _in_fresh_process(function, *args, **kwargs):
    """Run ``function`` in a new interpreter; returns its result and wall seconds."""
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(function, *args, **kwargs).result()
    return result, time.perf_counter() - start


def startup_seconds():
    """Wall seconds of a fresh interpreter importing what a job's script imports."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = {}
    for label, code in (("lumbar_core.steps.preprocess (per-image jobs)",
                         "import lumbar_core.steps.preprocess"),
                        ("lumbar_core.steps.segment + keras (model jobs)",
                         "import lumbar_core.steps.segment, keras")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=_ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[label] = time.perf_counter() - start
    return out


def _group_options():
    profile = yaml.safe_load((_ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    groups = [f"{rule}={group}" for rule, group in profile.get("groups", {}).items()]
    components = [f"{g}={n}" for g, n in profile.get("group-components", {}).items()]
    return ["--groups", *groups, "--group-components", *components]


def run_snakemake(workdir, configfile, targets, *, cores, extra=()):
    """Snakemake on the repository's Snakefile; returns wall seconds and its log."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Targets first: options such as --groups take every word that follows them.
    cmd = [str(_SNAKEMAKE), *targets, "-s", str(_ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(configfile), "--cores", str(cores), "--nolock",
           *extra]
    log = workdir / "snakemake.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"snakemake failed (exit {proc.returncode}); the end of {log}:\n"
                 + "".join(log.read_text().splitlines(True)[-40:]))
    return seconds, log


def job_seconds(workdir):
    """Snakemake's own per-job benchmarks: rule -> (jobs, wall s, CPU s)."""
    import pandas as pd

    bench = Path(workdir) / "results" / "benchmarks"
    out = {}
    for rule in _STAGES:
        files = (sorted((bench / rule).glob("*.tsv")) or sorted(bench.glob(f"{rule}.tsv"))
                 or sorted((bench / f"{rule}_shard").glob("*.tsv")))
        if files:
            table = pd.concat([pd.read_csv(f, sep="\t") for f in files])
            out[rule] = (len(files), float(table["s"].sum()), float(table["cpu_time"].sum()))
    return out


def same_outputs(loop_dir, smk_dir, ids):
    """Number of images whose level-set masks are identical in both runs."""
    _import_root()
    import numpy as np

    from lumbar_core.io import load_npz

    same = 0
    for i in ids:
        a = load_npz(Path(loop_dir) / "results" / "levelset_refine" / f"{i}.npz")
        # One job per image, or per shard (results/levelset_refine/masks/<shard>/).
        b = load_npz(next((Path(smk_dir) / "results" / "levelset_refine").glob(f"**/{i}.npz")))
        same += a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return same


def _print_stages(n, loop_times, jobs, cores):
    print("\nper stage (s per image; a shard job's time is spread over its images):")
    print(f"{'stage':<16} {'loop':>8} {'jobs':>5} {'job wall':>9} {'job CPU':>8} "
          f"{'wall - loop':>11} {'per job':>8}")
    for stage in _STAGES:
        loop_s = loop_times.get(stage, float("nan"))
        count, wall, cpu = jobs.get(stage, (0, float("nan"), float("nan")))
        extra = (wall - loop_s) / count if count else float("nan")
        print(f"{stage:<16} {loop_s / n:8.3f} {count:5d} {wall / n:9.3f} {cpu / n:8.3f} "
              f"{(wall - loop_s) / n:11.3f} {extra:8.2f}")
    total_loop = sum(loop_times.values()) if loop_times else float("nan")
    total_jobs = sum(w for _, w, _ in jobs.values())
    print(f"{'total':<16} {total_loop / n:8.3f} {sum(c for c, _, _ in jobs.values()):5d} "
          f"{total_jobs / n:9.3f} {sum(c for _, _, c in jobs.values()) / n:8.3f} "
          f"{(total_jobs - total_loop) / n:11.3f}")
    print("'wall - loop': what the jobs spend beyond the loop's work on the same images; "
          "'per job': the same per Snakemake job\n(interpreter, imports, model load, and "
          f"the slowdown of running {cores} jobs side by side on {os.cpu_count()} cores).")
    return total_jobs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="number of test images (default 200; "
                        "-n 20 is a quick run)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--sources", type=int, default=4, help="distinct phantom images "
                        "rendered, reused under N ids (default 4, one per stratum)")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--models", type=Path, default=None, help="folder with trained "
                        "posenet/mnet/unet .keras files (default: train them briefly with "
                        "the workflow's training rules)")
    models.add_argument("--untrained", action="store_true", help="untrained models from the "
                        "library builders (every image then stops after peak selection)")
    parser.add_argument("--groups", action="store_true", help="also run Snakemake with the "
                        "groups and group-components of profiles/slurm/config.yaml")
    parser.add_argument("--jobs", choices=["image", "shard"], default="image",
                        help="the per-image steps one job per image or per shard "
                             "(per_image_steps.jobs; default image)")
    parser.add_argument("--shard-size", type=int, default=None, help="images per pose_infer, "
                        "mnet_infer and unet_infer job (default: the shard sizes of config.yaml)")
    parser.add_argument("--no-loop", action="store_true", help="time Snakemake only (no "
                        "in-process loop: no ratio, loop column or mask comparison)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and model seed")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything in this "
                        "folder (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    if args.groups and args.no_loop:
        parser.error("--groups compares with the loop; it cannot go with --no-loop")
    if args.shard_size is not None and args.shard_size < 1:
        parser.error(f"--shard-size must be >= 1; got {args.shard_size}")
    if args.n < 1 or args.sources < 1 or args.cores < 1:
        parser.error(f"-n, --sources and --cores must be >= 1; got {args.n}, {args.sources}, "
                     f"{args.cores}")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lumbar-throughput-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        _benchmark(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _benchmark(args, work):
    config = yaml.safe_load((_ROOT / "config.yaml").read_text())
    if args.shard_size is not None:
        for block in ("posenet", "segmentation"):
            config[block]["shard_size"] = args.shard_size
    sheet, ids = make_cohort(work / "cohort", args.n, sources=args.sources, seed=args.seed)
    if args.models:
        models = {name: str((args.models / f"{name}.keras").resolve()) for name in _MODEL_KEYS}
        missing = [p for p in models.values() if not os.path.isfile(p)]
        if missing:
            sys.exit(f"--models: missing {', '.join(missing)}")
        what = f"trained, from {args.models}"
    elif args.untrained:
        models, _ = _in_fresh_process(build_models, str(work / "models"), config,
                                      seed=args.seed)
        what = "untrained (library builders at config.yaml sizes, save_model)"
    else:
        start = time.perf_counter()
        models = train_models(work / "training", config, seed=args.seed, cores=args.cores)
        what = (f"trained by the workflow's rules with TINY epochs at config.yaml sizes "
                f"({time.perf_counter() - start:.0f} s, not counted below)")
    config["samples"] = str(sheet)
    config["per_image_steps"]["jobs"] = args.jobs
    for name, path in models.items():
        block, key = _MODEL_KEYS[name]
        config[block][key] = path
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))

    n = len(ids)
    shards = {b: math.ceil(n / config[b]["shard_size"]) for b in ("posenet", "segmentation")}
    print(f"throughput: N={n} test images ({args.sources} rendered phantoms under distinct ids), "
          f"models {what}")
    print(f"shard sizes: posenet {config['posenet']['shard_size']} ({shards['posenet']} shards), "
          f"segmentation {config['segmentation']['shard_size']} ({shards['segmentation']} "
          f"shards); {os.cpu_count()} CPU cores; level set at most "
          f"{config['levelset']['iterations']} iterations")

    rows, loop_times = [], {}
    if not args.no_loop:
        load0 = _load()
        (loop_times, detected), loop_s = _in_fresh_process(
            run_loop, str(work / "loop"), str(sheet), config, models)
        rows.append(("in-process loop (1 process)", loop_s, load0, _load()))
    load0 = _load()
    if args.jobs == "shard":
        _import_root()
        from lumbar_core.workflow.cohort import make_shards

        size = config["per_image_steps"]["shard_size"]
        targets = [f"results/levelset_refine/masks/{s}" for s in make_shards(ids, size)]
        print(f"per-image steps: one job per shard of about {size} images "
              f"({len(targets)} shards)")
    else:
        targets = [f"results/levelset_refine/{i}.npz" for i in ids]
    smk_s, _ = run_snakemake(work / "snakemake", configfile, targets, cores=args.cores)
    rows.append((f"snakemake --cores {args.cores}", smk_s, load0, _load()))
    if args.groups:
        load0 = _load()
        grp_s, grp_log = run_snakemake(work / "snakemake_groups", configfile, targets,
                                       cores=args.cores, extra=_group_options())
        rows.append((f"snakemake --cores {args.cores} --groups", grp_s, load0, _load()))

    if loop_times:
        print(f"five centres found in {len(detected)} of {n} images (the others skip crop, "
              "M-net and level set)")
    print(f"\n{'way':<36} {'seconds':>8} {'images/s':>9} {'load 1-min start/end':>21}")
    for name, seconds, before, after in rows:
        print(f"{name:<36} {seconds:8.1f} {n / seconds:9.3f} {before:10.2f} / {after:<8.2f}")
    if loop_times:
        print(f"ratio snakemake / loop: {smk_s / loop_s:.2f}x (goal <= 1.2x)")
    if args.groups:
        grouped = grp_log.read_text().count("group job")
        print(f"ratio snakemake --groups / loop: {grp_s / loop_s:.2f}x; group jobs in its log: "
              f"{grouped}" + (" (Snakemake ignores groups when it runs jobs locally)"
                              if grouped == 0 else ""))

    jobs = job_seconds(work / "snakemake")
    total_jobs = _print_stages(n, loop_times, jobs, args.cores)
    print(f"snakemake wall {smk_s:.1f} s; job seconds {total_jobs:.1f} s over {args.cores} cores "
          f"= {total_jobs / args.cores:.1f} s; the rest, {smk_s - total_jobs / args.cores:.1f} s, "
          "is parsing, the DAG, scheduling and cores left idle")
    for label, seconds in startup_seconds().items():
        print(f"a fresh interpreter importing {label}: {seconds:.1f} s")
    if loop_times:
        same = same_outputs(work / "loop", work / "snakemake", ids)
        print(f"identical level-set masks, loop vs snakemake: {same} of {n} images")
    if args.workdir:
        print(f"files kept in {work}")


if __name__ == "__main__":
    main()
