"""Shared fixtures: a tiny demo cohort and a tiny configuration for workflow tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

#: Settings small enough for a workflow test on 2 CPU cores (models train a few epochs).
TINY = {
    "demo": {"out_dir": "resources/demo", "seed": 3, "n_train": 4, "n_val": 2,
             "n_test_per_stratum": 1, "difficulty": 1.0, "contact_sheet_images": 4},
    "posenet": {"width": 4, "depth": 3, "epochs": 2, "warmup_epochs": 1, "patience": 2, "shard_size": 3},
    "segmentation": {"filters": [4, 8, 8, 16, 16], "epochs": 2, "warmup_epochs": 1,
                     "patience": 2, "shard_size": 10, "jitter_copies": 1},
    "whole_image": {"filters": [4, 8, 8, 16, 16], "epochs": 2, "warmup_epochs": 1,
                    "patience": 2, "shard_size": 10},
    "levelset": {"iterations": 20, "search": {"lam": [0.2], "alpha": [0.0], "mu_l": [5.0]}},
    "evaluation": {"n_boot": 200, "seed": 0, "overlays": 2},
    # A 2-epoch Pose-net's map peaks near 1e-5: with the floor every detection would fail
    # and the steps after it would go untested. The floor has its own tests.
    "peaks": {"min_peak": 0.0},
}


def run_snakemake(workdir, *args, configfile=None, check=True, timeout=1500, env=None):
    """Run the real ``snakemake`` CLI on the repo's Snakefile in ``workdir``."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if configfile:
        # --configfile takes several values: an option must follow it, not a target.
        cmd += ["--configfile", str(configfile)]
    cmd += ["--cores", "2", "--rerun-incomplete", "--nolock", "--show-failed-logs"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def write_config(workdir, **overrides) -> Path:
    """A config file in ``workdir``: the repo's config.yaml, TINY and ``overrides`` merged."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())

    def merge(base, extra):
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(config, TINY)
    merge(config, overrides)
    path = Path(workdir) / "config.test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trained_models(run) -> dict:
    """Config overrides that take every network from the models a run trained."""
    models = Path(run) / "results/models"
    posenets = [models / "posenet.keras", *sorted(models.glob("posenet_member*.keras"))]
    return {
        "posenet": {"model": [str(p) for p in posenets]},
        "segmentation": {"mnet_model": str(models / "mnet.keras"),
                         "unet_model": str(models / "unet.keras")},
        "whole_image": {"mnet_model": str(models / "mnet_whole.keras"),
                        "unet_model": str(models / "unet_whole.keras")},
    }


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """A tiny demo cohort (10 images) written by the library, in a folder whose name has
    spaces and non-ASCII letters; shared by the tests."""
    from lumbar_core.phantom import write_demo_cohort

    # Unicode and spaces in the cohort's paths, as site exports often have them.
    folder = tmp_path_factory.mktemp("cohort") / "Kohorte ünï 2024 (export)"
    demo = TINY["demo"]
    return write_demo_cohort(folder, seed=demo["seed"], n_train=demo["n_train"],
                             n_val=demo["n_val"], n_test_per_stratum=demo["n_test_per_stratum"])


@pytest.fixture(scope="session")
def reference_run(tiny_cohort, tmp_path_factory):
    """``snakemake all`` and ``--report`` on the tiny cohort with tiny models, once."""
    workdir = tmp_path_factory.mktemp("run")
    config = write_config(workdir, samples=str(tiny_cohort))
    run_snakemake(workdir, "all", configfile=config)
    run_snakemake(workdir, "--report", "results/report.html", configfile=config)
    return workdir
