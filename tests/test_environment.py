"""Tests of lumbar_core.workflow.environment: the install choice, the CPU switch, model jobs' device
and backend, and the conda environment of each rule."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lumbar_core.workflow.environment import (
    DEVICE_ENV,
    cpu_flags,
    export_device,
    model_job,
    onednn_setting,
)

REPO = Path(__file__).resolve().parents[1]

# /proc/cpuinfo lines of two CPU kinds: an AVX2-only AMD EPYC (Zen 2), on which TensorFlow
# leaves oneDNN off, and an Intel Xeon with AVX-512 VNNI (Cascade Lake), on which it is on.
AVX2_EPYC = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
    "clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm "
    "constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq pni "
    "pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
    "rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch "
    "osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 "
    "rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr "
    "arat npt nrip_save umip rdpid\n"
)
AVX512_VNNI_XEON = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.80GHz\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 "
    "ssse3 fma cx16 sse4_1 sse4_2 popcnt aes xsave avx f16c avx2 bmi1 bmi2 avx512f "
    "avx512dq avx512cd avx512bw avx512vl avx512_vnni arat\n"
)


def _cpuinfo(tmp_path, text, name="cpuinfo"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- oneDNN switch


def test_cpu_flags_reads_the_flags_line(tmp_path):
    flags = cpu_flags(_cpuinfo(tmp_path, AVX2_EPYC))
    assert {"avx2", "fma", "sse4_2"} <= flags and "avx512f" not in flags
    assert "avx512_vnni" in cpu_flags(_cpuinfo(tmp_path, AVX512_VNNI_XEON, "xeon"))
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_onednn_is_turned_on_for_an_avx2_only_cpu(tmp_path):
    flags = cpu_flags(_cpuinfo(tmp_path, AVX2_EPYC))
    assert onednn_setting(flags, {}, machine="x86_64") == "1"


@pytest.mark.parametrize("flag", ["avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni"])
def test_onednn_is_left_to_tensorflow_where_it_turns_it_on_itself(tmp_path, flag):
    flags = cpu_flags(_cpuinfo(tmp_path, AVX512_VNNI_XEON))
    assert onednn_setting(flags, {}, machine="x86_64") is None
    assert onednn_setting({"avx2", "avx512f", flag}, {}, machine="x86_64") is None


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_onednn_leaves_the_users_own_setting_alone(value):
    assert onednn_setting(AVX2_EPYC.split(), {"TF_ENABLE_ONEDNN_OPTS": value},
                          machine="x86_64") is None


def test_onednn_is_left_alone_off_x86_or_without_flags():
    assert onednn_setting("fp asimd sve", {}, machine="aarch64") is None
    assert onednn_setting("avx2 fma", {}, machine="aarch64") is None
    assert onednn_setting("", {}, machine="x86_64") is None


def test_export_device_checks_the_value(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    export_device("gpu")
    assert os.environ[DEVICE_ENV] == "gpu"
    with pytest.raises(ValueError, match="'GPU'"):
        export_device("GPU")


def test_model_job_rejects_a_bad_device():
    with pytest.raises(ValueError, match="device='cuda'"):
        with model_job("train_mnet", threads=1, device="cuda"):
            pass


# ---------------------------------------------------------------- model jobs

# A model job's first lines, as in workflow_scripts/train_*.py: set up, then import Keras.
_JOB = textwrap.dedent("""
    import os, sys
    from lumbar_core.workflow.environment import model_job
    with model_job("train_mnet", threads=1, cpuinfo=sys.argv[1]) as info:
        import keras
        print("keras", keras.backend.backend(), info["device"])
        print("TF_ENABLE_ONEDNN_OPTS", os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
    """)


def _bin_dir(tmp_path, *, fake_gpu):
    """A PATH folder without the machine's tools; with a fake ``nvidia-smi`` if asked."""
    folder = tmp_path / ("bin-gpu" if fake_gpu else "bin")
    if folder.exists():
        return folder
    folder.mkdir()
    os.symlink(sys.executable, folder / "python3")
    if fake_gpu:
        tool = folder / "nvidia-smi"
        tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000)'\n")
        tool.chmod(0o755)
    return folder


def _run_job(tmp_path, device, cpuinfo_text=AVX2_EPYC, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES",
                            "LUMBAR_GPU_SLOTS")}
    environ.update(
        PATH=str(_bin_dir(tmp_path, fake_gpu=False)),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_PLATFORMS="cpu",
        LUMBAR_DEVICE=device,
        **env,
    )
    cpuinfo = _cpuinfo(tmp_path, cpuinfo_text)
    return subprocess.run([sys.executable, "-c", _JOB, str(cpuinfo)], capture_output=True,
                          text=True, env=environ, cwd=tmp_path, timeout=300)


def test_model_job_asked_for_a_gpu_fails_without_one(tmp_path):
    proc = _run_job(tmp_path, "gpu")
    assert proc.returncode != 0
    assert "NoGPUError" in proc.stderr
    assert "rule train_mnet" in proc.stderr and "device: gpu" in proc.stderr
    assert "keras" not in proc.stdout  # the job never got to train


def test_model_job_on_auto_runs_on_the_cpu_and_logs_it(tmp_path):
    proc = _run_job(tmp_path, "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("model job ")]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("model job train_mnet: backend=tensorflow device=cpu slot=None")
    assert "onednn=on" in line and "threads=1" in line and "no GPU found" in line
    assert "keras tensorflow cpu" in proc.stdout
    assert "TF_ENABLE_ONEDNN_OPTS 1" in proc.stdout


def test_model_job_keeps_the_users_onednn_choice_and_tf_default_on_avx512(tmp_path):
    (tmp_path / "own").mkdir()
    own = _run_job(tmp_path / "own", "cpu", TF_ENABLE_ONEDNN_OPTS="0")
    assert own.returncode == 0, own.stderr[-3000:]
    assert "TF_ENABLE_ONEDNN_OPTS 0" in own.stdout and "onednn=off" in own.stderr
    (tmp_path / "xeon").mkdir()
    xeon = _run_job(tmp_path / "xeon", "cpu", cpuinfo_text=AVX512_VNNI_XEON)
    assert xeon.returncode == 0, xeon.stderr[-3000:]
    assert "TF_ENABLE_ONEDNN_OPTS None" in xeon.stdout and "onednn=on" in xeon.stderr


# ---------------------------------------------------------------- make install


def _make_install(tmp_path, *args, fake_gpu):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {"PATH": str(_bin_dir(tmp_path, fake_gpu=fake_gpu)), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [make, "-C", str(REPO), "-n", "install", f"VENV={tmp_path / 'venv'}", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("fake_gpu", "args", "extras"),
    [
        (True, (), "test,slurm,gpu"),
        (False, (), "test,slurm"),
        (True, ("GPU=0",), "test,slurm"),
        (False, ("GPU=1",), "test,slurm,gpu"),
    ],
)
def test_install_picks_the_gpu_extra_where_nvidia_smi_lists_a_gpu(tmp_path, fake_gpu, args,
                                                                 extras):
    out = _make_install(tmp_path, *args, fake_gpu=fake_gpu)
    assert f'pip install --quiet -e ".[{extras}]"' in out, out


def test_install_is_redone_when_the_gpu_choice_changes(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".installed-cpu").touch()  # newer than pyproject.toml
    assert "pip install" not in _make_install(tmp_path, "GPU=0", fake_gpu=False)
    assert ".[test,slurm,gpu]" in _make_install(tmp_path, "GPU=1", fake_gpu=False)


def test_detect_gpu_command(tmp_path):
    for fake_gpu, expected in ((True, "1"), (False, "0")):
        folder = tmp_path / str(fake_gpu)
        folder.mkdir()
        env = {"PATH": str(_bin_dir(folder, fake_gpu=fake_gpu)), "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "lumbar_core.workflow.environment", "--detect-gpu"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == expected


# ---------------------------------------------------------------- rule environments

MODEL_RULES = {
    "train_posenet", "train_posenet_member", "train_mnet", "train_unet", "train_mnet_whole",
    "train_unet_whole", "pose_infer", "mnet_infer", "unet_infer", "mnet_whole_infer", "unet_whole_infer",
}

# Parses the workflow as `snakemake --software-deployment-method conda --config device=...`
# does and prints every rule's conda environment and gpu resource.
_RULE_ENVS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DeploymentMethod, DeploymentSettings,
                                          OutputSettings, ResourceSettings)
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(config={"device": sys.argv[1]}),
            deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
            snakefile=Path("Snakefile"),
        )
        for rule in workflow._workflow.rules:
            print("RULE", rule.name, rule.conda_env, rule.resources.get("gpu").value)
    """)


def _rule_envs(device):
    proc = subprocess.run([sys.executable, "-c", _RULE_ENVS, device], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RULE "):
            _, name, env, gpu = line.split()
            rules[name] = (env, gpu)
    return rules


def test_model_rules_and_only_they_use_the_gpu_environment_with_device_gpu():
    rules = _rule_envs("gpu")
    model = {name for name, (_, gpu) in rules.items() if gpu == "1"}
    assert model == MODEL_RULES
    assert {rules[name][0] for name in MODEL_RULES} == {"../envs/gpu.yaml"}
    others = {env for name, (env, _) in rules.items() if name not in MODEL_RULES}
    assert others == {"../envs/cpu.yaml", "None"}  # `all` and the like have none
    assert "tune_levelset" in rules and rules["tune_levelset"][0] == "../envs/cpu.yaml"


def test_every_rule_uses_the_cpu_environment_with_device_auto():
    envs = {env for env, _ in _rule_envs("auto").values()}
    assert envs == {"../envs/cpu.yaml", "None"}


@pytest.mark.parametrize("profile", ["workstation", "slurm"])
def test_gpu_profiles_set_device_gpu(profile):
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert "device=gpu" in settings["config"]
