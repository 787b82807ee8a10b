"""Per-vertebra crops (paper 2.3, Eq. 6) and pasting patch masks back.

A vertebra's patch is a square in ``Io`` centred on its centre, of side three times the
local vertical spacing of the centres (Eq. 6), resampled to 224 x 224 (``Ip``). Boxes
that leave the image are padded with zeros, never shifted, so that the patch centre is
always the vertebra's centre. Patch pixel ``(u, v)`` of a box with centre ``(cx, cy)``
and side ``s`` lies at ``Io`` point ``(cx - s/2 + (u + 0.5) s / P, cy - s/2 + (v + 0.5) s / P)``
with ``P`` the patch size: pixel-centre aligned like :class:`lumbar_core.preprocess.Geometry`.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage
from skimage import draw, measure

from .preprocess import Geometry, resize_image

__all__ = [
    "PATCH_SIZE",
    "eq6_sides",
    "crop_boxes",
    "patch_to_io",
    "io_to_patch",
    "extract_patch",
    "extract_patches",
    "keep_centre_component",
    "mask_signed_distance",
    "paste_masks",
    "outlines_to_labels",
    "stable_seed",
    "jittered_patches",
    "paste_patch_masks",
    "patch_probabilities_to_masks",
    "whole_probabilities_to_masks",
]

PATCH_SIZE = 224


def eq6_sides(centres_io) -> np.ndarray:
    """Box sides of Eq. 6 from the five centres in ``Io``.

    ``s_1 = 3 |(po_1 - po_2)_y|``; ``s_j = 3/2 (|(po_{j-1} - po_j)_y| + |(po_j - po_{j+1})_y|)``
    for j = 2, 3, 4; ``s_5 = 3 |(po_4 - po_5)_y|``.

    Parameters
    ----------
    centres_io : (5, 2) array_like
        Centres ``(x, y)`` of L1..L5 in ``Io`` pixels.

    Returns
    -------
    (5,) float64 ndarray of sides in ``Io`` pixels.

    Examples
    --------
    >>> eq6_sides([[0, 100], [0, 200], [0, 320], [0, 440], [0, 580]]).tolist()
    [300.0, 330.0, 360.0, 390.0, 420.0]
    """
    c = np.asarray(centres_io, dtype=np.float64)
    if c.shape != (5, 2) or not np.all(np.isfinite(c)):
        raise ValueError(f"centres_io must be five finite (x, y) points; got shape {c.shape}")
    dy = np.abs(np.diff(c[:, 1]))  # |y_j - y_{j+1}|, j = 1..4
    sides = np.empty(5)
    sides[0] = 3.0 * dy[0]
    sides[1:4] = 1.5 * (dy[:-1] + dy[1:])
    sides[4] = 3.0 * dy[-1]
    return sides


def crop_boxes(centres_io, *, min_side: float = 32.0) -> np.ndarray:
    """Eq. 6 boxes as rows ``(cx, cy, side)`` in ``Io`` pixels.

    ``min_side`` (default 32) guards against degenerate boxes when two predicted centres
    share a row; a real spine never comes near it.
    """
    c = np.asarray(centres_io, dtype=np.float64)
    sides = np.maximum(eq6_sides(c), float(min_side))
    return np.column_stack([c, sides])


def patch_to_io(points, box, *, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Map patch points ``(u, v)`` to ``Io`` points ``(x, y)`` for ``box = (cx, cy, side)``."""
    cx, cy, side = (float(v) for v in box)
    pts = np.asarray(points, dtype=np.float64)
    origin = np.array([cx, cy]) - side / 2.0
    return origin + (pts + 0.5) * (side / patch_size)


def io_to_patch(points, box, *, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Inverse of :func:`patch_to_io`."""
    cx, cy, side = (float(v) for v in box)
    pts = np.asarray(points, dtype=np.float64)
    origin = np.array([cx, cy]) - side / 2.0
    return (pts - origin) * (patch_size / side) - 0.5


def extract_patch(image, box, *, patch_size: int = PATCH_SIZE, order: int = 1) -> np.ndarray:
    """Resample the Eq. 6 box of ``image`` (``Io``) to a ``patch_size`` square.

    Pixels outside the image are 0 (padding, never a shift). For ``order >= 1`` the region
    is low-pass filtered first (sigma = (factor - 1) / 2 for a shrink by ``factor``) so that
    the patch is not aliased; ``order=0`` samples label images by nearest neighbour.

    Parameters
    ----------
    image : (M, N) ndarray
        ``Io`` image or label mask.
    box : (3,) array_like
        ``(cx, cy, side)`` in ``Io`` pixels.

    Returns
    -------
    (patch_size, patch_size) ndarray, float32 (``order >= 1``) or the image's dtype.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D; got shape {image.shape}")
    cx, cy, side = (float(v) for v in box)
    if not side > 0:
        raise ValueError(f"box side must be > 0; got {side}")
    u = np.arange(patch_size, dtype=np.float64)
    xs = patch_to_io(np.column_stack([u, u]), box, patch_size=patch_size)
    # Work on the integer region the box covers, zero-padded where it leaves the image.
    margin = 4 + int(np.ceil(side / patch_size))
    r0, r1 = int(np.floor(xs[:, 1].min())) - margin, int(np.ceil(xs[:, 1].max())) + margin + 1
    c0, c1 = int(np.floor(xs[:, 0].min())) - margin, int(np.ceil(xs[:, 0].max())) + margin + 1
    region = np.zeros((r1 - r0, c1 - c0), dtype=np.float32 if order else image.dtype)
    sr0, sr1 = max(r0, 0), min(r1, image.shape[0])
    sc0, sc1 = max(c0, 0), min(c1, image.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        region[sr0 - r0:sr1 - r0, sc0 - c0:sc1 - c0] = image[sr0:sr1, sc0:sc1]
    factor = side / patch_size
    if order >= 1 and factor > 1:
        region = ndimage.gaussian_filter(region, (factor - 1.0) / 2.0)
    rows = xs[:, 1] - r0
    cols = xs[:, 0] - c0
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    out = ndimage.map_coordinates(region, [grid_r, grid_c], order=order, mode="constant", cval=0)
    return out.astype(np.float32 if order else image.dtype, copy=False)


def extract_patches(image, boxes, *, patch_size: int = PATCH_SIZE, order: int = 1) -> np.ndarray:
    """:func:`extract_patch` for each row of ``boxes``; returns ``(K, P, P)``."""
    return np.stack([extract_patch(image, b, patch_size=patch_size, order=order) for b in boxes])


def keep_centre_component(mask) -> np.ndarray:
    """Keep the 8-connected component of ``mask`` that contains the patch centre.

    Decision (docs/method.md section 3): the segmentation of vertebra j is the component of its patch
    prediction that contains the patch centre (a patch also shows the neighbours). When the
    centre pixel itself is background (a localisation error, or a hole), the component
    nearest to the centre is kept instead.

    Parameters
    ----------
    mask : (M, N) bool ndarray

    Returns
    -------
    (M, N) bool ndarray (all False when ``mask`` is empty).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D; got shape {mask.shape}")
    labels = measure.label(mask, connectivity=2)
    if labels.max() == 0:
        return np.zeros_like(mask)
    cr, cc = (mask.shape[0] - 1) / 2.0, (mask.shape[1] - 1) / 2.0
    centre_label = labels[int(round(cr)), int(round(cc))]
    if centre_label == 0:
        rows, cols = np.nonzero(labels)
        nearest = np.argmin((rows - cr) ** 2 + (cols - cc) ** 2)
        centre_label = labels[rows[nearest], cols[nearest]]
    return labels == centre_label


def mask_signed_distance(mask) -> np.ndarray:
    """Signed distance of a binary patch mask, positive inside, zero on its outline.

    Each pixel gets the Euclidean distance from its centre to the nearest pixel centre
    of the other side, less half a pixel, signed positive inside: the bilinear
    interpolation of the result crosses 0 half way between an inside and an outside
    pixel, so the zero level set is the mask's own outline (see :func:`paste_masks`).

    Parameters
    ----------
    mask : (M, N) bool ndarray

    Returns
    -------
    (M, N) float64 ndarray, in pixels of ``mask``. An empty mask is ``-inf`` everywhere,
    a full one ``+inf``.

    Examples
    --------
    >>> mask_signed_distance([[0, 1, 1, 1, 0]]).tolist()
    [[-0.5, 0.5, 1.5, 0.5, -0.5]]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D; got shape {mask.shape}")
    if not mask.any():
        return np.full(mask.shape, -np.inf)
    if mask.all():
        return np.full(mask.shape, np.inf)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside)


def paste_masks(patch_masks, boxes, out_shape, *, scale=(1.0, 1.0)) -> np.ndarray:
    """Paste binary per-vertebra patch masks back into a label image.

    The one paste rule of the workflow, for every binary patch mask whatever method made
    it (network, level set): each output pixel inside a box samples the patch's
    :func:`mask_signed_distance` bilinearly and belongs to the vertebra where that
    distance is positive. Where the masks of two boxes overlap, the pixel goes to the
    patch in which it lies deeper, the signed distance measured in ``Io`` pixels, so the
    result does not depend on the order of the patches (exact ties go to the lower
    label, the upper vertebra when patches are in L1..L5 order). The
    pasted mask therefore depends only on the binary patch masks and the boxes: an
    unchanged mask pastes identically, and a mask grown by ``k`` patch pixels pastes
    ``k`` times the box's scale (``side / P`` times ``scale``) larger.

    Parameters
    ----------
    patch_masks : (K, P, P) array_like of bool
        Mask of vertebra ``k + 1`` in patch ``k`` (its centre component).
    boxes : (K, 3) array_like
        ``(cx, cy, side)`` of each patch in ``Io`` pixels.
    out_shape : tuple of int
        ``(rows, cols)`` of the output grid.
    scale : (2,) array_like, optional
        ``(sx, sy)`` from ``Io`` to the output grid. Default ``(1, 1)`` pastes into
        ``Io``; ``Geometry.scale("io", "input")`` pastes into the input image's grid.

    Returns
    -------
    (rows, cols) uint8 ndarray
        0 background, ``k + 1`` for patch ``k``.

    Notes
    -----
    Output pixel ``(c, r)`` lies at ``Io`` point ``((c + 0.5) / sx - 0.5, (r + 0.5) / sy
    - 0.5)`` and at patch point :func:`io_to_patch` of it; points within half a patch
    pixel outside the patch grid take the value of the nearest patch pixel. An earlier
    rule pasted the network's probabilities and thresholded them at 0.5, and refined
    masks as ``0.5 + 0.5 p``: the same mask then pasted differently by method, and
    pixels a refinement added were lost.

    Examples
    --------
    >>> mask = np.zeros((1, 4, 4), bool)
    >>> mask[0, 1:3, 1:3] = True
    >>> labels = paste_masks(mask, [[3.5, 3.5, 8.0]], (8, 8))  # 2 Io px per patch px
    >>> np.argwhere(labels).min(axis=0).tolist(), np.argwhere(labels).max(axis=0).tolist()
    ([2, 2], [5, 5])
    """
    masks = np.asarray(patch_masks)
    boxes = np.asarray(boxes, dtype=np.float64)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2] or boxes.shape != (len(masks), 3):
        raise ValueError(f"patch_masks must be (K, P, P) with one box (cx, cy, side) each; "
                         f"got {masks.shape} and {boxes.shape}")
    if masks.dtype != bool and not np.all((masks == 0) | (masks == 1)):
        raise ValueError("patch_masks must be binary (bool or 0/1); got values "
                         f"{np.unique(masks)[:5].tolist()}")
    if not (np.all(np.isfinite(boxes)) and np.all(boxes[:, 2] > 0)):
        raise ValueError(f"boxes must be finite with sides > 0; got {boxes.tolist()}")
    sx, sy = (float(v) for v in scale)
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale must be two numbers > 0; got {scale}")
    patch_size = masks.shape[1]
    labels = np.zeros(out_shape, dtype=np.uint8)
    depth = np.zeros(out_shape, dtype=np.float64)  # winning signed distance, Io px
    for k, (mask, box) in enumerate(zip(masks.astype(bool), boxes)):
        if not mask.any():
            continue
        cx, cy, side = box
        # Output pixels whose Io position lies inside the box.
        x0, x1 = (cx - side / 2 + 0.5) * sx - 0.5, (cx + side / 2 + 0.5) * sx - 0.5
        y0, y1 = (cy - side / 2 + 0.5) * sy - 0.5, (cy + side / 2 + 0.5) * sy - 0.5
        c0, c1 = max(int(np.ceil(x0)), 0), min(int(np.floor(x1)) + 1, out_shape[1])
        r0, r1 = max(int(np.ceil(y0)), 0), min(int(np.floor(y1)) + 1, out_shape[0])
        if c1 <= c0 or r1 <= r0:
            continue
        cols = (np.arange(c0, c1) + 0.5) / sx - 0.5
        rows = (np.arange(r0, r1) + 0.5) / sy - 0.5
        u = io_to_patch(np.column_stack([cols, np.zeros_like(cols)]), box, patch_size=patch_size)[:, 0]
        v = io_to_patch(np.column_stack([np.zeros_like(rows), rows]), box, patch_size=patch_size)[:, 1]
        # Only output pixels near the mask can sample a positive distance, so only they
        # are sampled: each sampled value is the same as over the whole box.
        (ra, rb), (ca, cb) = _near_mask(v, mask.any(axis=1)), _near_mask(u, mask.any(axis=0))
        r0, r1, c0, c1, v, u = r0 + ra, r0 + rb, c0 + ca, c0 + cb, v[ra:rb], u[ca:cb]
        if rb <= ra or cb <= ca:
            continue
        grid_v, grid_u = np.meshgrid(v, u, indexing="ij")
        # A full mask has no outline: every pixel of its box is inside, at depth side.
        distance = np.clip(mask_signed_distance(mask), -patch_size, patch_size)
        sampled = ndimage.map_coordinates(distance, [grid_v, grid_u], order=1, mode="nearest")
        sampled *= side / patch_size
        view_depth = depth[r0:r1, c0:c1]
        view_labels = labels[r0:r1, c0:c1]
        wins = (sampled > 0) & ((sampled > view_depth) | ((sampled == view_depth) & (view_labels > k + 1)))
        view_depth[wins] = sampled[wins]
        view_labels[wins] = k + 1
    return labels


def _near_mask(coords, inside) -> tuple[int, int]:
    """The index range of increasing patch coordinates that can sample inside a mask.

    Bilinear sampling at ``t`` reads the patch pixels ``floor(t)`` and ``floor(t) + 1``
    (clamped to the patch), so a point more than one pixel before the first pixel
    ``inside`` (along this axis) or after the last reads only outside pixels, whose
    signed distance is negative: it cannot sample a positive one.

    Parameters
    ----------
    coords : (M,) ndarray
        Patch coordinates of output pixels along one axis, increasing.
    inside : (P,) ndarray of bool
        Whether the mask has a pixel in each patch row (or column); at least one.

    Returns
    -------
    (start, stop) : the slice of ``coords`` to sample.
    """
    first, last = np.flatnonzero(inside)[[0, -1]]
    return (int(np.searchsorted(coords, first - 1.0, "left")),
            int(np.searchsorted(coords, last + 1.0, "right")))


def outlines_to_labels(outlines, shape) -> np.ndarray:
    """Filled outlines as a label image, 1..K in the order given.

    Parameters
    ----------
    outlines : sequence of (N, 2) array_like
        Polygons in ``(x, y)`` pixel coordinates, e.g. the 8-point outlines of L1..L5.
    shape : tuple of int
        ``(rows, cols)`` of the label image.

    Returns
    -------
    (rows, cols) uint8 ndarray
        0 outside every outline; ``k + 1`` inside outline ``k`` (a later outline wins
        where two overlap). Filled by :func:`skimage.draw.polygon`.

    Examples
    --------
    >>> outlines_to_labels([[[1, 1], [3, 1], [3, 3], [1, 3]]], (5, 5))[2]
    array([0, 1, 1, 1, 0], dtype=uint8)
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for k, outline in enumerate(outlines):
        outline = np.asarray(outline)
        rr, cc = draw.polygon(outline[:, 1], outline[:, 0], shape=shape)
        labels[rr, cc] = k + 1
    return labels


def stable_seed(seed: int, key: str) -> int:
    """A per-image seed that depends only on ``seed`` and ``key`` (e.g. the image id).

    The random jitter of an image is then the same whatever the cohort and the order
    in which the jobs run.

    Examples
    --------
    >>> stable_seed(0, "a") == stable_seed(0, "a") != stable_seed(1, "a")
    True
    """
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % 2**32


def jittered_patches(image, labels, centres_io, *, rng, patch_size: int, jitter_px: float,
                     copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Training patches from centres perturbed by Gaussian noise, with their targets.

    As the paper does, the centres are perturbed (std ``jitter_px`` in ``Io`` pixels)
    to mimic test-time localisation error, and the Eq. 6 boxes follow the perturbed
    centres. The target of each patch is the mask of its centre vertebra only (see
    ``docs/method.md``, section 3).

    Parameters
    ----------
    image : (M, N) ndarray
        ``Io`` in [0, 1].
    labels : (M, N) ndarray of int
        Ground-truth label image in ``Io`` (1..5 for L1..L5).
    centres_io : (5, 2) array_like
        Ground-truth centres ``(x, y)`` in ``Io``.
    rng : numpy.random.Generator
        Source of the noise; one draw of shape (5, 2) per copy, in order.
    patch_size : int
        Side of the patches.
    jitter_px : float
        Std of the noise, ``Io`` pixels.
    copies : int
        Number of perturbed draws.

    Returns
    -------
    patches : (5 * copies, P, P) float16 ndarray
    masks : (5 * copies, P, P) uint8 ndarray
        0/1 mask of the centre vertebra of each patch.
    """
    centres = np.asarray(centres_io)
    patches, masks = [], []
    for _ in range(copies):
        jitter = rng.normal(0.0, jitter_px, size=centres.shape)
        boxes = crop_boxes(centres + jitter)
        patches.append(extract_patches(image, boxes, patch_size=patch_size))
        label_patches = extract_patches(labels, boxes, patch_size=patch_size, order=0)
        masks.append(label_patches == np.arange(1, 6)[:, None, None])
    return np.concatenate(patches).astype(np.float16), np.concatenate(masks).astype(np.uint8)


def paste_patch_masks(patch_masks, boxes, geometry: Geometry) -> dict:
    """Binary patch masks pasted back into ``Io`` and the input grid by one rule.

    Every method's patch masks (network or level set) go through here, so that an
    unchanged mask pastes identically whichever method produced it
    (:func:`paste_masks`).

    Parameters
    ----------
    patch_masks : (5, P, P) bool ndarray
        Mask of the centre vertebra in each patch.
    boxes : (5, 3) ndarray
        Eq. 6 boxes ``(cx, cy, side)`` in ``Io``.
    geometry : Geometry
        The image's geometry; gives both grids and the scale between them.

    Returns
    -------
    dict with ``labels_io`` and ``labels_input``, uint8 label masks 0..5.
    """
    return {
        "labels_io": paste_masks(patch_masks, boxes, geometry.io_shape),
        "labels_input": paste_masks(patch_masks, geometry.paste_boxes(boxes, "input"),
                                    geometry.input_shape, scale=geometry.scale("io", "input")),
    }


def patch_probabilities_to_masks(foreground, boxes, geometry: Geometry, *,
                                 threshold: float = 0.5) -> dict:
    """Centre component of each patch's thresholded prediction, pasted back.

    Parameters
    ----------
    foreground : (5, P, P) ndarray
        Foreground probability of the centre vertebra in each patch.
    boxes : (5, 3) ndarray
        Eq. 6 boxes ``(cx, cy, side)`` in ``Io``.
    geometry : Geometry
        The image's geometry.
    threshold : float, optional
        Probability above which a patch pixel is foreground; default 0.5.

    Returns
    -------
    dict with ``probs`` (the probabilities restricted to the kept components, float16),
    ``masks`` (the kept components, uint8 0/1, the masks the level set refines) and
    ``labels_io``, ``labels_input`` from :func:`paste_patch_masks`.
    """
    masks = np.stack([keep_centre_component(p > threshold) for p in foreground])
    return {"probs": np.where(masks, foreground, 0.0).astype(np.float16),
            "masks": masks.astype(np.uint8), **paste_patch_masks(masks, boxes, geometry)}


def whole_probabilities_to_masks(probs, geometry: Geometry) -> dict:
    """Whole-image class probabilities on ``I`` upsampled to ``Io`` and input labels.

    Resampled by the exact mapping of ``geometry`` (padding of ``Io`` and ``I`` included);
    maps on a coarser grid than ``I`` (a network that pools its input) are first resized
    to ``I``, which they cover the whole of.

    Parameters
    ----------
    probs : (H, W, C) array_like
        Class probabilities (class 0 background, 1..5 L1..L5) on ``I`` or a coarser grid.
    geometry : Geometry
        The image's geometry.

    Returns
    -------
    dict with ``labels_io`` and ``labels_input``, uint8 label masks (the arg-max class).
    """
    probs = np.asarray(probs, dtype=np.float32)
    channels = [probs[..., c] for c in range(probs.shape[-1])]
    if probs.shape[:2] != geometry.i_shape:
        channels = [resize_image(c, geometry.i_shape, order=1) for c in channels]
    out = {}
    for space in ("io", "input"):
        up = np.stack([geometry.resample(c, "i", space, order=1) for c in channels])
        out[f"labels_{space}"] = np.argmax(up, axis=0).astype(np.uint8)
    return out
