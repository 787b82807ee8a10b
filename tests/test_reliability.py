"""Kill and resume, and determinism, on the tiny cohort with the real Snakemake CLI.

A run killed with SIGKILL at several points (a per-image rule, training, sharded
inference) and resumed with ``--rerun-incomplete`` must end with the same Table 1 and
Table 2 as an uninterrupted run. The resumed run retrains every model from scratch in
another process, so the same check also shows that two runs with the same config and seed
give identical tables (TensorFlow op determinism on CPU, seeded bootstrap); a separate
uninterrupted second run would only repeat it.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SNAKEMAKE, run_snakemake, write_config

pytestmark = pytest.mark.workflow

TABLES = ("table1.csv", "table2.csv")


def _tables(workdir):
    return {name: pd.read_csv(Path(workdir) / "results/tables" / name) for name in TABLES}


def _assert_same_tables(a, b):
    ta, tb = _tables(a), _tables(b)
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)


def _start(workdir, config):
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", "--rerun-incomplete", "--nolock", "all"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_when(proc, condition, *, timeout=900):
    """SIGKILL Snakemake and all its jobs as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def test_sigkill_at_three_points_then_resume_gives_the_tables_of_an_uninterrupted_run(reference_run, tiny_cohort,
                                                                    tmp_path):
    config = write_config(tmp_path, samples=str(tiny_cohort))
    n_images = len(pd.read_csv(tiny_cohort, sep="\t"))
    results = tmp_path / "results"

    def during_preprocess():
        done = list((results / "preprocess").glob("*.npz"))
        return 2 <= len(done) < n_images

    def during_training():
        return ((tmp_path / "logs/train_posenet.log").exists()
                and not (results / "models/posenet.keras").exists())

    def during_inference():
        started = sorted((tmp_path / "logs/pose_infer").glob("*.log"))
        if not started:
            return False
        shard = results / "pose_infer" / started[0].stem
        return not shard.exists() or len(list(shard.glob("*.npz"))) < 3

    killed = []
    for name, condition in (("per-image rule", during_preprocess),
                            ("training", during_training),
                            ("sharded inference", during_inference)):
        if _kill_when(_start(tmp_path, config), condition):
            killed.append(name)
    assert killed == ["per-image rule", "training", "sharded inference"]
    # No half-written file may look complete: the resumed run must finish cleanly.
    run_snakemake(tmp_path, "all", configfile=config)
    _assert_same_tables(reference_run, tmp_path)
