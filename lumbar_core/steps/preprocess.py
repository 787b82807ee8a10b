"""Rules of ``rules/preprocess.smk``: paper 2.1 (``preprocess``: ``Io``; ``resize``:
``I``) and the ground truth."""

from __future__ import annotations

import numpy as np

from .. import LEVELS, io
from ..crop import outlines_to_labels
from ..localize import l5_height
from ..preprocess import Geometry, preprocess_image, resize_to_i
from ._common import (
    U16,
    StrPath,
    forward_exclusion,
    io_from_u16,
    load_geometry,
    record,
    status_of,
)

__all__ = ["preprocess", "resize", "ground_truth"]


def preprocess(*, image: StrPath, out_io: StrPath, out_geometry: StrPath, image_id: str,
               settings: dict, spacing: float | None = None) -> dict:
    """Rule ``preprocess``: ``Io`` as uint16 npz and the geometry JSON.

    A per-image problem (unreadable, truncated, too small, no contrast) is recorded as
    ``excluded`` with its message in every output instead of raised; rule ``resize``
    carries it on.

    Parameters
    ----------
    image : path
        The input image (PNG, TIFF, JPEG or DICOM).
    out_io, out_geometry : path
        Output npz of ``Io`` (key ``io``, uint16: ``round(Io * 65535)``) and the
        geometry JSON.
    image_id : str
        The image's id, recorded in the geometry JSON.
    settings : dict
        Options of :func:`lumbar_core.preprocess.preprocess_image` (the config's
        ``preprocess`` section).
    spacing : float, optional
        Pixel spacing in mm from the sample sheet; wins over the file's own. Default None.

    Returns
    -------
    dict
        The status record.
    """
    geometry = {"image_id": image_id, "image": str(image)}
    try:
        raw, props = io.read_image(image)
        result = preprocess_image(raw, **settings)
    except (ValueError, OSError) as err:
        # Where an exclusion starts: empty arrays beside the status.
        out = record("excluded", str(err))
        io.save_npz(out_io, io=np.zeros((0, 0), np.uint16), **out)
        io.write_json(out_geometry, {**geometry, **out})
        return out
    row_mm = props.get("pixel_spacing_mm")
    if spacing is not None:
        row_mm = (float(spacing), float(spacing))
    grid = Geometry(raw.shape)
    geometry.update(
        record("ok"),
        geometry=grid.to_dict(),
        pixel_spacing_mm=list(row_mm) if row_mm is not None else None,
        format=props.get("format"),
        bit_depth=props.get("bit_depth"),
    )
    stored = np.round(result * U16).astype(np.uint16)
    io.save_npz(out_io, io=stored, **record("ok"))
    io.write_json(out_geometry, geometry)
    return record("ok")


def resize(*, io_image: StrPath, geometry: StrPath, out: StrPath) -> dict:
    """Rule ``resize``: ``I`` (512 x 256, the Pose-net input) from the stored ``Io``.

    ``I`` is the uint16 ``Io`` as rule ``preprocess`` stored it, scaled to ``[0, 1]``
    and fitted into the ``I`` grid of the image's geometry
    (:func:`lumbar_core.preprocess.resize_to_i`), kept as float16. The stored ``Io`` is
    all that ``I`` depends on: reading it back from its npz (lossless) gives ``I``
    bit for bit as when one job wrote both. An image that rule ``preprocess`` excluded
    is carried on with its status and message (:func:`._common.forward_exclusion`).

    Parameters
    ----------
    io_image : path
        The image's ``Io`` npz (rule ``preprocess``).
    geometry : path
        The image's geometry JSON (rule ``preprocess``): its status, and the ``Io`` and
        ``I`` shapes.
    out : path
        Output npz: ``i``, (512, 256) float16 in ``[0, 1]``, with the status record.

    Returns
    -------
    dict
        The status record.

    Raises
    ------
    ValueError
        If the stored ``Io`` does not have the shape its geometry records.
    """
    grid, geometry_record = load_geometry(geometry)
    if grid is None:
        return forward_exclusion(geometry_record.get("status", "excluded"),
                                 geometry_record.get("message", ""), npz_outputs=[out])
    data = io.load_npz(io_image)
    status, message = status_of(data)
    if status != "ok":
        return forward_exclusion(status, message, npz_outputs=[out])
    stored = data["io"]
    if stored.shape != grid.io_shape:
        raise ValueError(f"{io_image}: Io has shape {stored.shape}; its geometry "
                         f"{geometry} records {grid.io_shape}")
    io.save_npz(out, i=_i_from_stored(stored, grid), **record("ok"))
    return record("ok")


def _i_from_stored(stored: np.ndarray, grid: Geometry) -> np.ndarray:
    """``I`` (float16) from the stored uint16 ``Io``: the one computation of ``I``."""
    return resize_to_i(io_from_u16(stored), i_shape=grid.i_shape).astype(np.float16)


def ground_truth(*, annotation: StrPath, geometry: StrPath, out_points: StrPath,
                 out_masks: StrPath) -> dict:
    """Rule ``ground_truth``: centres and outlines in input, ``Io`` and ``I`` pixels, masks.

    Masks are the filled 8-point outlines (:func:`lumbar_core.crop.outlines_to_labels`),
    labels 1..5 for L1..L5, in the input grid, ``Io`` and ``I``. ``l5_height_i`` is L5's
    mean of its anterior and posterior heights in ``I`` pixels
    (:func:`lumbar_core.localize.l5_height`; Eq. 4's sigma^2 is a quarter of it).

    Parameters
    ----------
    annotation : path
        The image's annotation JSON.
    geometry : path
        The image's geometry JSON (rule ``preprocess``).
    out_points : path
        Output JSON: centres and outlines per space, the spacing, the anterior side,
        ``l5_height_i`` and the annotated Genant grades and types.
    out_masks : path
        Output npz: label masks ``input``, ``io`` and ``i``.

    Returns
    -------
    dict
        The status record; an unusable annotation or an excluded image is recorded as
        ``excluded`` in both outputs.
    """
    grid, geometry_record = load_geometry(geometry)
    outputs = {"json_outputs": [out_points], "npz_outputs": [out_masks]}
    if grid is None:
        return forward_exclusion(
            "excluded", f"image excluded: {geometry_record.get('message', '')}", **outputs)
    try:
        ann = io.read_annotation(annotation, image_shape=grid.input_shape)
    except (ValueError, OSError) as err:
        return forward_exclusion("excluded", str(err), **outputs)
    vert = ann["vertebrae"]
    centres = np.array([vert[name]["centre"] for name in LEVELS], dtype=np.float64)
    outlines = np.array([vert[name]["outline"] for name in LEVELS], dtype=np.float64)
    # The spacing of the image (DICOM tag or sample sheet) wins over the annotation's.
    spacing = geometry_record.get("pixel_spacing_mm") or ann.get("pixel_spacing_mm")
    out = {**record("ok"), "levels": list(LEVELS), "anterior": ann.get("anterior"),
           "pixel_spacing_mm": spacing}
    masks = {}
    shapes = {"input": grid.input_shape, "io": grid.io_shape, "i": grid.i_shape}
    for space, shape in shapes.items():
        c = grid.input_to(space, centres) if space != "input" else centres
        o = grid.input_to(space, outlines) if space != "input" else outlines
        out[f"centres_{space}"] = c.tolist()
        out[f"outlines_{space}"] = o.tolist()
        masks[space] = outlines_to_labels(o, shape)
    out["l5_height_i"] = l5_height(out["outlines_i"][4])
    out["genant_grade"] = [vert[name].get("genant_grade") for name in LEVELS]
    out["genant_type"] = [vert[name].get("genant_type") for name in LEVELS]
    io.write_json(out_points, out)
    io.save_npz(out_masks, **masks, **record("ok"))
    return record("ok")
