"""Training of the networks: seeds, data sequences, augmentation, the training loop.

Paper 3.2: Adam, batch size 4, a warm-up of 50 epochs at learning rate 1e-5, then 1e-3,
at most 700 (Pose-net) or 400 (M-net) epochs, stopping when the validation loss stops
decreasing; augmentation by random contrast, random crop and random rotation within
+-15 degrees. Pose-net targets (Eq. 4, 5) are rendered after augmentation from the
transformed centres, so image and target always agree.

Seeds. :func:`set_seed` seeds Python's ``random``, NumPy's global generator and the
backend (Keras' global seed generator, which drives weight initialisation).
The sequences draw their shuffling and augmentation from their own ``seed``: image
``i`` in epoch ``e`` is augmented by ``numpy.random.default_rng([seed, e, i])`` and
the order of epoch ``e`` is a permutation drawn from ``default_rng([seed, e])``, so a
batch does not depend on worker scheduling. :func:`train_model` calls
:func:`set_seed` with its ``seed`` before fitting, and at the start of each epoch of
``fit`` sets the training sequence's ``epoch`` to that epoch's number: Keras also calls
``on_epoch_end`` once when ``fit`` starts, so counting its calls trained epoch 1 on the
sequence's epoch 2.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import pandas as pd
from scipy import interpolate, ndimage

from .localize import confidence_targets

__all__ = [
    "PAPER_AUGMENTATION",
    "HeatmapSequence",
    "SegmentationSequence",
    "affine_map",
    "augment_pair",
    "set_seed",
    "train_model",
]


def set_seed(seed: int, *, deterministic: bool = True) -> None:
    """Seed every random number generator that training uses.

    Parameters
    ----------
    seed : int
        Non-negative seed for Python's ``random``, NumPy's global generator and the
        Keras backend (``keras.utils.set_random_seed``).
    deterministic : bool, optional
        With the TensorFlow backend, also make its kernels deterministic
        (``tf.config.experimental.enable_op_determinism``), so that training twice
        with the same seed gives identical weights. Default True. TensorFlow cannot
        switch this off again within the process; other backends ignore it.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def affine_map(shape, rotation_deg, shift_rc, *, scale=1.0, aspect=1.0, flip=False):
    """One affine map: flip, scale and aspect, rotation about the image centre, shift.

    The augmentation's geometry (:func:`augment_pair`); test-time zoom
    (:func:`lumbar_core.models.zoom_about_centre`) uses its isotropic scale.

    Returns ``(matrix, offset, forward, centre, shift)``: ``matrix`` and ``offset`` in
    scipy's convention, ``input = matrix @ output + offset`` on ``(row, col)``
    coordinates, and the forward map of points, ``out = forward @ (in - centre) +
    centre + shift``.
    """
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    # Forward map on (row, col): out = R S F (in - c) + c + t; a positive angle turns the
    # image counter-clockwise as displayed (y down). F mirrors the columns about the
    # centre (col -> W - 1 - col); S scales rows by scale * sqrt(aspect) and columns by
    # scale / sqrt(aspect), so that aspect changes the proportions and not the area.
    rot = np.array([[cos, -sin], [sin, cos]])
    root = np.sqrt(aspect)
    stretch = np.diag([scale * root, (-1.0 if flip else 1.0) * scale / root])
    forward = rot @ stretch
    centre = (np.asarray(shape[:2], dtype=float) - 1.0) / 2.0
    shift = np.asarray(shift_rc, dtype=float)
    if flip or scale != 1.0 or aspect != 1.0:
        inverse = np.linalg.inv(forward)
    else:
        inverse = rot.T  # exactly the rotation's inverse, as before scale and flip existed
    offset = centre - inverse @ (centre + shift)
    return inverse, offset, forward, centre, shift


def _check_labels(labels, shape, what):
    """Integer class labels of ``shape`` (booleans become 0/1), or ValueError."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.shape != tuple(shape) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer array {what} {tuple(shape)}. "
            f"Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    return labels


#: Settings of :func:`augment_pair` that reproduce the paper's augmentation (3.2) as the
#: project did it before the wider ranges: random gamma and gain in [0.7, 1.3], rotation
#: within +-15 degrees, shift (crop) up to 8 % of each side, and every other part off.
PAPER_AUGMENTATION = {
    "max_rotation_deg": 15.0,
    "max_shift_frac": 0.08,
    "gamma_range": (0.7, 1.3),
    "gain_range": (0.7, 1.3),
    "offset_range": (0.0, 0.0),
    "tone_curve_strength": 0.0,
    "flip_prob": 0.0,
    "scale_range": (1.0, 1.0),
    "aspect_range": (1.0, 1.0),
    "blur_sigma_range": (0.0, 0.0),
    "unsharp_gain_range": (0.0, 0.0),
    "unsharp_sigma_range": (1.0, 1.0),
    "noise_sigma_range": (0.0, 0.0),
    "noise_signal_dependence": 0.0,
}


def _check_range(name, value, *, low=None, high=None, exclusive_low=False):
    """``(lo, hi)`` floats with ``low <= lo <= hi <= high`` (``low < lo`` if exclusive), or ValueError."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers. Received: {name}={value!r}") from None
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if exclusive_low else '>='} {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    if low is not None:
        ok = ok and (lo > low if exclusive_low else lo >= low)
    if high is not None:
        ok = ok and hi <= high
    if not ok:
        where = f", both {' and '.join(bounds)}" if bounds else ""
        raise ValueError(f"{name} must be (low, high) with low <= high{where}. Received: {name}={value!r}")
    return lo, hi


def _check_number(name, value, low, high):
    """A float in ``[low, high]``, or ValueError."""
    inside = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (inside and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}]. Received: {name}={value!r}")
    return float(value)


_TONE_TABLE = 4096


def _tone_curve(work, knot_shifts):
    """Apply the monotone tone curve through (0, 0) and (1, 1) given by ``knot_shifts``.

    The curve is the monotone cubic (PCHIP) through the knots ``x = 0, 1/4, 1/2, 3/4, 1``
    whose inner values are ``x + knot_shifts``, sorted and clipped to [0, 1]; it darkens,
    brightens, steepens or flattens parts of the grey scale, as archives' look-up tables
    do. ``work`` must lie in [0, 1].
    """
    knots = np.linspace(0.0, 1.0, 5)
    values = knots.copy()
    values[1:-1] += knot_shifts
    values = np.clip(np.sort(values), 0.0, 1.0)
    curve = interpolate.PchipInterpolator(knots, values)
    # A 4097-entry look-up table, nearest entry (error < 1/8192): ten times cheaper per
    # pixel than evaluating the cubic or interpolating the table.
    table = curve(np.linspace(0.0, 1.0, _TONE_TABLE + 1)).astype(np.float32)
    return table[np.rint(work * _TONE_TABLE).astype(np.intp)]


def augment_pair(
    image: np.ndarray,
    *,
    rng: np.random.Generator,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    max_rotation_deg: float = 15.0,
    max_shift_frac: float = 0.08,
    gamma_range: tuple[float, float] = (0.7, 1.3),
    gain_range: tuple[float, float] = (0.7, 1.3),
    offset_range: tuple[float, float] = (0.0, 0.0),
    tone_curve_strength: float = 0.0,
    flip_prob: float = 0.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    aspect_range: tuple[float, float] = (1.0, 1.0),
    blur_sigma_range: tuple[float, float] = (0.0, 0.0),
    unsharp_gain_range: tuple[float, float] = (0.0, 0.0),
    unsharp_sigma_range: tuple[float, float] = (1.0, 1.0),
    noise_sigma_range: tuple[float, float] = (0.0, 0.0),
    noise_signal_dependence: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Random exposure, tone, geometry, blur, sharpening and noise of an image and its labels.

    Paper 3.2: random contrast, random crop, random rotation within +-15 degrees. Beyond
    the paper, the other ways clinical archives differ: tone curves, processing
    (unsharp masking or smoothing), detector blur, noise, patient size and
    magnification (scale), proportions (aspect) and films facing the other way (flip).
    The defaults are the paper's augmentation (:data:`PAPER_AUGMENTATION`); every other
    part is off at its neutral value.

    Parameters
    ----------
    image : (H, W) ndarray of float
        Image with values in [0, 1].
    rng : numpy.random.Generator
        Source of the random draws; the same generator state gives the same output.
    points : (K, 2) ndarray of float, optional
        Points ``(x, y)`` in image pixels (e.g. the centres of L1..L5), transformed by
        the same geometric map as the image, in the same order (a flip mirrors them and
        keeps L1..L5 as they were). Points may leave the image.
    labels : (H, W) ndarray of int or bool, optional
        Label image (class ids; bool is taken as 0/1 uint8), transformed by the same
        map with nearest-neighbour interpolation, so it keeps its integer classes.
    max_rotation_deg : float, optional
        Rotation angle drawn uniformly in ``[-max_rotation_deg, max_rotation_deg]``
        degrees, about the image centre; >= 0. Default 15.
    max_shift_frac : float, optional
        Shift drawn uniformly in ``[-max_shift_frac, max_shift_frac]`` times the image
        height (rows) and width (columns); content shifted out is lost and the
        uncovered border is 0, i.e. a random crop. In [0, 0.5). Default 0.08.
    gamma_range : (float, float), optional
        Range of the gamma exponent, drawn uniformly; values > 0. Default (0.7, 1.3).
    gain_range : (float, float), optional
        Range of the gain about the image mean (contrast), drawn uniformly; values > 0.
        Default (0.7, 1.3).
    offset_range : (float, float), optional
        Range of a brightness offset added to every pixel, drawn uniformly; within
        [-1, 1]. Default (0, 0), off.
    tone_curve_strength : float, optional
        Largest shift of the three inner knots of a random monotone tone curve (see
        Notes); in [0, 0.25]. Default 0, off.
    flip_prob : float, optional
        Probability of mirroring left and right (a film facing the other way); in
        [0, 1]. Default 0, off.
    scale_range : (float, float), optional
        Range of an isotropic scale about the image centre, drawn log-uniformly;
        values > 0 (e.g. (0.8, 1.1)). Default (1, 1), off.
    aspect_range : (float, float), optional
        Range of an aspect factor, drawn log-uniformly: rows are stretched by its
        square root and columns shrunk by it, so the area stays; values > 0. Default
        (1, 1), off.
    blur_sigma_range : (float, float), optional
        Range of the sigma, in pixels, of a Gaussian blur (detector and display blur),
        drawn uniformly; values >= 0. Default (0, 0), off.
    unsharp_gain_range : (float, float), optional
        Range of the gain ``a`` of an unsharp mask, ``image + a * (image - G(image))``,
        drawn uniformly: ``a > 0`` sharpens as DR and CR processing does, ``a < 0``
        smooths (``a = -1`` is the Gaussian ``G`` itself); values >= -1. Default
        (0, 0), off.
    unsharp_sigma_range : (float, float), optional
        Range of the sigma of ``G``, in pixels, drawn uniformly; values > 0. Default
        (1, 1).
    noise_sigma_range : (float, float), optional
        Range of the standard deviation of Gaussian noise, drawn uniformly; values >= 0.
        Default (0, 0), off.
    noise_signal_dependence : float, optional
        ``d`` in [0, 1]: the noise's standard deviation at a pixel of value ``v`` is
        ``sigma * ((1 - d) + d * sqrt(v))``; 0 is additive noise, 1 quantum
        (signal-dependent) noise. Default 0.

    Returns
    -------
    image : (H, W) ndarray of float32
        Augmented image, clipped to [0, 1].
    points : (K, 2) ndarray of float64 or None
        Transformed points, None if none were given.
    labels : (H, W) ndarray or None
        Transformed labels (input dtype; uint8 for bool input), None if none were given.

    Notes
    -----
    The parts are applied in this order: gamma, gain about the mean; one affine map,
    the mirror (columns about the centre), scale and aspect, the rotation about the
    image centre ``((W-1)/2, (H-1)/2)`` and the shift, applied with
    :func:`scipy.ndimage.affine_transform` (linear interpolation for the image, order 0
    for labels, zeros outside) and in its forward form to the points, so a point lands
    where its pixel went; noise; Gaussian blur; unsharp mask or smoothing (noise before
    the filters, as quantum noise passes through the detector's blur and the
    processing); tone curve; offset; clip to [0, 1]. A part whose drawn value is
    neutral is skipped, so the defaults give the paper's augmentation bit for bit.

    The random draws are, in order: gamma, gain, angle, row shift, column shift (the
    paper's part, as before), then flip, scale, aspect, blur sigma, unsharp gain,
    unsharp sigma, noise sigma, offset, the tone curve's three knots, and last the
    noise field when the noise is on.

    Examples
    --------
    >>> image = np.zeros((8, 6), np.float32); image[2, 1] = 1.0
    >>> out, pts, _ = augment_pair(image, rng=np.random.default_rng(0),
    ...                            points=np.array([[1.0, 2.0]]), flip_prob=1.0,
    ...                            max_rotation_deg=0, max_shift_frac=0,
    ...                            gamma_range=(1, 1), gain_range=(1, 1))
    >>> pts.tolist(), float(out[2, 4])
    ([[4.0, 2.0]], 1.0)
    """
    image = np.asarray(image)
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"image must be a float (H, W) array. Received: shape={image.shape}, dtype={image.dtype}"
        )
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator. Received: rng={rng!r}")
    if not max_rotation_deg >= 0:
        raise ValueError(f"max_rotation_deg must be >= 0. Received: max_rotation_deg={max_rotation_deg!r}")
    if not 0 <= max_shift_frac < 0.5:
        raise ValueError(f"max_shift_frac must be in [0, 0.5). Received: max_shift_frac={max_shift_frac!r}")
    gamma_range = _check_range("gamma_range", gamma_range, low=0, exclusive_low=True)
    gain_range = _check_range("gain_range", gain_range, low=0, exclusive_low=True)
    offset_range = _check_range("offset_range", offset_range, low=-1, high=1)
    tone_curve_strength = _check_number("tone_curve_strength", tone_curve_strength, 0.0, 0.25)
    flip_prob = _check_number("flip_prob", flip_prob, 0.0, 1.0)
    scale_range = _check_range("scale_range", scale_range, low=0, exclusive_low=True)
    aspect_range = _check_range("aspect_range", aspect_range, low=0, exclusive_low=True)
    blur_sigma_range = _check_range("blur_sigma_range", blur_sigma_range, low=0)
    unsharp_gain_range = _check_range("unsharp_gain_range", unsharp_gain_range, low=-1)
    unsharp_sigma_range = _check_range("unsharp_sigma_range", unsharp_sigma_range, low=0, exclusive_low=True)
    noise_sigma_range = _check_range("noise_sigma_range", noise_sigma_range, low=0)
    noise_signal_dependence = _check_number("noise_signal_dependence", noise_signal_dependence, 0.0, 1.0)
    if points is not None:
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must be a (K, 2) array of (x, y). Received: shape={points.shape}")
    if labels is not None:
        labels = _check_labels(labels, image.shape, "of the image shape")

    # The paper's draws first and in their old order, so that its settings repeat the
    # project's earlier augmentation exactly; then the rest, always all of them, so a
    # part switched on or off does not change the others' draws.
    gamma = rng.uniform(*gamma_range)
    gain = rng.uniform(*gain_range)
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    shift_rc = rng.uniform(-max_shift_frac, max_shift_frac, size=2) * np.asarray(image.shape)
    flip = bool(rng.random() < flip_prob)
    scale = float(np.exp(rng.uniform(*np.log(scale_range))))
    aspect = float(np.exp(rng.uniform(*np.log(aspect_range))))
    blur_sigma = rng.uniform(*blur_sigma_range)
    unsharp_gain = rng.uniform(*unsharp_gain_range)
    unsharp_sigma = rng.uniform(*unsharp_sigma_range)
    noise_sigma = rng.uniform(*noise_sigma_range)
    offset = rng.uniform(*offset_range)
    knot_shifts = rng.uniform(-tone_curve_strength, tone_curve_strength, size=3)

    work = np.clip(image.astype(np.float32), 0.0, 1.0) ** np.float32(gamma)
    mean = work.mean(dtype=np.float64)
    work = (work - mean) * gain + mean
    matrix, shift_offset, forward, centre, shift = affine_map(
        image.shape, angle, shift_rc, scale=scale, aspect=aspect, flip=flip)
    work = ndimage.affine_transform(work, matrix, offset=shift_offset, order=1, mode="constant", cval=0.0)
    work = work.astype(np.float32, copy=False)  # the gain about a float64 mean made it float64
    if noise_sigma > 0:
        level = np.clip(work, 0.0, 1.0)
        spread = noise_sigma * ((1.0 - noise_signal_dependence) + noise_signal_dependence * np.sqrt(level))
        work = work + spread * rng.standard_normal(work.shape, dtype=np.float32)
    if blur_sigma > 0:
        work = ndimage.gaussian_filter(work, blur_sigma, mode="nearest")
    if unsharp_gain != 0:
        blurred = ndimage.gaussian_filter(work, unsharp_sigma, mode="nearest", truncate=3.0)
        work = work + unsharp_gain * (work - blurred)
    if tone_curve_strength > 0:
        work = _tone_curve(np.clip(work, 0.0, 1.0), knot_shifts)
    if offset != 0:
        work = work + offset
    out_image = np.clip(work, 0.0, 1.0).astype(np.float32)

    out_points = None
    if points is not None:
        rc = points[:, ::-1]
        out_points = ((rc - centre) @ forward.T + centre + shift)[:, ::-1]
    out_labels = None
    if labels is not None:
        out_labels = ndimage.affine_transform(labels, matrix, offset=shift_offset, order=0, mode="constant", cval=0)
    return out_image, out_points, out_labels


class _AugmentedSequence(keras.utils.PyDataset):
    """Shared batching, shuffling and per-image random generators."""

    def __init__(self, n, *, batch_size, augment, seed, shuffle, augment_kwargs, **kwargs):
        kwargs.setdefault("workers", _default_workers())
        super().__init__(**kwargs)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
        self.n = n
        self.batch_size = batch_size
        self.augment = bool(augment)
        self.seed = int(seed)
        self.shuffle = self.augment if shuffle is None else bool(shuffle)
        self.augment_kwargs = dict(augment_kwargs or {})
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self):
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def _indices(self, idx):
        if not 0 <= idx < len(self):
            raise IndexError(f"batch index {idx} out of range for {len(self)} batches")
        return self._order[idx * self.batch_size : (idx + 1) * self.batch_size]

    def _rng(self, i):
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def set_epoch(self, epoch):
        """Draw the order and the augmentation of epoch ``epoch`` (from 0)."""
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int. Received: epoch={epoch!r}")
        self.epoch = int(epoch)
        self._order = self._make_order()

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)


#: Threads that prepare batches (``keras.utils.PyDataset(workers=...)``). With one, Keras
#: feeds the sequence through tf.data's autotuned prefetching, and on the TensorFlow
#: backend the first step of an epoch then often waited 4 to 5 s (every other epoch of
#: the demo's Pose-net: epochs of 10 s instead of 5 s). With two, Keras's own ordered
#: queue feeds it and tf.data's autotuning is off: no such wait. Batches keep their order
#: and each image's augmentation is seeded by (seed, epoch, index), so the trained
#: weights are the same either way. TensorFlow backend only: see :func:`_default_workers`.
DATA_WORKERS = 2


def _default_workers():
    """Batch workers of a sequence: :data:`DATA_WORKERS` on TensorFlow, one elsewhere.

    With more than one worker Keras prefetches batches in its ordered queue, and when it
    stops the queue it keeps the prefetched batches for the next run. On JAX, ``fit``
    takes one batch to build the model before training, so the batches prefetched then
    were trained on first and every epoch was shifted by them: from the same weights and
    seed the first training step saw another batch than on TensorFlow (loss 1.1361
    against 1.1406 for a small U-net). One worker reads the batches in order, unbuffered.
    """
    return DATA_WORKERS if keras.backend.backend() == "tensorflow" else 1


def _path_length(points):
    """Length of the polyline through ``points`` (K, 2)."""
    return float(np.hypot(*np.diff(points, axis=0).T).sum())


def _stack(arrays):
    """Stack (H, W) arrays to a (B, H, W, 1) float32 batch."""
    return np.stack(arrays).astype(np.float32)[..., np.newaxis]


def _check_images(images, name="images"):
    images = np.asarray(images)
    if images.ndim != 3 or not np.issubdtype(images.dtype, np.floating) or images.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty float (N, H, W) array. Received: shape={images.shape}, dtype={images.dtype}"
        )
    return images


class HeatmapSequence(_AugmentedSequence):
    """Batches of images ``I`` and Pose-net targets (Eq. 4, 5) for ``model.fit``.

    Parameters
    ----------
    images : (N, H, W) ndarray of float
        Images ``I`` (512 x 256), values in [0, 1].
    centres : (N, 5, 2) ndarray of float
        Centres ``(x, y)`` of L1..L5 in ``I`` pixels.
    sigma2 : (N,) ndarray of float or float
        ``sigma^2`` of each image's targets (a quarter of its L5 height, Eq. 4).
    batch_size : int, optional
        Images per batch; the last batch may be smaller. Default 4 (paper 3.2).
    augment : bool, optional
        Apply :func:`augment_pair` to every image; the targets are rendered afterwards
        from the transformed centres, with ``sigma^2`` scaled by the ratio of the L1-L5
        path length after and before (Eq. 4: a quarter of the L5 height). Default False.
    seed : int, optional
        Seed of the shuffling and the augmentation (see the module docstring). Default 0.
    shuffle : bool or None, optional
        Shuffle the order each epoch; None (default) shuffles when ``augment``.
    augment_kwargs : dict, optional
        Keyword arguments for :func:`augment_pair` (``max_rotation_deg``, ...); none
        given is the paper's augmentation.
    **kwargs
        ``workers``, ``use_multiprocessing``, ``max_queue_size`` of
        ``keras.utils.PyDataset``.

    Notes
    -----
    Item ``idx`` is ``(x, y)``: ``x`` ``(B, H, W, 1)`` float32 and ``y`` the dict
    ``{"y_l5": (B, H, W, 1), "y_l15": (B, H, W, 1)}`` float32, from
    :func:`lumbar_core.localize.confidence_targets`.
    """

    def __init__(
        self,
        images,
        centres,
        sigma2,
        *,
        batch_size=4,
        augment=False,
        seed=0,
        shuffle=None,
        augment_kwargs=None,
        **kwargs,
    ):
        images = _check_images(images)
        centres = np.asarray(centres, dtype=float)
        if centres.shape != (images.shape[0], 5, 2):
            raise ValueError(
                f"centres must have shape (N, 5, 2) = {(images.shape[0], 5, 2)}. Received: shape={centres.shape}"
            )
        sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=float), (images.shape[0],))
        if not np.all(sigma2 > 0):
            raise ValueError(f"sigma2 must be > 0 for every image. Received: sigma2={sigma2!r}")
        super().__init__(
            images.shape[0],
            batch_size=batch_size,
            augment=augment,
            seed=seed,
            shuffle=shuffle,
            augment_kwargs=augment_kwargs,
            **kwargs,
        )
        self.images, self.centres, self.sigma2 = images, centres, sigma2

    def __getitem__(self, idx):
        shape = self.images.shape[1:]
        xs, l5s, l15s = [], [], []
        for i in self._indices(idx):
            image, centres, sigma2 = self.images[i], self.centres[i], float(self.sigma2[i])
            if self.augment:
                image, moved, _ = augment_pair(
                    image, rng=self._rng(i), points=centres, **self.augment_kwargs
                )
                # Eq. 4 ties sigma^2 to the L5 height: a scaled or stretched spine gets
                # targets scaled with it, by how much the L1-L5 path grew.
                sigma2 *= _path_length(moved) / _path_length(centres)
                centres = moved
            y_l5, y_l15 = confidence_targets(centres, sigma2, shape)
            xs.append(image)
            l5s.append(y_l5)
            l15s.append(y_l15)
        return _stack(xs), {"y_l5": _stack(l5s), "y_l15": _stack(l15s)}


class SegmentationSequence(_AugmentedSequence):
    """Batches of images and one-hot label targets for an M-net or U-net.

    Parameters
    ----------
    images : (N, H, W) ndarray of float
        Patches ``Ip`` or whole images ``I``, values in [0, 1].
    labels : (N, H, W) ndarray of int or bool
        Class ids in ``[0, num_classes)`` (label map, not one-hot); bool masks are
        taken as 0/1.
    num_classes : int
        Number of classes, background included (2 for patches, 6 for whole images).
    batch_size : int, optional
        Images per batch. Default 4 (paper 3.2).
    augment, seed, shuffle, augment_kwargs, **kwargs
        As for :class:`HeatmapSequence`; labels follow the image with order-0
        interpolation.
    output_names : sequence of str, optional
        Model outputs that get the same one-hot target, e.g. ``model.output_names``.
        Default ``("fused",)``.

    Notes
    -----
    Item ``idx`` is ``(x, y)``: ``x`` ``(B, H, W, 1)`` float32 and ``y`` a dict with
    one ``(B, H, W, num_classes)`` float32 one-hot array per output name.
    """

    def __init__(
        self,
        images,
        labels,
        num_classes,
        *,
        batch_size=4,
        augment=False,
        seed=0,
        shuffle=None,
        augment_kwargs=None,
        output_names=("fused",),
        **kwargs,
    ):
        images = _check_images(images)
        labels = _check_labels(labels, images.shape, "of shape")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}). Received: min={labels.min()}, max={labels.max()}"
            )
        output_names = [output_names] if isinstance(output_names, str) else list(output_names)
        if not output_names:
            raise ValueError(
                f"output_names must name at least one output. Received: output_names={output_names!r}"
            )
        super().__init__(
            images.shape[0],
            batch_size=batch_size,
            augment=augment,
            seed=seed,
            shuffle=shuffle,
            augment_kwargs=augment_kwargs,
            **kwargs,
        )
        self.images, self.labels = images, labels
        self.num_classes = int(num_classes)
        self.output_names = output_names

    def __getitem__(self, idx):
        xs, ys = [], []
        for i in self._indices(idx):
            image, labels = self.images[i], self.labels[i]
            if self.augment:
                image, _, labels = augment_pair(image, rng=self._rng(i), labels=labels, **self.augment_kwargs)
            xs.append(image)
            ys.append(labels)
        x = _stack(xs)
        onehot = np.eye(self.num_classes, dtype=np.float32)[np.stack(ys)]
        return x, {name: onehot for name in self.output_names}


def train_model(
    model: keras.Model,
    train_data,
    val_data,
    *,
    loss,
    epochs: int,
    warmup_epochs: int,
    warmup_lr: float = 1e-5,
    lr: float = 1e-3,
    patience: int | None = 10,
    min_delta: float = 0.0,
    log=None,
    csv_log=None,
    seed: int = 0,
) -> pd.DataFrame:
    """Train a model with Adam, a learning-rate warm-up and early stopping (paper 3.2).

    Keras callbacks do the work: ``LearningRateScheduler`` (``warmup_lr`` for the first
    ``warmup_epochs`` epochs, then ``lr``), ``EarlyStopping(start_from_epoch=warmup_epochs,
    restore_best_weights=True)`` (patience counts only after the warm-up) and optionally
    ``CSVLogger``. The best epoch is the one of lowest validation loss over the whole run,
    warm-up included: the stopping rule starts from the warm-up's best.

    Parameters
    ----------
    model : keras.Model
        The model to train, in place; on return it holds the weights of the epoch with
        the lowest validation loss.
    train_data, val_data : keras.utils.PyDataset or tuple (x, y)
        Training and validation data, e.g. :class:`HeatmapSequence` /
        :class:`SegmentationSequence`, or in-memory ``(x, y)`` pairs (batched by 4 and
        shuffled by Keras).
    loss : loss, str or dict
        Anything ``model.compile(loss=...)`` takes, e.g.
        :func:`lumbar_core.models.posenet_loss` (Eq. 2, 3) or
        :func:`lumbar_core.models.mnet_loss` (Eq. 8).
    epochs : int
        Maximum number of epochs, warm-up included (paper: 700 Pose-net, 400 M-net).
    warmup_epochs : int
        Epochs at ``warmup_lr`` before switching to ``lr`` (paper: 50); no early
        stopping during them.
    warmup_lr : float, optional
        Learning rate of the warm-up. Default 1e-5.
    lr : float, optional
        Learning rate after the warm-up. Default 1e-3.
    patience : int or None, optional
        Stop after this many post-warm-up epochs without a validation loss below the
        best by more than ``min_delta``; None never stops early (every epoch runs, the
        best epoch's weights are kept all the same). Default 10.
    min_delta : float, optional
        Smallest decrease of the validation loss that counts as improvement. Default 0.
    log : text stream, optional
        Receives one line per epoch (epoch, loss, val_loss, lr, seconds). Default None.
    csv_log : str or os.PathLike, optional
        A CSV file that Keras' ``CSVLogger`` writes one row per epoch to while training
        runs (every logged loss and the learning rate). Default None.
    seed : int, optional
        Passed to :func:`set_seed` before training. Default 0.

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch run: ``epoch`` (from 1), ``loss``, ``val_loss``, ``lr``,
        ``seconds`` (wall time of the epoch) and ``best`` (True on the epoch whose
        weights the model keeps), then, for a model of several outputs, each output's
        training and validation loss (``<output>_loss``, ``val_<output>_loss``).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model. Received: model={model!r}")
    if val_data is None:
        raise ValueError("val_data is required: early stopping monitors the validation loss. Received: None")
    for name, value, low in (
        ("epochs", epochs, 1),
        ("warmup_epochs", warmup_epochs, 0),
        *((("patience", patience, 1),) if patience is not None else ()),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}")
    for name, value in (("warmup_lr", warmup_lr), ("lr", lr)):
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0. Received: min_delta={min_delta!r}")

    set_seed(seed)
    warmup_epochs, epochs = int(warmup_epochs), int(epochs)

    def schedule(epoch, current=None):
        return float(warmup_lr) if epoch < warmup_epochs else float(lr)

    # Best weights over every epoch, warm-up included (paper: "stopping when the validation
    # loss stops decreasing"; a warm-up epoch may be the best). It never stops the run.
    best_overall = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", min_delta=min_delta, patience=epochs + 1,
        restore_best_weights=True)
    # Patience counts only the epochs after the warm-up (start_from_epoch); without one,
    # a patience longer than the run never stops it.
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", min_delta=min_delta,
        patience=epochs + 1 if patience is None else int(patience),
        start_from_epoch=warmup_epochs, restore_best_weights=True)

    def end_of_warmup(epoch, logs):
        # After the warm-up the stopping rule starts from the warm-up's best, not from
        # scratch: an epoch after it improves only if it beats every epoch before.
        if epoch == warmup_epochs - 1 and best_overall.best_weights is not None:
            stopping.best = best_overall.best
            stopping.best_epoch = best_overall.best_epoch
            stopping.best_weights = best_overall.best_weights

    seconds = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.__setitem__(-1, seconds[-1] + time.perf_counter()))
    callbacks = [keras.callbacks.LearningRateScheduler(schedule), timer, best_overall,
                 keras.callbacks.LambdaCallback(on_epoch_end=end_of_warmup), stopping]
    if isinstance(train_data, _AugmentedSequence):
        # Epoch e of fit draws the sequence's epoch e, whatever on_epoch_end calls Keras
        # makes around it (see the module docstring). Callbacks run before the data
        # adapter starts fetching the epoch's batches.
        callbacks.insert(0, keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: train_data.set_epoch(epoch)))
    if log is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: _log_epoch(log, epoch, epochs, logs,
                                                        schedule(epoch), seconds[-1])))
    if csv_log is not None:
        callbacks.append(keras.callbacks.CSVLogger(str(csv_log)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule(0)), loss=loss)
    fit_kwargs = {"epochs": epochs, "callbacks": callbacks, "verbose": 0}
    if isinstance(train_data, tuple):
        x, y = train_data
        fit_kwargs.update(x=x, y=y, batch_size=4, shuffle=True)
    else:
        fit_kwargs.update(x=train_data)
    logged = model.fit(validation_data=val_data, **fit_kwargs).history
    # The weights kept: the stopping rule's best once the warm-up is over, else the
    # warm-up's best (both callbacks restore theirs at the end, in this order).
    kept = stopping if stopping.best_weights is not None else best_overall
    n = len(logged["loss"])
    fixed = ["epoch", "loss", "val_loss", "lr", "seconds"]
    # Each output's own loss too (e.g. ``y_l5_loss`` and ``val_y_l5_loss`` of the
    # Pose-net), so that a stage that does not learn shows in the history.
    outputs = sorted(key for key in logged
                     if key.endswith("_loss") and key not in ("loss", "val_loss"))
    history = pd.DataFrame({
        "epoch": np.arange(1, n + 1),
        "loss": np.asarray(logged["loss"], dtype=float),
        "val_loss": np.asarray(logged.get("val_loss", [np.nan] * n), dtype=float),
        "lr": [schedule(e) for e in range(n)],
        "seconds": seconds[:n],
        **{key: np.asarray(logged[key], dtype=float) for key in outputs},
    }, columns=fixed + outputs)
    best_epoch = kept.best_epoch + 1 if kept.best_weights is not None else None
    history.insert(len(fixed), "best", history["epoch"] == best_epoch)
    return history


def _log_epoch(log, epoch, epochs, logs, lr, seconds) -> None:
    """One line of the training log per epoch."""
    loss = float(logs.get("loss", np.nan))
    val_loss = float(logs.get("val_loss", np.nan))
    log.write(f"epoch {epoch + 1}/{epochs} loss {loss:.6g} val_loss {val_loss:.6g} "
              f"lr {lr:.3g} seconds {seconds:.1f}\n")
    log.flush()
