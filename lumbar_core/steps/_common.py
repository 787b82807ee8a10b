"""What every step shares: status records, reading ``Io`` and the geometry, and the one
way an image that cannot go on is carried to the next step's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from .. import io
from ..preprocess import Geometry

__all__ = [
    "StrPath",
    "U16",
    "record",
    "status_of",
    "forward_exclusion",
    "infer_shard",
    "image_id_of",
    "io_from_u16",
    "load_io",
    "load_geometry",
    "read_rows",
    "NO_IMAGE_IN_SPLITS",
]

#: Scale of ``Io`` stored as uint16.
U16 = 65535.0

#: A path argument: ``str`` or any ``os.PathLike``.
StrPath = str | PathLike

#: Why a cohort-wide step got no image, and what to do (a fresh clone's first mistake).
NO_IMAGE_IN_SPLITS = (
    "the sample sheet has no {what}image in the splits of `predict_splits` (in a fresh clone "
    "the demo cohort is written first: `snakemake make_demo_cohort`, or `make demo`)")


def record(status: str, message: str = "") -> dict:
    """The status record every per-image output carries: ``{"status", "message"}``."""
    return {"status": status, "message": message}


def status_of(data: Mapping) -> tuple[str, str]:
    """``(status, message)`` of a loaded per-image npz (dict) or JSON (dict).

    A file without a ``status`` is ``"ok"``.
    """
    status = str(np.asarray(data.get("status", "ok")))
    message = str(np.asarray(data.get("message", "")))
    return status, message


def forward_exclusion(status: str, message: str, *, json_outputs=(), npz_outputs=()) -> dict:
    """Write the status of an image that cannot go on into every output of a step.

    The one way a step carries an ``excluded`` (or ``failed``, ``implausible``) image
    on: each JSON output gets ``{"status", "message"}`` and each npz output the same two
    fields and no arrays, so that the next step reads the status and carries it on in
    turn.

    Parameters
    ----------
    status, message : str
        What to forward.
    json_outputs, npz_outputs : sequence of path
        The step's outputs, by format.

    Returns
    -------
    dict
        The record written.
    """
    out = record(status, message)
    for path in json_outputs:
        io.write_json(path, out)
    for path in npz_outputs:
        io.save_npz(path, **out)
    return out


def infer_shard(model, inputs, out_dir: StrPath, *, predict, geometry=None,
                log) -> None:
    """The loop of every inference rule: the model loaded once, one file per image.

    Each input ``<image_id>.npz`` gives ``<out_dir>/<image_id>.npz``: the arrays and log
    note returned by ``predict(net, data, grid)`` (``grid`` the image's
    :class:`~lumbar_core.preprocess.Geometry` read from ``geometry``, the same order as
    ``inputs``, or None without it), or the status of an image that cannot go on
    (:func:`forward_exclusion`). ``model`` is one ``.keras`` path, or a list of them
    (an ensemble: ``net`` is then the list of loaded models). Keras is imported here,
    after the job claimed its GPU.
    """
    from ..models import load_model

    if isinstance(model, (list, tuple)):
        net = [load_model(path) for path in model]
    else:
        net = load_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = geometry if geometry is not None else [None] * len(inputs)
    for path, geometry_path in zip(inputs, grids, strict=True):
        image_id = image_id_of(path)
        target = out_dir / f"{image_id}.npz"
        data = io.load_npz(path)
        status, message = status_of(data)
        if status != "ok":
            forward_exclusion(status, message, npz_outputs=[target])
            continue
        grid = None if geometry_path is None else load_geometry(geometry_path)[0]
        arrays, note = predict(net, data, grid)
        io.save_npz(target, **arrays, **record("ok"))
        print(f"{image_id}: {note}", file=log)


def image_id_of(path: StrPath) -> str:
    """The image id of a per-image file ``<image_id>.<ext>``."""
    return Path(path).name.split(".")[0]


def io_from_u16(stored) -> np.ndarray:
    """Stored uint16 ``Io`` as float32 in [0, 1]."""
    return stored.astype(np.float32) / U16


def load_io(path: StrPath) -> tuple[np.ndarray | None, dict]:
    """``Io`` as float32 in [0, 1] (None when excluded) and its status record."""
    data = io.load_npz(path)
    status, message = status_of(data)
    if status != "ok":
        return None, record(status, message)
    return io_from_u16(data["io"]), record("ok")


def load_geometry(path: StrPath) -> tuple[Geometry | None, dict]:
    """The :class:`Geometry` of an image (None when excluded) and its JSON record."""
    data = io.read_json(path)
    if data.get("status") != "ok":
        return None, data
    return Geometry.from_dict(data["geometry"]), data


def read_rows(paths):
    """Concatenate per-image TSV tables into one DataFrame (empty without paths)."""
    import pandas as pd

    frames = [io.read_table(p, dtype={"image_id": str}) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
