"""One GPU per concurrent model job.

Snakemake only *counts* a ``gpu`` resource: with ``--resources gpu=4`` it runs at most
four model jobs at once, but it does not tell a job which device to use, so every job
would land on GPU 0. :func:`gpu_slot` closes that gap on a local multi-GPU machine: each
job claims a free *slot* ``k`` in ``0..n_slots-1`` through an exclusive, non-blocking
``fcntl.flock`` on ``<lock_dir>/slot-<k>.lock`` and sets ``CUDA_VISIBLE_DEVICES=k``
before any deep-learning framework is imported. The kernel releases the lock when the
holding process ends, however it ends (``kill -9`` included), so a crashed job never
leaves a stale slot behind.

The number of slots is the ``gpu`` value the workflow was given (``--resources gpu=K``).
Snakemake knows it as ``workflow.global_resources["gpu"].value`` (``Resources.get``
returns a ``Resource`` object, whose ``.value`` is ``K``, or ``None`` when no ``gpu``
limit was given). The workflow hands it to the jobs through the environment variable
``LUMBAR_GPU_SLOTS`` (set in ``rules/common.smk``; unlike ``params`` it never triggers a
rerun when ``K`` changes), and the script of a model rule claims a slot in its first
lines, before Keras is imported::

    from lumbar_core.workflow.gpu import claim_gpu_for_job

    with claim_gpu_for_job():
        import keras
        ...

A rule may pass ``K`` through ``params: gpu_slots=workflow.global_resources.get("gpu").value``
instead and call ``claim_gpu_for_job(snakemake)``. Without any ``K``, :func:`gpu_slot`
counts the GPUs with ``nvidia-smi -L``.

On a cluster the scheduler assigns the device itself (SLURM sets
``CUDA_VISIBLE_DEVICES`` for ``--gpus=1`` / ``--gres=gpu:1`` jobs); :func:`gpu_slot` then
leaves it alone and claims nothing. On a CPU-only machine (zero slots) it changes
nothing either.

TensorFlow must not reserve the memory of the whole device: :func:`gpu_slot` sets
``TF_FORCE_GPU_ALLOW_GROWTH=true`` (and ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` for the
JAX backend of Keras) unless they are already set, and
:func:`configure_tensorflow_memory_growth` does the same through the TensorFlow API for
code that imported TensorFlow already.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "SLOTS_VARIABLE",
    "gpu_slot",
    "claim_gpu_for_job",
    "detect_gpu_count",
    "configure_tensorflow_memory_growth",
]

#: Environment variable through which the workflow passes ``--resources gpu=K`` to jobs.
SLOTS_VARIABLE = "LUMBAR_GPU_SLOTS"
_VISIBLE = "CUDA_VISIBLE_DEVICES"
#: Environment variable through which the workflow passes ``K`` of ``--resources gpu=K``
#: to its jobs (set in rules/common.smk). Not a rule param: a param that changes with the
#: machine would make Snakemake rerun every model rule.
SLOTS_ENV = "LUMBAR_GPU_SLOTS"
# Environment defaults that keep one job from reserving a whole device's memory; an
# explicit setting of the user wins.
_MEMORY_DEFAULTS = {
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
}


def detect_gpu_count() -> int:
    """Number of NVIDIA GPUs that ``nvidia-smi -L`` lists; 0 without the tool."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        listing = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def _slot_count(n_slots) -> int | None:
    """Plain ``int`` (or ``None``) from an int, ``None`` or a Snakemake ``Resource``."""
    if n_slots is not None and not isinstance(n_slots, int) and hasattr(n_slots, "value"):
        n_slots = n_slots.value
    if n_slots is None:
        return None
    if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 0:
        raise ValueError(
            f"n_slots must be a non-negative integer or None. Received: n_slots={n_slots!r}"
        )
    return n_slots


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take an exclusive non-blocking flock; the fd, or None if busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def _claim(n_slots: int, lock_dir: Path, timeout: float | None, poll_interval: float):
    """Poll slots 0..n_slots-1 until one is free; ``(slot, fd)``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for slot in range(n_slots):
            fd = _try_lock(lock_dir / f"slot-{slot}.lock")
            if fd is not None:
                return slot, fd
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"all {n_slots} GPU slots in {str(lock_dir)!r} stayed busy for {timeout} s"
            )
        wait = poll_interval
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        time.sleep(wait)


@contextmanager
def gpu_slot(
    n_slots: int | None = None,
    *,
    lock_dir: str | os.PathLike = ".snakemake/gpu-slots",
    timeout: float | None = None,
    poll_interval: float = 0.5,
):
    """Claim one of ``n_slots`` GPUs for the life of a ``with`` block.

    Parameters
    ----------
    n_slots : int or None, optional
        Number of GPUs that concurrent jobs share, normally the ``K`` of
        ``--resources gpu=K``. A Snakemake ``Resource`` is accepted as well (its
        ``.value`` is used). ``None`` (default) counts the GPUs with ``nvidia-smi -L``
        (0 when the tool is missing). 0 means a CPU-only machine.
    lock_dir : str or path-like, optional
        Folder of the lock files ``slot-<k>.lock``, created if missing. Relative paths
        are relative to the working directory, i.e. the Snakemake working directory for
        a workflow script. Default ``".snakemake/gpu-slots"``. All jobs that share the
        GPUs must use the same folder on a local file system (flock).
    timeout : float or None, optional
        Seconds to wait for a free slot when all are busy; ``None`` (default) waits
        forever, 0 tries each slot once.
    poll_interval : float, optional
        Seconds between two rounds of tries while all slots are busy. Default 0.5.

    Yields
    ------
    slot : int or None
        The slot ``k`` claimed, also written to ``CUDA_VISIBLE_DEVICES``, or ``None``
        when nothing was claimed (``CUDA_VISIBLE_DEVICES`` set already, or no GPU).

    Raises
    ------
    ValueError
        If ``n_slots`` is negative or not an integer, or ``timeout`` or
        ``poll_interval`` is negative.
    TimeoutError
        If no slot became free within ``timeout`` seconds.

    Notes
    -----
    Enter the block before TensorFlow, JAX or PyTorch is imported: CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once, when the framework initialises.

    - If ``CUDA_VISIBLE_DEVICES`` is already in the environment (even empty), a
      scheduler or the user has chosen the devices: it is respected and no slot is
      claimed. SLURM sets it for jobs that requested GPUs.
    - With zero slots (no GPU) the environment is left as it is: the framework finds no
      GPU and runs on the CPU.
    - ``TF_FORCE_GPU_ALLOW_GROWTH=true`` and ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
      are set unless already set, so that a job takes GPU memory as it needs it.
    - The lock is an ``fcntl.flock`` on an open file, released by the kernel when the
      process exits, also on ``SIGKILL``. The holder's pid is written into the lock file
      for people who look. The environment variables are restored on exit.

    Examples
    --------
    >>> import os, tempfile
    >>> _ = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with gpu_slot(2, lock_dir=tmp) as slot:
    ...         print(slot, os.environ["CUDA_VISIBLE_DEVICES"])
    0 0
    """
    n_slots = _slot_count(n_slots)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None. Received: timeout={timeout!r}")
    if poll_interval < 0:
        raise ValueError(
            f"poll_interval must be >= 0. Received: poll_interval={poll_interval!r}"
        )
    saved = {key: os.environ.get(key) for key in (_VISIBLE, *_MEMORY_DEFAULTS)}
    for key, value in _MEMORY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    fd = None
    try:
        if _VISIBLE in os.environ:
            # Devices chosen by the scheduler (SLURM --gpus/--gres) or the user: claim nothing.
            yield None
            return
        if n_slots is None:
            n_slots = detect_gpu_count()
        if n_slots == 0:
            # CPU-only machine: leave CUDA_VISIBLE_DEVICES unset, nothing to share.
            yield None
            return
        lock_dir = Path(lock_dir)
        lock_dir.mkdir(parents=True, exist_ok=True)
        slot, fd = _claim(n_slots, lock_dir, timeout, poll_interval)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.environ[_VISIBLE] = str(slot)
        yield slot
    finally:
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def claim_gpu_for_job(snakemake_or_n_slots=None, **kwargs):
    """:func:`gpu_slot` for a workflow script, with the slot count the workflow knows.

    Parameters
    ----------
    snakemake_or_n_slots : object, int or None, optional
        A slot count as :func:`gpu_slot` takes it, or the ``snakemake`` object of a
        script, whose ``params.gpu_slots`` is used when present. ``None`` (default), or
        a ``snakemake`` object without ``params.gpu_slots``: the integer in the
        environment variable ``LUMBAR_GPU_SLOTS`` if set, else ``None`` (count the GPUs).
    **kwargs
        Keyword options of :func:`gpu_slot` (``lock_dir``, ``timeout``,
        ``poll_interval``).

    Returns
    -------
    context manager
        ``gpu_slot(n_slots, **kwargs)``; use it in a ``with`` statement before
        importing Keras.

    Raises
    ------
    ValueError
        If ``LUMBAR_GPU_SLOTS`` is needed and is not a non-negative integer.

    Examples
    --------
    In a workflow script::

        with claim_gpu_for_job():
            import keras
    """
    n_slots = snakemake_or_n_slots
    params = getattr(snakemake_or_n_slots, "params", None)
    if params is not None:
        n_slots = getattr(params, "gpu_slots", None)
    if n_slots is None and os.environ.get(SLOTS_VARIABLE, "").strip():
        raw = os.environ[SLOTS_VARIABLE].strip()
        try:
            n_slots = int(raw)
        except ValueError:
            raise ValueError(
                f"{SLOTS_VARIABLE} must be a non-negative integer. Received: {raw!r}"
            ) from None
    return gpu_slot(n_slots, **kwargs)


def configure_tensorflow_memory_growth() -> None:
    """Let TensorFlow take GPU memory as needed instead of reserving it all.

    Calls ``tf.config.experimental.set_memory_growth(gpu, True)`` on every visible GPU.
    Does nothing when TensorFlow is not installed or sees no GPU.

    Notes
    -----
    This imports TensorFlow. Memory growth can only be set before the GPUs are
    initialised; if they are already, a ``RuntimeWarning`` says so (the environment
    variable ``TF_FORCE_GPU_ALLOW_GROWTH`` that :func:`gpu_slot` sets has the same effect
    and applies from the start).
    """
    if importlib.util.find_spec("tensorflow") is None:
        return
    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError as err:
            warnings.warn(
                f"memory growth not set on {device.name}: {err}", RuntimeWarning, stacklevel=2
            )
