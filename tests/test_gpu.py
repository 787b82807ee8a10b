"""Tests of lumbar_core.workflow.gpu: one GPU slot per concurrent job, on a CPU-only machine."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from lumbar_core.workflow import gpu
from lumbar_core.workflow.gpu import claim_gpu_for_job, configure_tensorflow_memory_growth, gpu_slot

REPO = Path(__file__).resolve().parents[1]

_HOLDER = textwrap.dedent(
    """
    import json, os, sys, time
    from lumbar_core.workflow.gpu import gpu_slot

    lock_dir, n_slots, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with gpu_slot(n_slots, lock_dir=lock_dir, poll_interval=0.01) as slot:
        start = time.monotonic()
        print(json.dumps({"pid": os.getpid(), "slot": slot,
                          "visible": os.environ["CUDA_VISIBLE_DEVICES"]}), flush=True)
        time.sleep(hold)
        end = time.monotonic()
    print(json.dumps({"start": start, "end": end}), flush=True)
    """
)


@pytest.fixture
def clean_env(monkeypatch):
    """No device chosen beforehand and no GPU tool on PATH."""
    for key in ("CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH",
                "XLA_PYTHON_CLIENT_PREALLOCATE", "LUMBAR_GPU_SLOTS"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _holder(lock_dir, n_slots, hold):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_dir), str(n_slots), str(hold)],
        stdout=subprocess.PIPE, text=True, env=env,
    )


def _fake_nvidia_smi(tmp_path, monkeypatch, n_gpus):
    """Put an ``nvidia-smi`` on PATH that lists ``n_gpus`` GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    lines = "".join(f"echo 'GPU {k}: Fake GPU (UUID: GPU-{k})'\n" for k in range(n_gpus))
    tool.write_text("#!/bin/sh\n" + lines)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_six_processes_never_share_one_of_two_slots(tmp_path):
    procs = [_holder(tmp_path, 2, 0.3) for _ in range(6)]
    records = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        claim, span = (json.loads(line) for line in out.splitlines())
        records.append({**claim, **span})
    assert {r["slot"] for r in records} == {0, 1}
    for r in records:
        assert r["visible"] == str(r["slot"])
    for slot in (0, 1):
        spans = sorted((r["start"], r["end"]) for r in records if r["slot"] == slot)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end  # the next holder starts after the previous one left


def test_sigkill_frees_the_slot(tmp_path, clean_env):
    holder = _holder(tmp_path, 1, 60)
    try:
        claim = json.loads(holder.stdout.readline())
        assert claim["slot"] == 0
        assert (tmp_path / "slot-0.lock").read_text().strip() == str(claim["pid"])
        with pytest.raises(TimeoutError):
            with gpu_slot(1, lock_dir=tmp_path, timeout=0):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with gpu_slot(1, lock_dir=tmp_path, timeout=10) as slot:
        assert slot == 0


def test_sets_and_restores_the_environment(tmp_path, clean_env):
    with gpu_slot(3, lock_dir=tmp_path / "locks") as slot:
        assert slot == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
        assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert (tmp_path / "locks" / "slot-0.lock").read_text().strip() == str(os.getpid())
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ


def test_busy_slots_are_skipped(tmp_path, clean_env):
    with open(tmp_path / "slot-0.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with gpu_slot(2, lock_dir=tmp_path, timeout=0) as slot:
            assert slot == 1
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_timeout_when_all_slots_stay_busy(tmp_path, clean_env):
    with open(tmp_path / "slot-0.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TimeoutError, match="1 GPU slots"):
            with gpu_slot(1, lock_dir=tmp_path, timeout=0.1, poll_interval=0.02):
                pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


@pytest.mark.parametrize("preset", ["3", "0,1", ""])
def test_preset_devices_are_respected(tmp_path, clean_env, preset):
    clean_env.setenv("CUDA_VISIBLE_DEVICES", preset)
    with gpu_slot(2, lock_dir=tmp_path / "locks") as slot:
        assert slot is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == preset
        assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert not (tmp_path / "locks").exists()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == preset


def test_user_memory_setting_wins(tmp_path, clean_env):
    clean_env.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    with gpu_slot(1, lock_dir=tmp_path):
        assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "false"


def test_zero_slots_change_nothing(tmp_path, clean_env):
    with gpu_slot(0, lock_dir=tmp_path / "locks") as slot:
        assert slot is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "locks").exists()


@pytest.mark.parametrize("n_gpus, expected", [(0, None), (1, None), (2, 1)])
def test_slot_count_detected_with_nvidia_smi(tmp_path, clean_env, n_gpus, expected):
    # slot 0 is busy: one detected GPU means nothing free, two mean slot 1.
    _fake_nvidia_smi(tmp_path, clean_env, n_gpus)
    locks = tmp_path / "locks"
    locks.mkdir()
    with open(locks / "slot-0.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if n_gpus == 1:
            with pytest.raises(TimeoutError):
                with gpu_slot(lock_dir=locks, timeout=0):
                    pass
        else:
            with gpu_slot(lock_dir=locks, timeout=0) as slot:
                assert slot == expected


def test_no_nvidia_smi_means_no_gpu(tmp_path, clean_env):
    clean_env.setattr(gpu.shutil, "which", lambda name: None)
    with gpu_slot(lock_dir=tmp_path / "locks") as slot:
        assert slot is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_snakemake_resource_is_accepted(tmp_path, clean_env):
    resources = pytest.importorskip("snakemake.resources")
    with gpu_slot(resources.Resource("gpu", 2), lock_dir=tmp_path) as slot:
        assert slot == 0
    with gpu_slot(resources.Resource("", 0), lock_dir=tmp_path) as slot:
        assert slot is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_invalid_slot_count(bad):
    with pytest.raises(ValueError, match="n_slots"):
        with gpu_slot(bad):
            pass


@pytest.mark.parametrize("option", ["timeout", "poll_interval"])
def test_negative_times_rejected(option):
    with pytest.raises(ValueError, match=option):
        with gpu_slot(1, **{option: -1}):
            pass


def test_claim_gpu_for_job_reads_the_params(tmp_path, clean_env):
    job = SimpleNamespace(params=SimpleNamespace(gpu_slots=2))
    with claim_gpu_for_job(job, lock_dir=tmp_path) as slot:
        assert slot == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    with claim_gpu_for_job(3, lock_dir=tmp_path) as slot:
        assert slot == 0
    clean_env.setattr(gpu.shutil, "which", lambda name: None)
    with claim_gpu_for_job(SimpleNamespace(params=SimpleNamespace()),
                           lock_dir=tmp_path) as slot:
        assert slot is None


def test_claim_gpu_for_job_reads_the_workflow_variable(tmp_path, clean_env):
    clean_env.setenv("LUMBAR_GPU_SLOTS", "2")
    with open(tmp_path / "slot-0.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with claim_gpu_for_job(lock_dir=tmp_path, timeout=0) as slot:
            assert slot == 1
        with pytest.raises(TimeoutError):  # an explicit count wins over the variable
            with claim_gpu_for_job(1, lock_dir=tmp_path, timeout=0):
                pass
    clean_env.setenv("LUMBAR_GPU_SLOTS", "0")
    with claim_gpu_for_job(lock_dir=tmp_path) as slot:
        assert slot is None


def test_claim_gpu_for_job_rejects_a_bad_variable(clean_env):
    clean_env.setenv("LUMBAR_GPU_SLOTS", "four")
    with pytest.raises(ValueError, match="LUMBAR_GPU_SLOTS"):
        claim_gpu_for_job()


def test_memory_growth_without_tensorflow_is_a_no_op(clean_env):
    real = gpu.importlib.util.find_spec
    clean_env.setattr(gpu.importlib.util, "find_spec",
                      lambda name: None if name == "tensorflow" else real(name))
    clean_env.delitem(sys.modules, "tensorflow", raising=False)
    assert configure_tensorflow_memory_growth() is None
    assert "tensorflow" not in sys.modules


def test_memory_growth_on_a_cpu_only_tensorflow():
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible; this case is about CPU-only machines")
    assert configure_tensorflow_memory_growth() is None


def test_limit_framework_threads_sizes_tensorflow_pool_unless_the_user_did(monkeypatch):
    from lumbar_core.workflow.environment import limit_framework_threads

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    limit_framework_threads(1)
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "6")
    limit_framework_threads(2)
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "6"
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            limit_framework_threads(bad)


def test_every_model_script_sizes_tensorflow_to_its_threads_before_keras():
    """A model job keeps to the cores Snakemake counted for it (TF ignores OMP_NUM_THREADS):
    every model script enters lumbar_core.workflow.environment.model_job, which calls
    limit_framework_threads, with its threads before it imports the models."""
    import re

    # The scripts of the rules that load a model: those that claim a GPU, and tune_levelset.
    model_scripts = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            script = re.search(r'script:\s*"\.\./(workflow_scripts/\w+\.py)"', block)
            if script and ("gpu=1" in block or block.startswith("rule tune_levelset:")):
                model_scripts.add(REPO / script.group(1))
    assert len(model_scripts) >= 7
    for path in sorted(model_scripts):
        text = path.read_text()
        call = text.find("with model_job(snakemake.rule, threads=snakemake.threads")
        assert call != -1, f"{path.name} does not set up its model job (threads, device)"
        step = text.find("from lumbar_core.steps import")
        assert step != -1 and call < step, f"{path.name} imports the models first"
