"""The SLURM profile, checked on the workflow's DAG and run on a real one-node cluster."""

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
PER_IMAGE_RULES = {"preprocess", "resize", "ground_truth", "train_patches", "select_peaks",
                   "crop", "levelset_refine", "metrics", "morphometry"}
MODEL_RULES = {"train_posenet", "train_posenet_member", "train_mnet", "train_unet",
               "train_mnet_whole", "train_unet_whole", "pose_infer", "mnet_infer", "unet_infer",
               "mnet_whole_infer", "unet_whole_infer"}


def _profile():
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _snakemake(*args, env=None, timeout=120, cwd=None):
    cmd = [sys.executable, "-m", "snakemake", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or os.environ.copy(), cwd=cwd)


def _jobs_of_dry_run(text):
    """(rule, resources dict) of every job a dry run prints."""
    jobs, rule = [], None
    for line in text.splitlines():
        head = re.match(r"\s*(?:local)?rule (\w+):", line)
        if head:
            rule = head.group(1)
        res = re.match(r"\s*resources: (.*)", line)
        if res and rule:
            pairs = (item.split("=", 1) for item in res.group(1).split(", ") if "=" in item)
            jobs.append((rule, dict(pairs)))
            rule = None
    return jobs


def test_profile_groups_and_gpu_requests():
    profile = _profile()
    assert profile["executor"] == "slurm"
    groups = profile["groups"]
    assert set(groups) == PER_IMAGE_RULES
    assert not set(groups) & MODEL_RULES
    assert set(profile["group-components"]) == set(groups.values())
    assert all(n > 1 for n in profile["group-components"].values())
    for rule in MODEL_RULES:
        res = profile["set-resources"][rule]
        assert res["slurm_partition"] == "gpu" and res["gpu"] == 1, rule
    assert profile["default-resources"]["slurm_partition"] == "cpu"


def test_profile_options_the_plugin_manages_stay_out_of_slurm_extra():
    validation = pytest.importorskip("snakemake_executor_plugin_slurm.validation")
    extras = [res["slurm_extra"] for res in _profile()["set-resources"].values()
              if "slurm_extra" in res]
    extras += [_profile()["default-resources"].get("slurm_extra", "")]
    for extra in extras:
        for pattern, option in validation.get_forbidden_slurm_options().items():
            assert not re.search(pattern, extra), (extra, option)


@pytest.mark.workflow
def test_profile_on_the_dag_of_the_real_workflow(tiny_cohort, tmp_path):
    out = _snakemake("--workflow-profile", PROFILE, "-s", REPO / "Snakefile",
                     "--directory", tmp_path, "-n", "all",
                     "--config", f"samples={tiny_cohort}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = _jobs_of_dry_run(out.stdout)
    assert jobs
    for rule, res in jobs:
        if res.get("gpu") == "1":
            assert res["slurm_partition"] == "gpu", (rule, res)
        if rule in PER_IMAGE_RULES:
            assert res["slurm_partition"] == "cpu", (rule, res)
    # 10 images and 50 components per group job: one group job per group present.
    group_jobs = re.findall(r"Group job (\w+)", out.stdout)
    assert sorted(group_jobs) == sorted(set(group_jobs))
    assert {"prepare", "localize", "refine"} <= set(group_jobs)


@pytest.mark.slurm
def test_gpu_job_keeps_the_device_slurm_assigns(slurm_cluster, tmp_path):  # noqa: F811
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from lumbar_core.workflow.gpu import gpu_slot
        with gpu_slot(4, lock_dir={str(tmp_path / "locks")!r}) as slot:
            print(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
        """
    ))
    results = {}
    for name, extra in (("gpu", ["-p", "gpu", "--gpus=1"]), ("cpu", ["-p", "cpu"])):
        out = tmp_path / f"{name}.out"
        env = {k: v for k, v in slurm_cluster.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        done = subprocess.run(
            ["sbatch", "--wait", *extra, "-o", str(out), "--wrap",
             f"{sys.executable} {probe}"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        results[name] = out.read_text().split()
    assert results["gpu"] == ["None", "0"]  # SLURM chose GPU 0: no slot claimed
    assert results["cpu"] == ["0", "0"]  # no scheduler choice: slot 0 of 4 claimed


@pytest.mark.slurm
def test_workflow_through_preprocessing_runs_grouped_on_slurm(slurm_cluster, tmp_path):  # noqa: F811
    from lumbar_core.phantom import write_demo_cohort

    sheet = write_demo_cohort(tmp_path / "cohort", seed=0, n_train=2, n_val=1,
                              n_test_per_stratum=1)
    ids = [line.split("\t")[0] for line in Path(sheet).read_text().splitlines()[1:] if line]
    workdir = tmp_path / "run"
    before = set(slurm_cluster.submitted_job_ids())
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", str(PROFILE),
           "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "preprocess_all",
           "--slurm-no-account", "--slurm-status-command", "squeue",
           "--slurm-init-seconds-before-status-checks", "2",
           # the test node is small: at most its CPUs per cluster job
           "--cores", str(slurm_cluster.cpus),
           "--config", f"samples={sheet}"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=slurm_cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"snakemake on SLURM timed out:\n{log[-4000:]}")
    wall = time.monotonic() - start
    assert proc.returncode == 0, log[-6000:]

    for image_id in ids:
        assert (workdir / "results/resize" / f"{image_id}.npz").stat().st_size > 0
        assert (workdir / "results/ground_truth" / f"{image_id}.json").exists()
    cluster_jobs = sorted(set(slurm_cluster.submitted_job_ids()) - before)
    rule_jobs = 3 * len(ids)  # preprocess (Io), resize (I) and ground_truth per image
    n_groups = math.ceil(len(ids) / _profile()["group-components"]["prepare"])
    print(f"\n{len(ids)} images, {rule_jobs} rule jobs -> {len(cluster_jobs)} SLURM "
          f"job(s) in {wall:.0f} s")
    assert len(cluster_jobs) == n_groups == 1
    assert f"has been submitted with SLURM jobid {cluster_jobs[0]}" in log
