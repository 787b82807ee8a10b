"""What the workflow passes to its jobs through the environment.

Kept out of the Snakefile so that the rules only wire: these values are not
configuration (they describe where the code lives and what the machine has), and as rule
params they would make Snakemake rerun jobs whenever they change.
"""

from __future__ import annotations

import os

from .gpu import SLOTS_ENV

__all__ = ["export_library_path", "export_gpu_slots", "limit_framework_threads"]

#: TensorFlow's intra-op pool (the threads of one convolution or matrix product).
_TF_THREADS = "TF_NUM_INTRAOP_THREADS"


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
    the count to :func:`lumbar_core.gpu.gpu_slot`'s own detection.
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
