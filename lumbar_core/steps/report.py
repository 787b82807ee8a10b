"""Rules of ``rules/report.smk``: paper Fig. 9, Fig. 10 and the overlays (Fig. 11's kind)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import LEVELS, io
from ._common import StrPath, image_id_of, load_geometry, read_rows, status_of

__all__ = ["MODEL_NAMES", "model_label", "fig9", "fig10", "overlays", "image_overlay"]

#: Names of the trained models in Fig. 9, by the stem of their history file.
MODEL_NAMES = {"posenet": "Pose-net", "mnet": "M-net", "unet": "U-net",
               "mnet_whole": "Orig M-net", "unet_whole": "Orig U-net"}


def fig9(*, histories: Sequence[StrPath], out_stem: StrPath) -> None:
    """Rule ``fig9``: the loss curves of every trained model
    (:func:`lumbar_core.plots.plot_loss_curves`).

    Parameters
    ----------
    histories : sequence of path
        ``results/models/<model>.history.csv`` of each trained model.
    out_stem : path
        Output path without extension (PNG and PDF).
    """
    from ..plots import plot_loss_curves

    curves = {model_label(image_id_of(p)): io.read_table(p) for p in histories}
    plot_loss_curves(curves, out_stem)


def model_label(stem: str) -> str:
    """The name of a trained model in Fig. 9, by the stem of its files.

    >>> model_label("mnet_whole"), model_label("posenet_member2")
    ('Orig M-net', 'Pose-net 2')
    """
    base, _, member = stem.partition("_member")
    name = MODEL_NAMES.get(base, stem)
    return f"{name} {member}" if member and base in MODEL_NAMES else name


def fig10(*, localization: Sequence[StrPath], out_stem: StrPath) -> None:
    """Rule ``fig10``: CDF and box plot of the centre error per level
    (:func:`lumbar_core.plots.plot_centre_errors`).

    Parameters
    ----------
    localization : sequence of path
        The per-image localisation TSVs of rule ``metrics``.
    out_stem : path
        Output path without extension (PNG and PDF).
    """
    from ..plots import plot_centre_errors

    plot_centre_errors(read_rows(localization), out_stem)


def overlays(*, segmentation: Sequence[StrPath], inputs: Mapping[str, Mapping[str, StrPath]],
             out_dir: StrPath, n: int) -> list[str]:
    """Rule ``overlays``: input image, GT outlines, centres and each method's outlines.

    With evaluated images (``segmentation`` not empty) the best, worst and median images
    by PN+MNet+LS Dice come first (:func:`lumbar_core.plots.choose_overlay_images`);
    without ground truth (inference only) the first ``n`` images whose film could be read
    (not excluded) are drawn.

    Parameters
    ----------
    segmentation : sequence of path
        The per-image segmentation TSVs of rule ``metrics`` (empty without ground truth).
    inputs : dict
        Image id to the paths of its ``image``, ``peaks``, ``refined`` masks, the
        per-image npz of ``mnet`` and ``mnet_whole`` and, where annotated, its ground
        truth ``points`` (None otherwise).
    out_dir : path
        Output folder; one ``<rank>_<image_id>.png`` (and PDF) per image.
    n : int
        Number of images drawn.

    Returns
    -------
    list of str
        The ids drawn, in rank order.
    """
    from ..plots import choose_overlay_images, plot_overlay
    from ..preprocess import normalise_intensity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dice = {}
    if segmentation:
        seg = read_rows(segmentation)
        ours = seg[(seg["method"] == "PN+MNet+LS") & (seg["level"] == "all")
                   & (seg["status"] == "ok")].sort_values(["dice", "image_id"])
        dice = dict(zip(ours["image_id"], ours["dice"]))
        chosen = choose_overlay_images(dice, n)
    else:
        # The first n films that could be read: an excluded one has nothing to draw on.
        # Read records only until n are found: an archive has tens of thousands.
        readable = (i for i in sorted(inputs)
                    if io.read_json(inputs[i]["peaks"]).get("status") != "excluded")
        chosen = list(itertools.islice(readable, n))
    for rank, image_id in enumerate(chosen):
        paths = inputs[image_id]
        raw, _ = io.read_image(paths["image"])
        peaks = io.read_json(paths["peaks"])
        refined = io.load_npz(paths["refined"])
        masks = {}
        if status_of(refined)[0] == "ok":
            masks = {"Orig MNet": io.load_npz(paths["mnet_whole"])["labels_input"],
                     "PN+MNet": io.load_npz(paths["mnet"])["labels_input"],
                     "PN+MNet+LS": refined["mnet_labels_input"]}
        points = io.read_json(paths["points"]) if paths.get("points") else {}
        title = image_id + (f": PN+MNet+LS Dice {dice[image_id]:.3f}" if image_id in dice else
                            f": {peaks.get('status')} {peaks.get('message', '')}")
        plot_overlay(normalise_intensity(raw), out_dir / f"{rank:02d}_{image_id}",
                     gt_outlines=points.get("outlines_input"),
                     gt_centres=points.get("centres_input"),
                     pred_centres=peaks.get("centres_input"), pred_masks=masks, title=title)
    return chosen


def image_overlay(*, image_id: str, image: StrPath, peaks: StrPath, geometry: StrPath,
                  refined: StrPath, out_png: StrPath, points: StrPath | None = None) -> str:
    """Rule ``image_overlay``: one image and what the pipeline found on it, whatever it was.

    Unlike :func:`overlays` (a few images chosen by Dice), this draws any image, with or
    without ground truth: the five detected centres with their level names, the refined
    PN+MNet+LS outlines where the image has them and, where the detection found no five
    centres, the candidate peaks that peak selection kept (mapped from ``I`` to the input
    grid). The title is the image id and the ``status`` of ``peaks`` with its message, as
    ``select_peaks`` wrote them (``ok``, ``failed``, ``excluded`` or any other status).
    Ground-truth outlines are drawn where ``points`` is given. An image that cannot be
    read still gets a (blank) overlay saying why.

    Parameters
    ----------
    image_id : str
        The image's id.
    image : path
        The input image.
    peaks, geometry, refined : path
        Its files of rules ``select_peaks``, ``preprocess`` and ``levelset_refine``.
    out_png : path
        Output PNG.
    points : path, optional
        Its ground-truth JSON, where annotated.

    Returns
    -------
    str
        The title drawn.
    """
    import textwrap

    from ..plots import plot_overlay
    from ..preprocess import normalise_intensity

    detection = io.read_json(peaks)
    status, message = status_of(detection)
    title = f"{image_id}: {status}" + (f" ({message})" if message else "")
    try:
        raw, _ = io.read_image(image)
        picture = normalise_intensity(raw)
    except (io.LumbarIOError, OSError) as err:
        picture = np.zeros((64, 64))
        title += f"; image not readable: {err}"
    centres = detection.get("centres_input")
    candidates = None
    grid, _ = load_geometry(geometry)
    if not centres and grid is not None:
        kept = [[c["x"], c["y"]] for c in detection.get("candidates", []) if c.get("kept")]
        if kept:
            candidates = grid.to_input("i", np.array(kept, dtype=np.float64))
    labels = io.load_npz(refined)
    masks = {}
    if status_of(labels)[0] == "ok" and np.shape(labels.get("mnet_labels_input")) == picture.shape:
        masks["PN+MNet+LS"] = labels["mnet_labels_input"]
    truth = io.read_json(points) if points else {}
    plot_overlay(picture, Path(out_png).with_suffix(""), gt_outlines=truth.get("outlines_input"),
                 gt_centres=truth.get("centres_input"), pred_centres=centres or None,
                 pred_labels=LEVELS[:len(centres)] if centres else None,
                 candidates=candidates, pred_masks=masks,
                 title=textwrap.fill(title, 90), formats=("png",))
    return title
