"""What the workflow passes to its jobs through the environment, and how a model job starts.

Kept out of the Snakefile so that the rules only wire: these values are not
configuration (they describe where the code lives and what the machine has), and as rule
params they would make Snakemake rerun jobs whenever they change.

Backends (measured, see ``docs/backends.md``):

- **CPU**: TensorFlow with its oneDNN kernels. TensorFlow turns oneDNN on by itself only
  on x86 CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX; on the others (AVX2-only CPUs,
  most AMD EPYC/Ryzen before Zen 4, older Xeons) it leaves it off, and a training step
  takes about twice as long. :func:`onednn_setting` turns it on there, unless the user
  set ``TF_ENABLE_ONEDNN_OPTS`` (either way) themselves.
- **NVIDIA GPU**: Keras on JAX (the ``gpu`` extra of the package, ``envs/gpu.yaml``).
  :func:`model_job` sets ``KERAS_BACKEND=jax`` when it finds a JAX that sees a GPU,
  and only then, unless the user set ``KERAS_BACKEND``.

Every model job (training, inference, level-set tuning) enters :func:`model_job`
before Keras is imported; it claims a GPU slot (:mod:`lumbar_core.workflow.gpu`), picks the
backend, checks the ``device`` setting against what it found and writes one line to the
job's log: backend, device, slot, oneDNN, threads.

Run as ``python -m lumbar_core.workflow.environment --detect-gpu``, it prints ``1`` when
``nvidia-smi -L`` lists a GPU and ``0`` otherwise (the Makefile's install choice).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path

from .gpu import SLOTS_ENV, detect_gpu_count, claim_gpu_for_job

__all__ = [
    "DEVICES",
    "DEVICE_ENV",
    "export_library_path",
    "export_gpu_slots",
    "export_device",
    "limit_framework_threads",
    "cpu_flags",
    "onednn_setting",
    "model_job",
    "NoGPUError",
]

#: TensorFlow's intra-op pool (the threads of one convolution or matrix product).
_TF_THREADS = "TF_NUM_INTRAOP_THREADS"
#: TensorFlow's switch of its oneDNN CPU kernels ("1" on, "0" off, unset: TF decides).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
#: Keras' backend variable.
BACKEND_ENV = "KERAS_BACKEND"
#: Environment variable through which the workflow passes the ``device`` setting to jobs.
DEVICE_ENV = "LUMBAR_DEVICE"
#: Values of the ``device`` setting.
DEVICES = ("auto", "cpu", "gpu")
#: CPU flags with which TensorFlow turns oneDNN on by itself (its ``IsMklEnabled``
#: default on x86: AVX-512 VNNI, AVX-512 BF16, AVX-VNNI or AMX).
_ONEDNN_DEFAULT_FLAGS = frozenset(
    {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}
)
_X86 = {"x86_64", "amd64", "i386", "i686"}


class NoGPUError(RuntimeError):
    """A model job was asked to run on a GPU (``device: gpu``) and found none."""


def export_library_path(path) -> None:
    """Put ``path`` (the workflow's folder) first on ``PYTHONPATH`` for every job.

    Jobs then import ``lumbar_core`` from the workflow itself, also in conda environments
    where the package is not installed.
    """
    parts = [str(path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))


def export_gpu_slots(n_slots) -> None:
    """Tell the jobs how many GPUs the run was given (``--resources gpu=K``).

    ``n_slots`` is an int or a Snakemake ``Resource`` (its ``.value``); ``None`` leaves
    the count to :func:`lumbar_core.workflow.gpu.gpu_slot`'s own detection.
    """
    value = getattr(n_slots, "value", n_slots)
    if value is not None:
        os.environ[SLOTS_ENV] = str(int(value))


def limit_framework_threads(threads) -> None:
    """Size TensorFlow's CPU thread pool to the ``threads`` a job was given.

    Snakemake counts a job's ``threads`` against ``--cores`` and sets ``OMP_NUM_THREADS``
    and the BLAS variables to it, but TensorFlow reads none of these: it starts one
    intra-op thread per core of the machine. A model job declared with one thread would
    then compete for every core with the jobs Snakemake runs beside it. This sets
    ``TF_NUM_INTRAOP_THREADS`` to ``threads`` unless the user set it; call it in a job
    before TensorFlow is imported (it is read once, when TensorFlow starts).

    Parameters
    ----------
    threads : int
        The job's threads (``snakemake.threads`` in a workflow script), >= 1.

    Raises
    ------
    ValueError
        If ``threads`` is not an integer >= 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1. Received: threads={threads!r}")
    os.environ.setdefault(_TF_THREADS, str(threads))


def export_device(device) -> None:
    """Tell the model jobs the ``device`` setting of the run (``auto``, ``cpu`` or ``gpu``).

    Passed through the environment variable ``LUMBAR_DEVICE`` rather than a rule param,
    so that moving a run between machines does not make Snakemake retrain its models.

    Raises
    ------
    ValueError
        If ``device`` is not one of ``auto``, ``cpu``, ``gpu``.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}. Received: device={device!r}")
    os.environ[DEVICE_ENV] = device


def cpu_flags(cpuinfo="/proc/cpuinfo") -> frozenset:
    r"""The flags of the first CPU in ``cpuinfo`` (Linux); empty where there is no such file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "cpuinfo"
    ...     _ = path.write_text("processor : 0\nflags\t\t: fpu sse2 avx2 fma\n")
    ...     sorted(cpu_flags(path))
    ['avx2', 'fma', 'fpu', 'sse2']
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def onednn_setting(flags, environ, *, machine=None) -> str | None:
    """The value to give ``TF_ENABLE_ONEDNN_OPTS`` on this CPU, or None to leave it alone.

    TensorFlow (2.9 and later) enables its oneDNN kernels by itself only on x86 CPUs with
    AVX-512 VNNI/BF16, AVX-VNNI or AMX. On other x86 CPUs they are off, and the networks
    of this project train about twice as slowly (measured on an AVX2-only AMD EPYC:
    U-net step 1.24 s off against 0.60 s on). This returns ``"1"`` on such CPUs.

    Parameters
    ----------
    flags : iterable of str
        CPU flags as ``/proc/cpuinfo`` lists them (see :func:`cpu_flags`); a
        whitespace-separated string is accepted too.
    environ : mapping
        The job's environment; a ``TF_ENABLE_ONEDNN_OPTS`` in it is the user's own
        choice and is left alone.
    machine : str, optional
        ``platform.machine()`` of the CPU (default: this machine's). Non-x86 CPUs
        (aarch64: TensorFlow decides there) are left alone.

    Returns
    -------
    str or None
        ``"1"`` to turn oneDNN on; ``None``: nothing to set (the user chose, TensorFlow
        turns it on by itself, the flags are unknown, or the CPU is not x86).

    Examples
    --------
    >>> onednn_setting("fpu sse4_2 avx avx2 fma", {}, machine="x86_64")
    '1'
    >>> onednn_setting("avx2 avx512f avx512_vnni", {}, machine="x86_64") is None
    True
    >>> onednn_setting("avx2", {"TF_ENABLE_ONEDNN_OPTS": "0"}, machine="x86_64") is None
    True
    """
    if isinstance(flags, str):
        flags = flags.split()
    flags = frozenset(flags)
    machine = (platform.machine() if machine is None else machine).lower()
    if ONEDNN_ENV in environ or machine not in _X86 or not flags:
        return None
    if flags & _ONEDNN_DEFAULT_FLAGS:
        return None
    return "1"


def _onednn_state(environ, flags, machine) -> str:
    """``on``/``off`` as TensorFlow will see it, from the variable or its default rule."""
    value = environ.get(ONEDNN_ENV)
    if value is not None:
        return "on" if value.strip().lower() in ("1", "true") else "off"
    if machine.lower() in _X86:
        return "on" if flags & _ONEDNN_DEFAULT_FLAGS else "off"
    return "default"


def _jax_sees_gpu() -> bool:
    """Whether JAX is installed and its default backend is a GPU (imports JAX, not Keras)."""
    if importlib.util.find_spec("jax") is None:
        return False
    try:
        import jax

        return jax.default_backend() == "gpu"
    except Exception:  # a broken CUDA plugin: JAX is no GPU backend here
        return False


def _backend_devices(backend: str) -> list[str]:
    """Names of the GPUs the Keras backend computes on (empty: the CPU). Imports it."""
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    return []


@contextmanager
def model_job(rule: str, *, threads: int, device: str | None = None, log=None,
              cpuinfo="/proc/cpuinfo"):
    """Set up a model job (training or inference) before Keras is imported.

    In order: size TensorFlow's thread pool (:func:`limit_framework_threads`); turn
    oneDNN on where TensorFlow leaves it off (:func:`onednn_setting`); with ``device``
    ``auto`` or ``gpu`` claim a GPU slot (:func:`lumbar_core.workflow.gpu.claim_gpu_for_job`),
    with ``cpu`` hide the GPUs (``CUDA_VISIBLE_DEVICES=""``); choose Keras' backend
    (JAX when it sees a GPU, unless ``KERAS_BACKEND`` is set); import Keras and check
    the device; write one line to ``log``::

        model job train_mnet: backend=jax device=gpu (NVIDIA H200) slot=0 onednn=off threads=2 setting=gpu

    Parameters
    ----------
    rule : str
        The rule's name (``snakemake.rule``), named in the log line and in errors.
    threads : int
        The job's threads (``snakemake.threads``), >= 1.
    device : {"auto", "cpu", "gpu"}, optional
        The run's ``device`` setting; default: the environment variable
        ``LUMBAR_DEVICE`` (set by the workflow from the config), else ``"auto"``.
    log : file-like, optional
        Where the line goes (default ``sys.stderr``).
    cpuinfo : path-like, optional
        The CPU description read for the oneDNN choice. Default ``/proc/cpuinfo``.

    Yields
    ------
    info : dict
        ``backend``, ``device`` (``"gpu"`` or ``"cpu"``), ``gpus`` (names), ``slot``
        (int or None), ``onednn`` (``on``, ``off`` or ``default``).

    Raises
    ------
    ValueError
        If ``device`` or ``threads`` is invalid.
    NoGPUError
        If ``device`` is ``gpu`` and the backend sees no GPU; the message names the rule
        and the setting.
    """
    device = os.environ.get(DEVICE_ENV, "auto") if device is None else device
    if device not in DEVICES:
        raise ValueError(
            f"device must be one of {DEVICES} (config key `device`, environment variable "
            f"{DEVICE_ENV}). Received: device={device!r}"
        )
    log = sys.stderr if log is None else log
    limit_framework_threads(threads)
    flags = cpu_flags(cpuinfo)
    machine = platform.machine()
    value = onednn_setting(flags, os.environ, machine=machine)
    if value is not None:
        os.environ[ONEDNN_ENV] = value
    saved_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        claim = _no_claim()
    else:
        claim = claim_gpu_for_job()
    try:
        with claim as slot:
            gpu_plausible = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or (
                "CUDA_VISIBLE_DEVICES" not in os.environ and detect_gpu_count() > 0
            )
            if BACKEND_ENV not in os.environ and (
                (device != "cpu" and gpu_plausible and _jax_sees_gpu())
                # the GPU environment has JAX and no TensorFlow
                or (importlib.util.find_spec("tensorflow") is None
                    and importlib.util.find_spec("jax") is not None)
            ):
                os.environ[BACKEND_ENV] = "jax"
            import keras

            backend = keras.backend.backend()
            gpus = [] if device == "cpu" else _backend_devices(backend)
            used = "gpu" if gpus else "cpu"
            if device == "gpu" and not gpus:
                raise NoGPUError(
                    f"rule {rule}: the run asks for a GPU (config `device: gpu`), but "
                    f"Keras' {backend} backend sees none (CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, GPUs listed by nvidia-smi: "
                    f"{detect_gpu_count()}). Install the GPU build (`make install GPU=1`, "
                    f"or `--software-deployment-method conda` with envs/gpu.yaml) on a "
                    f"machine with an NVIDIA GPU, or set `device: auto` or `device: cpu`."
                )
            info = {
                "backend": backend,
                "device": used,
                "gpus": gpus,
                "slot": slot,
                "onednn": (_onednn_state(os.environ, flags, machine)
                           if backend == "tensorflow" else "n/a"),
            }
            where = f"gpu ({', '.join(gpus)})" if gpus else "cpu"
            note = " (no GPU found, running on the CPU)" if device == "auto" and not gpus else ""
            print(
                f"model job {rule}: backend={backend} device={where} slot={slot} "
                f"onednn={info['onednn']} threads={os.environ.get(_TF_THREADS)} "
                f"setting={device}{note}",
                file=log,
                flush=True,
            )
            yield info
    finally:
        if device == "cpu":
            if saved_visible is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved_visible


@contextmanager
def _no_claim():
    yield None


def main(argv=None) -> int:
    """Command line: ``--detect-gpu`` prints 1 if ``nvidia-smi -L`` lists a GPU, else 0."""
    parser = argparse.ArgumentParser(
        prog="python -m lumbar_core.workflow.environment",
        description="What this machine offers the workflow's model jobs.",
    )
    parser.add_argument("--detect-gpu", action="store_true",
                        help="print 1 if nvidia-smi lists an NVIDIA GPU, else 0")
    parser.add_argument("--onednn", action="store_true",
                        help="print the TF_ENABLE_ONEDNN_OPTS value model jobs set here "
                             "(empty: left to TensorFlow or the user)")
    args = parser.parse_args(argv)
    if not (args.detect_gpu or args.onednn):
        parser.error("give --detect-gpu or --onednn")
    if args.detect_gpu:
        print(1 if detect_gpu_count() > 0 else 0)
    if args.onednn:
        print(onednn_setting(cpu_flags(), os.environ) or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
