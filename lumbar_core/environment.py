"""What the workflow passes to its jobs through the environment.

Kept out of the Snakefile so that the rules only wire: these two values are not
configuration (they describe where the code lives and what the machine has), and as rule
params they would make Snakemake rerun jobs whenever they change.
"""

from __future__ import annotations

import os

from .gpu import SLOTS_ENV

__all__ = ["export_library_path", "export_gpu_slots"]


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
