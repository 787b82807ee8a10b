"""Rules of ``rules/segment.smk``: paper 2.3, Eq. 6 patches and the networks' masks.

The inference rules work on a shard of images with the model loaded once and write one
file per image, ``<out_dir>/<image_id>.npz``, carrying each image's status. Keras is
imported inside them, after the job has claimed its GPU
(:func:`lumbar_core.workflow.environment.model_job`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from .. import io
from ..crop import (
    crop_boxes,
    extract_patches,
    patch_probabilities_to_masks,
    whole_probabilities_to_masks,
)
from ._common import (
    StrPath,
    forward_exclusion,
    infer_shard,
    load_io,
    record,
)

__all__ = ["crop", "mnet_infer", "unet_infer", "mnet_whole_infer", "unet_whole_infer"]


def crop(*, io_image: StrPath, peaks: StrPath, out: StrPath, patch_size: int) -> dict:
    """Rule ``crop``: the five Eq. 6 patches around the detected centres, with boxes.

    Parameters
    ----------
    io_image : path
        The image's ``Io`` npz (rule ``preprocess``).
    peaks : path
        The image's centres JSON (rule ``select_peaks``).
    out : path
        Output npz: ``patches`` (5, P, P) float16 and ``boxes`` (5, 3).
    patch_size : int
        Side ``P`` of the patches.

    Returns
    -------
    dict
        The status record (a failed, implausible or excluded detection is carried on).
    """
    detection = io.read_json(peaks)
    if detection.get("status") != "ok":
        return forward_exclusion(detection.get("status", "excluded"),
                                 detection.get("message", ""), npz_outputs=[out])
    image, _ = load_io(io_image)
    boxes = crop_boxes(np.array(detection["centres_io"]))
    patches = extract_patches(image, boxes, patch_size=patch_size).astype(np.float16)
    io.save_npz(out, patches=patches, boxes=boxes, **record("ok"))
    return record("ok")


def _patch_infer(model, patches, geometry, out_dir, *, threshold, log) -> None:
    from ..models import predict_segmentation

    def predict(net, crops, grid):
        probs = predict_segmentation(net, crops["patches"].astype(np.float32))
        masks = patch_probabilities_to_masks(probs[..., 1], crops["boxes"], grid,
                                             threshold=threshold)
        return masks, f"{np.count_nonzero(masks['labels_io'])} px labelled in Io"

    infer_shard(model, patches, out_dir, predict=predict, geometry=geometry, log=log)


_PATCH_INFER_DOC = """Rule ``{rule}``: {network} on each patch of a shard, pasted back.

    Each image gets ``<out_dir>/<image_id>.npz`` with the patch probabilities, the kept
    binary patch masks and their pasted-back labels in ``Io`` and the input grid
    (:func:`lumbar_core.crop.patch_probabilities_to_masks`).

    Parameters
    ----------
    model : path
        The network's ``.keras`` file.
    patches : sequence of path
        The shard's crop npz files (rule ``crop``).
    geometry : sequence of path
        The same images' geometry JSON files, in the same order.
    out_dir : path
        Output folder.
    threshold : float, optional
        Foreground probability threshold; default 0.5.
    log : file, optional
        Where progress goes.
    """


def mnet_infer(*, model: StrPath, patches: Sequence[StrPath], geometry: Sequence[StrPath],
               out_dir: StrPath, threshold: float = 0.5, log=sys.stderr) -> None:
    _patch_infer(model, patches, geometry, out_dir, threshold=threshold, log=log)


def unet_infer(*, model: StrPath, patches: Sequence[StrPath], geometry: Sequence[StrPath],
               out_dir: StrPath, threshold: float = 0.5, log=sys.stderr) -> None:
    _patch_infer(model, patches, geometry, out_dir, threshold=threshold, log=log)


mnet_infer.__doc__ = _PATCH_INFER_DOC.format(rule="mnet_infer", network="M-net")
unet_infer.__doc__ = _PATCH_INFER_DOC.format(rule="unet_infer", network="the U-net")


def _whole_infer(model, images, geometry, out_dir, *, log) -> None:
    from ..models import predict_segmentation

    def predict(net, data, grid):
        probs = predict_segmentation(net, data["i"].astype(np.float32)[None])[0]
        return whole_probabilities_to_masks(probs, grid), "done"

    infer_shard(model, images, out_dir, predict=predict, geometry=geometry, log=log)


_WHOLE_INFER_DOC = """Rule ``{rule}``: Table 2's "Original {network}", 6-class masks of a shard.

    The whole ``I`` in, L1..L5 out; each image gets ``<out_dir>/<image_id>.npz`` with the
    labels upsampled to ``Io`` and the input grid
    (:func:`lumbar_core.crop.whole_probabilities_to_masks`).

    Parameters
    ----------
    model : path
        The whole-image network's ``.keras`` file.
    images : sequence of path
        The shard's ``I`` npz files (rule ``preprocess``).
    geometry : sequence of path
        The same images' geometry JSON files, in the same order.
    out_dir : path
        Output folder.
    log : file, optional
        Where progress goes.
    """


def mnet_whole_infer(*, model: StrPath, images: Sequence[StrPath],
                     geometry: Sequence[StrPath], out_dir: StrPath, log=sys.stderr) -> None:
    _whole_infer(model, images, geometry, out_dir, log=log)


def unet_whole_infer(*, model: StrPath, images: Sequence[StrPath],
                     geometry: Sequence[StrPath], out_dir: StrPath, log=sys.stderr) -> None:
    _whole_infer(model, images, geometry, out_dir, log=log)


mnet_whole_infer.__doc__ = _WHOLE_INFER_DOC.format(rule="mnet_whole_infer", network="M-net")
unet_whole_infer.__doc__ = _WHOLE_INFER_DOC.format(rule="unet_whole_infer", network="U-net")
