"""The networks of the paper and how they are saved, loaded and run.

- :func:`build_posenet`: Pose-net, localisation of the five centres (paper 2.2).
- :func:`build_mnet`: M-net, segmentation of a vertebra patch (paper 2.3).
- :func:`build_unet`: the U-net baseline of Table 2.
- :func:`build_whole_image`: Table 2's whole-image ("Original") M-net and U-net.
- :func:`save_model` / :func:`load_model`: ``.keras`` files, written atomically and
  read in Keras' safe mode (no code is ever executed from a model file).
- :func:`predict_heatmaps` / :func:`predict_segmentation`: batched inference on numpy
  arrays (Pose-net's maps optionally at several test-time scales,
  :func:`zoom_about_centre`).

All models are plain Keras 3 functional models without custom layers, so they run on
the TensorFlow, JAX and PyTorch backends alike.
"""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np

from . import losses
from .losses import WeightedCategoricalCrossentropy, heatmap_sse
from .mnet import SIDE_OUTPUTS, build_mnet, mnet_loss
from .posenet import build_posenet, posenet_loss
from .unet import build_unet, unet_loss
from .whole import build_whole_image, segmentation_network, whole_image_loss

__all__ = [
    "SIDE_OUTPUTS",
    "WeightedCategoricalCrossentropy",
    "build_mnet",
    "build_posenet",
    "build_unet",
    "build_whole_image",
    "heatmap_sse",
    "load_model",
    "losses",
    "mnet_loss",
    "posenet_loss",
    "predict_heatmaps",
    "predict_segmentation",
    "save_model",
    "segmentation_network",
    "unet_loss",
    "whole_image_loss",
    "zoom_about_centre",
]


def _check_keras_path(path, *, what):
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"{what}: the model file name must end in '.keras'. Received: path={path!r}")
    return path


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Save a model as a ``.keras`` file, atomically.

    The model is written to ``<dir>/.<name>.tmp.keras`` and then renamed to ``path``
    (``os.replace``), so that an interrupted job never leaves a truncated model where
    a complete one is expected.

    Parameters
    ----------
    model : keras.Model
        The model, compiled or not (a compiled model keeps its optimizer state).
    path : str or os.PathLike
        Destination; must end in ``.keras``. Its folder is created if missing.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"save_model: model must be a keras.Model. Received: model={model!r}")
    path = _check_keras_path(path, what="save_model")
    folder, filename = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{filename[: -len('.keras')]}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _find_unsafe(config):
    """Class names of layers in a saved model config that would run stored code."""
    found = []
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") in ("Lambda", "__lambda__"):
                found.append(item["class_name"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _refused(path, what):
    return ValueError(
        f"Refused to load model file {path!r}: it contains unsafe code ({what}). "
        "Only models saved by this workflow (Keras layers only, no Lambda layers) "
        "are loaded."
    )


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` model in safe mode.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file written by :func:`save_model` (or ``keras.Model.save``).

    Returns
    -------
    model : keras.Model
        The model, compiled if it was saved compiled (the package's losses are
        registered, so no ``custom_objects`` are needed).

    Raises
    ------
    ValueError
        If the file is missing, is not a Keras archive, is corrupt, or contains
        anything that would execute stored code (a ``Lambda`` layer): such files are
        refused, not loaded.
    """
    path = _check_keras_path(path, what="load_model")
    if not os.path.isfile(path):
        raise ValueError(f"load_model: model file {path!r} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"load_model: model file {path!r} is not a valid .keras archive ({exc}).") from exc
    unsafe = _find_unsafe(config)
    if unsafe:
        raise _refused(path, "Lambda layer" if "Lambda" in unsafe else "serialised Python lambda")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        if "safe_mode" in str(exc):
            raise _refused(path, str(exc).splitlines()[0]) from exc
        raise ValueError(f"load_model: model file {path!r} could not be loaded ({exc}).") from exc


def _check_images(images, *, model, what):
    images = np.asarray(images)
    if images.ndim != 3 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{what}: images must be a float (N, H, W) array. "
            f"Received: shape={images.shape}, dtype={images.dtype}"
        )
    expected = tuple(model.inputs[0].shape[1:3])
    if any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise ValueError(
            f"{what}: images are {images.shape[1:]} but the model takes {expected}. "
            f"Received: shape={images.shape}"
        )
    if images.size and (not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"{what}: image values must be finite and in [0, 1]. "
            f"Received: min={images.min()}, max={images.max()}"
        )
    return images.astype(np.float32, copy=False)[..., np.newaxis]


def _check_batch_size(batch_size, *, what):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{what}: batch_size must be a positive int. Received: batch_size={batch_size!r}")


def _predict(model: keras.Model, x: np.ndarray, batch_size: int) -> dict:
    """The model's named outputs on ``x``, ``batch_size`` images per forward pass.

    ``predict_on_batch`` on each batch runs the same compiled forward pass as
    ``Model.predict`` with the same batches, so the outputs are identical, without the
    setup ``predict`` pays on every call (its data adapter and callbacks: 70-90 ms on a
    CPU, more than the M-net's five patches cost). Inference calls once per image.
    """
    parts = [model.predict_on_batch(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return {name: np.concatenate([np.asarray(part[name]) for part in parts])
            for name in parts[0]}


def zoom_about_centre(image: np.ndarray, factor: float, *, order: int = 1) -> np.ndarray:
    """``image`` magnified ``factor`` times about its centre, on the same grid.

    Pixel ``p`` of the result samples ``image`` at ``c + (p - c) / factor``, ``c`` the
    grid's centre (bilinear by default, zero outside), so a feature at ``p`` moves to
    ``c + factor * (p - c)``; ``factor`` < 1 shrinks the image and pads it with zeros.
    The map is the training augmentation's isotropic scale
    (:func:`lumbar_core.training.affine_map`), so the network sees a zoomed ``I`` as it
    saw scaled images in training.
    ``zoom_about_centre(zoom_about_centre(a, f), 1 / f)`` gives back ``a`` where the
    first zoom kept it on the grid.

    Examples
    --------
    >>> a = np.zeros((9, 9)); a[2, 4] = 1.0  # the centre is (4, 4)
    >>> np.argwhere(zoom_about_centre(a, 0.5, order=0) == 1).tolist()
    [[3, 4]]
    """
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"zoom_about_centre: image must be 2-D. Received: shape={a.shape}")
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"zoom_about_centre: factor must be a positive number. Received: {factor!r}")
    if factor == 1:
        return a.copy()
    from scipy import ndimage

    from ..training import affine_map

    matrix, offset, *_ = affine_map(a.shape, 0.0, (0.0, 0.0), scale=float(factor))
    return ndimage.affine_transform(a, matrix, offset=offset, order=order, mode="constant",
                                    cval=0.0)


def _check_scales(scales, *, what):
    values = np.asarray(scales, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{what}: scales must be one or more positive numbers. Received: scales={scales!r}")
    return [float(v) for v in values]


def predict_heatmaps(
    model, images: np.ndarray, *, batch_size: int = 4, scales=(1.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Run the Pose-net on images ``I`` (paper 2.2), or an ensemble of Pose-nets.

    With ``scales`` other than ``(1.0,)`` (beyond the paper) each image is also
    magnified about its centre by each factor (:func:`zoom_about_centre`), every version
    goes through the network, each map is zoomed back onto ``I``, and the maps are
    combined by their pixel-wise maximum: a vertebra the network answers to at any of
    the scales keeps its peak. Given several Pose-nets (beyond the paper: trained alike
    from different seeds), each network's maps are made so and the maps are averaged
    (docs/method.md, section 2).

    Parameters
    ----------
    model : keras.Model or sequence of keras.Model
        A Pose-net from :func:`build_posenet` (or loaded with :func:`load_model`), or
        several, whose maps are averaged.
    images : (N, H, W) ndarray of float
        Pre-processed images ``I`` (512 x 256 for the paper), values in [0, 1]; the size
        must match the model input.
    batch_size : int, optional
        Images per forward pass. Default 4.
    scales : sequence of float, optional
        Magnifications of ``I`` whose maps are combined; default ``(1.0,)``, the paper's
        single pass (the maps are then exactly the network's).

    Returns
    -------
    y_l5, y_l15 : (N, H, W) ndarray of float32
        The confidence maps ``yL5`` and ``yL1-5`` (linear outputs, not clipped).
    """
    what = "predict_heatmaps"
    _check_batch_size(batch_size, what=what)
    scales = _check_scales(scales, what=what)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError(f"{what}: model must be a Pose-net or a non-empty sequence of them. "
                         f"Received: {model!r}")
    for net in models:
        x = _check_images(images, model=net, what=what)
        if not {"y_l5", "y_l15"} <= set(net.output_names):
            raise ValueError(f"{what}: model has no y_l5/y_l15 outputs. Received: outputs {net.output_names}")
    if x.shape[0] == 0:
        empty = np.zeros(x.shape[:3], np.float32)
        return empty, empty.copy()
    members = [_scaled_heatmaps(net, x, batch_size, scales) for net in models]
    if len(members) == 1:
        return members[0]
    return tuple(np.mean([m[k] for m in members], axis=0, dtype=np.float32) for k in (0, 1))


def _scaled_heatmaps(model, x, batch_size, scales):
    """One Pose-net's ``yL5`` and ``yL1-5`` on ``x``, combined over ``scales`` by their maximum."""
    combined = {}
    for s in scales:
        xs = x if s == 1 else np.stack([zoom_about_centre(im, s) for im in x[..., 0]])[..., None]
        out = _predict(model, xs, batch_size)
        for key in ("y_l5", "y_l15"):
            maps = np.asarray(out[key], dtype=np.float32)[..., 0]
            if s != 1:
                maps = np.stack([zoom_about_centre(m, 1 / s) for m in maps])
            combined[key] = maps if key not in combined else np.maximum(combined[key], maps)
    return combined["y_l5"], combined["y_l15"]


def predict_segmentation(model: keras.Model, images: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """Run an M-net or U-net and return its fused class probabilities.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_mnet` or :func:`build_unet` (or :func:`load_model`).
    images : (N, H, W) ndarray of float
        Patches ``Ip`` (224 x 224) or whole images ``I`` (512 x 256), values in
        [0, 1]; the size must match the model input.
    batch_size : int, optional
        Images per forward pass. Default 8.

    Returns
    -------
    probabilities : (N, H, W, C) ndarray of float32
        The ``fused`` output: for the M-net the mean of the four side outputs (Eq. 7).
    """
    what = "predict_segmentation"
    _check_batch_size(batch_size, what=what)
    x = _check_images(images, model=model, what=what)
    if "fused" not in model.output_names:
        raise ValueError(f"{what}: model has no 'fused' output. Received: outputs {model.output_names}")
    if x.shape[0] == 0:
        return np.zeros((*x.shape[:3], model.outputs[0].shape[-1]), np.float32)
    out = _predict(model, x, batch_size)
    return np.asarray(out["fused"], dtype=np.float32)
