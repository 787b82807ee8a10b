"""The whole workflow on a GPU machine: per-rule wall times, each model job's device, peak GPU memory.

Runs Snakemake on a small synthetic (phantom) cohort with the paper's network sizes
(``config/paper.yaml``: Pose-net width 32, depth 5 at full resolution, M-net and U-net
filters 32-512 on 224 x 224 patches, the whole-image networks at full size) and the
epochs capped (``--epochs``, warm-up 1 epoch), with ``device: gpu`` so that a model job
that finds no GPU fails instead of training on the CPU. While it runs, ``nvidia-smi`` is
polled once a second for the memory used on each GPU. At the end the script prints

- per rule: jobs, total and longest wall time (from ``results/benchmarks``);
- per model job: the line it logged at start (backend, device, GPU slot, oneDNN), from
  ``logs/`` (:func:`lumbar_core.workflow.environment.model_job`);
- the peak memory used on each GPU (the whole device, as ``nvidia-smi`` reports it).

From the per-epoch times in ``results/models/*.history.csv`` (printed too) one estimates
the paper's full training: 797 images, at most 700 Pose-net and 400 segmentation epochs.

How to run
----------
On a machine with NVIDIA GPUs, from the repository root, after ``make install`` (which
installs the ``gpu`` extra, Keras on JAX with CUDA 12, where ``nvidia-smi`` lists a GPU)::

    .venv/bin/python benchmarks/gpu_run.py --gpus 1 --epochs 3 --workdir /scratch/gpu-run

``--gpus K`` is passed as ``--resources gpu=K`` (one model job per GPU at a time).
``--dry`` writes the configuration and prints the Snakemake commands without running
them. The work folder keeps the cohort, results and logs (rerunning continues there;
``--fresh`` empties it first).

On a machine with JAX and no TensorFlow (no internet: carry the wheels of
``pip download "jax[cuda12]" keras snakemake numpy scipy scikit-image scikit-learn pandas
imageio tifffile pydicom matplotlib pyyaml jsonschema tabulate jinja2`` and install them
with ``pip install --no-index --find-links wheels/ ...``, then ``pip install --no-deps -e .``),
Keras must use JAX in every job, per-image ones included::

    KERAS_BACKEND=jax python benchmarks/gpu_run.py --gpus 1 --epochs 2

The script sets ``KERAS_BACKEND=jax`` itself when TensorFlow is not installed. Size the
run to the time you have: the default (16 training, 4 validation and 4 test images,
3 epochs) trains five full-width networks; on a CPU it would take hours.
"""

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def overlay_config(*, n_train, n_val, n_test_per_stratum, epochs, shard_size):
    """The settings laid over ``config.yaml`` and ``config/paper.yaml``: cohort and epochs."""
    for name, value in (("n_train", n_train), ("n_val", n_val),
                        ("n_test_per_stratum", n_test_per_stratum), ("epochs", epochs),
                        ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1. Received: {name}={value!r}")
    capped = {"epochs": epochs, "warmup_epochs": min(1, epochs - 1), "patience": None,
              "shard_size": shard_size}
    return {
        "device": "gpu",
        "demo": {"n_train": n_train, "n_val": n_val, "n_test_per_stratum": n_test_per_stratum},
        "posenet": dict(capped),
        "segmentation": dict(capped),
        "whole_image": dict(capped),
    }


def snakemake_commands(workdir, configfile, *, cores, gpus):
    """The two Snakemake invocations (cohort, then the workflow), as argument lists."""
    base = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--resources", f"gpu={gpus}",
        "--configfile", str(ROOT / "config" / "paper.yaml"), str(configfile),
        "--rerun-incomplete", "--printshellcmds",
    ]
    return [base + ["make_demo_cohort"], base + ["all"]]


class GpuMemoryPoller:
    """Peak ``memory.used`` (MiB) of each GPU, polled with ``nvidia-smi`` in a thread."""

    def __init__(self, interval=1.0):
        self.interval = interval
        self.peak = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        exe = shutil.which("nvidia-smi")
        while exe and not self._stop.is_set():
            try:
                out = subprocess.run(
                    [exe, "--query-gpu=index,name,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[2].isdigit():
                    key = f"GPU {parts[0]} ({parts[1]})"
                    self.peak[key] = max(self.peak.get(key, 0), int(parts[2]))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def rule_times(workdir):
    """``{rule: [seconds of each job]}`` from the benchmark files of a finished run."""
    times = defaultdict(list)
    folder = Path(workdir) / "results" / "benchmarks"
    for path in sorted(folder.rglob("*.tsv")):
        rel = path.relative_to(folder)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        with path.open() as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                times[rule].append(float(row["s"]))
    return dict(times)


def model_job_lines(workdir):
    """``{log file: line}``: the start line of every model job (``model job <rule>: ...``)."""
    lines = {}
    folder = Path(workdir) / "logs"
    for path in sorted(folder.rglob("*.log")):
        with path.open(errors="replace") as handle:
            for line in handle:
                if line.startswith("model job "):
                    lines[str(path.relative_to(folder))] = line.strip()
                    break
    return lines


def epoch_seconds(workdir):
    """``{model: (epochs run, median seconds an epoch)}`` from the training histories."""
    out = {}
    for path in sorted((Path(workdir) / "results" / "models").glob("*.history.csv")):
        with path.open() as handle:
            seconds = sorted(float(row["seconds"]) for row in csv.DictReader(handle))
        if seconds:
            out[path.name.removesuffix(".history.csv")] = (len(seconds), seconds[len(seconds) // 2])
    return out


def report(workdir, peak_gpu, wall, file=sys.stdout):
    """Print the per-rule times, the model jobs' devices, epoch times and GPU memory."""
    print(f"\nwhole run: {wall:.0f} s", file=file)
    print(f"\n{'rule':<20} {'jobs':>5} {'total s':>9} {'longest s':>10}", file=file)
    for rule, seconds in sorted(rule_times(workdir).items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:<20} {len(seconds):>5} {sum(seconds):>9.1f} {max(seconds):>10.1f}", file=file)
    print("\nmodel jobs (log: start line)", file=file)
    lines = model_job_lines(workdir)
    for log, line in lines.items():
        print(f"  {log}: {line}", file=file)
    if not lines:
        print("  none found", file=file)
    print("\ntraining (epochs run, median s an epoch)", file=file)
    for model, (n, sec) in epoch_seconds(workdir).items():
        print(f"  {model:<12} {n:>4} {sec:>8.1f}", file=file)
    print("\npeak GPU memory used (nvidia-smi, whole device)", file=file)
    for gpu, mib in sorted(peak_gpu.items()):
        print(f"  {gpu}: {mib} MiB", file=file)
    if not peak_gpu:
        print("  no GPU seen by nvidia-smi", file=file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "results" / "gpu-run",
                        help="folder of the run's cohort, results and logs (default: results/gpu-run)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs to use (--resources gpu=K)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="CPU cores for Snakemake (default: all)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every training (cap)")
    parser.add_argument("--n-train", type=int, default=16, help="training images")
    parser.add_argument("--n-val", type=int, default=4, help="validation images")
    parser.add_argument("--n-test-per-stratum", type=int, default=1,
                        help="test images per DR/CR x normal/abnormal stratum (4 strata)")
    parser.add_argument("--shard-size", type=int, default=64, help="images per inference job")
    parser.add_argument("--fresh", action="store_true", help="empty the work folder first")
    parser.add_argument("--dry", action="store_true",
                        help="write the configuration, print the commands, run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="only print the figures of a finished run in --workdir")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be >= 1. Received: {args.gpus}")
    if args.cores < 1:
        parser.error(f"--cores must be >= 1. Received: {args.cores}")
    try:
        overlay = overlay_config(n_train=args.n_train, n_val=args.n_val,
                                 n_test_per_stratum=args.n_test_per_stratum,
                                 epochs=args.epochs, shard_size=args.shard_size)
    except ValueError as err:
        parser.error(str(err))
    if args.report_only:
        report(args.workdir, {}, 0.0)
        return 0

    if importlib.util.find_spec("tensorflow") is None:
        # Keras' default backend is TensorFlow: without it, every job must use JAX.
        os.environ.setdefault("KERAS_BACKEND", "jax")
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    configfile = args.workdir / "gpu_run.yaml"
    configfile.write_text(yaml.safe_dump(overlay, sort_keys=False))
    commands = snakemake_commands(args.workdir, configfile, cores=args.cores, gpus=args.gpus)
    print(f"configuration: {configfile}\n{configfile.read_text()}")
    print(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '(Keras default)')}")
    for cmd in commands:
        print("$ " + " ".join(cmd))
    if args.dry:
        return 0
    start = time.perf_counter()
    with GpuMemoryPoller() as poller:
        for cmd in commands:
            proc = subprocess.run(cmd, cwd=ROOT)
            if proc.returncode != 0:
                print(f"snakemake failed (exit {proc.returncode}); figures so far:")
                break
    report(args.workdir, poller.peak, time.perf_counter() - start)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
