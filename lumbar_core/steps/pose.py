"""Rules of ``rules/pose.smk``: paper 2.2, Pose-net's maps and the five centres."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from .. import LEVELS, io
from ..localize import check_plausibility
from ..localize import select_peaks as choose_peaks
from ._common import (
    StrPath,
    forward_exclusion,
    infer_shard,
    load_geometry,
    status_of,
)

__all__ = ["pose_infer", "select_peaks"]


def pose_infer(*, model: StrPath | Sequence[StrPath], images: Sequence[StrPath],
               out_dir: StrPath, scales: Sequence[float] = (1.0,), log=sys.stderr) -> None:
    """Rule ``pose_infer``: ``yL5`` and ``yL1-5`` (float16) for every image of a shard.

    The model is loaded once; each image gets ``<out_dir>/<image_id>.npz`` (keys
    ``y_l5``, ``y_l15``), or its status carried on when it is excluded.

    Parameters
    ----------
    model : path or sequence of path
        Pose-net ``.keras`` file, or the files of an ensemble (the config's
        ``posenet: members``), whose maps are averaged
        (:func:`lumbar_core.models.predict_heatmaps`).
    images : sequence of path
        The shard's ``I`` npz files (rule ``preprocess``).
    out_dir : path
        Output folder.
    scales : sequence of float, optional
        Test-time scales of :func:`lumbar_core.models.predict_heatmaps` (the config's
        ``posenet: test_time_scales``); default ``(1.0,)``, the paper's single pass.
    log : file, optional
        Where progress goes.
    """
    from ..models import predict_heatmaps

    def predict(net, data, _grid):
        y_l5, y_l15 = predict_heatmaps(net, data["i"].astype(np.float32)[None],
                                       scales=scales)
        arrays = {"y_l5": y_l5[0].astype(np.float16), "y_l15": y_l15[0].astype(np.float16)}
        return arrays, f"max yL1-5 {float(y_l15.max()):.3f}"

    infer_shard(model, images, out_dir, predict=predict, log=log)


def select_peaks(*, maps: StrPath, geometry: StrPath, out: StrPath, settings: dict,
                 annotated: bool = False) -> dict:
    """Rule ``select_peaks``: the five centres in ``I``, ``Io`` and input pixels.

    The centres come from :func:`lumbar_core.localize.select_peaks` and their
    plausibility from :func:`lumbar_core.localize.check_plausibility`. Five centres that
    do not form a plausible lumbar spine are recorded with ``plausible: false`` and
    ``implausible_reason``. In an ``annotated`` image (an evaluated run) the status
    stays ``"ok"``, so that the paper's success rule and Table 2 judge the detection as
    they would; otherwise the status is ``"implausible"`` and the later steps treat the
    image like a failed detection (no crop, masks, heights or grades), counted
    separately.

    Parameters
    ----------
    maps : path
        The image's npz of rule ``pose_infer`` (key ``y_l15``).
    geometry : path
        The image's geometry JSON.
    out : path
        Output JSON.
    settings : dict
        Options of :func:`lumbar_core.localize.select_peaks` and, under
        ``plausibility``, the limits of :func:`lumbar_core.localize.check_plausibility`
        (the config's ``peaks`` section).
    annotated : bool, optional
        Whether the image has an annotation (is evaluated); default False.

    Returns
    -------
    dict
        What was written: status, message, candidates, centres per space and the
        plausibility check.
    """
    settings = dict(settings)
    limits = dict(settings.pop("plausibility", None) or {})
    grid, geometry_record = load_geometry(geometry)
    data = io.load_npz(maps)
    status, message = status_of(data)
    if grid is None or status != "ok":
        return forward_exclusion("excluded", message or geometry_record.get("message", ""),
                                 json_outputs=[out])
    result = choose_peaks(data["y_l15"].astype(np.float32), **settings)
    if result["status"] != "ok":
        result["message"] = result["status"].removeprefix("failed: ")
        result["status"] = "failed"
    else:
        result["message"] = ""
        centres_i = np.array([result["centres"][name] for name in LEVELS])
        result["centres_i"] = centres_i.tolist()
        result["centres_io"] = grid.map(centres_i, "i", "io").tolist()
        result["centres_input"] = grid.to_input("i", centres_i).tolist()
        spacing = grid.pixel_spacing("io", geometry_record.get("pixel_spacing_mm"))
        check = check_plausibility(result["centres_io"], film_box=grid.film_box("io"),
                                   pixel_spacing_mm=spacing, **limits)
        result["plausible"] = check["plausible"]
        result["implausible_reason"] = check["implausible_reason"]
        result["plausibility"] = check["measures"]
        if not check["plausible"] and not annotated:
            result["status"] = "implausible"
            result["message"] = check["implausible_reason"]
    io.write_json(out, result)
    return result
