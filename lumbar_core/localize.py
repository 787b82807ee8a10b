"""Localisation of the five lumbar centres from Pose-net confidence maps (paper 2.2).

Two parts: the training targets of Pose-net (Eq. 4, 5) and the peak selection that turns
the predicted map ``yL1-5`` into five centres (docs/method.md section 2, steps 1-6).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["LEVELS", "confidence_targets", "l5_sigma2", "select_peaks"]

from . import LEVELS  # noqa: E402  (re-exported)


def l5_sigma2(l5_height: float) -> float:
    """Eq. 4: ``sigma^2`` is a quarter of the L5 height in ``I`` pixels."""
    if not np.isfinite(l5_height) or l5_height <= 0:
        raise ValueError(f"l5_height must be a positive number of I pixels; got {l5_height}")
    return float(l5_height) / 4.0


def confidence_targets(centres, sigma2: float, shape=(512, 256)):
    """Pose-net targets ``yL5`` and ``yL1-5`` (Eq. 4, 5).

    ``y_Lk(x) = exp(-||x - p_k||^2 / sigma^2)`` and ``yL1-5 = max_k y_Lk``.

    Parameters
    ----------
    centres : (5, 2) array_like
        Centres ``(x, y)`` of L1..L5 in ``I`` pixels.
    sigma2 : float
        ``sigma^2`` in squared ``I`` pixels (see :func:`l5_sigma2`).
    shape : tuple of int
        ``(rows, cols)`` of the maps; default ``(512, 256)``.

    Returns
    -------
    y_l5, y_l15 : (rows, cols) float32 ndarrays, peak value 1 at the centres.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.shape != (5, 2):
        raise ValueError(f"centres must have shape (5, 2); got {centres.shape}")
    if not sigma2 > 0:
        raise ValueError(f"sigma2 must be > 0; got {sigma2}")
    rows, cols = shape
    yy = np.arange(rows, dtype=np.float64)[None, :, None]
    xx = np.arange(cols, dtype=np.float64)[None, None, :]
    # Separable: exp(-(dx^2 + dy^2)/s2) = exp(-dx^2/s2) * exp(-dy^2/s2).
    gy = np.exp(-((yy - centres[:, 1, None, None]) ** 2) / sigma2)
    gx = np.exp(-((xx - centres[:, 0, None, None]) ** 2) / sigma2)
    maps = gy * gx
    return maps[4].astype(np.float32), maps.max(axis=0).astype(np.float32)


def select_peaks(y_l15, *, window: int = 31, min_distance: int = 3,
                 score_fraction: float = 0.5, n_levels: int = 5) -> dict:
    """Choose the five lumbar centres from ``yL1-5`` (docs/method.md section 2, steps 1-6).

    Parameters
    ----------
    y_l15 : (M, N) ndarray
        Predicted confidence map of all five centres, in ``I`` pixels.
    window : int
        Side of the square window whose mean scores a candidate; default 31 (paper).
    min_distance : int
        Smallest distance in pixels between two local maxima; default 3. Plateaus and
        pairs of maxima closer than this count once.
    score_fraction : float
        Candidates scoring below this fraction of the mean score are dropped; default 0.5.
    n_levels : int
        Number of centres to select; default 5 (L1..L5).

    Returns
    -------
    dict
        ``status`` ("ok" or "failed: ..."), ``otsu_threshold``, ``candidates``: list of
        ``{"x", "y", "value", "score", "kept"}`` sorted from the bottom up, and
        ``centres``: ``{"L1": [x, y], ...}`` in the map's pixels (empty when failed).
    """
    y = np.asarray(y_l15, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y_l15 must be 2-D; got shape {y.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number; got {window}")
    result = {"status": "ok", "otsu_threshold": None, "candidates": [], "centres": {}}
    if not np.all(np.isfinite(y)):
        result["status"] = "failed: confidence map holds non-finite values"
        return result
    if np.ptp(y) == 0:
        result["status"] = "failed: confidence map is constant"
        return result
    # Step 1: Otsu threshold on yL1-5; pixels below it are set to 0.
    threshold = float(threshold_otsu(y))
    result["otsu_threshold"] = threshold
    kept_map = np.where(y >= threshold, y, 0.0)
    # Step 2: local maxima of what remains are the candidates. Imported here: it loads
    # scipy.spatial (about 0.1 s), which the other per-image jobs importing this module
    # for LEVELS never use.
    from skimage.feature import peak_local_max

    peaks = peak_local_max(kept_map, min_distance=min_distance, threshold_abs=threshold,
                           exclude_border=False)
    if len(peaks) == 0:
        result["status"] = "failed: no peak above the Otsu threshold"
        return result
    # Step 3: score = mean of yL1-5 (not the thresholded map) in the window x window box
    # centred on the candidate. Near the border the mean is over the part of the window
    # inside the map, so a peak touching the border is not penalised for where the image ends.
    box_sum = ndimage.uniform_filter(y, size=window, mode="constant", cval=0.0)
    box_mean = box_sum / ndimage.uniform_filter(np.ones_like(y), size=window, mode="constant")
    scores = box_mean[peaks[:, 0], peaks[:, 1]]
    # Step 4: drop candidates scoring below half the mean score.
    keep = scores >= score_fraction * scores.mean()
    order = np.lexsort((peaks[:, 1], -peaks[:, 0]))  # bottom (largest row) first
    result["candidates"] = [
        {"x": float(peaks[k, 1]), "y": float(peaks[k, 0]), "value": float(y[tuple(peaks[k])]),
         "score": float(scores[k]), "kept": bool(keep[k])}
        for k in order
    ]
    kept = [c for c in result["candidates"] if c["kept"]]
    # Step 6: fewer than five kept candidates: the detection failed (recorded, not raised).
    if len(kept) < n_levels:
        result["status"] = f"failed: fewer than {n_levels} peaks ({len(kept)} kept)"
        return result
    # Step 5: take five candidates starting from the bottom: L5, L4, ..., L1.
    levels = LEVELS[:n_levels] if n_levels == 5 else tuple(f"L{k + 1}" for k in range(n_levels))
    for name, cand in zip(reversed(levels), kept[:n_levels]):
        result["centres"][name] = [cand["x"], cand["y"]]
    result["centres"] = {name: result["centres"][name] for name in levels}
    return result
