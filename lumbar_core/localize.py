"""Localisation of the five lumbar centres from Pose-net confidence maps (paper 2.2).

Three parts: the training targets of Pose-net (Eq. 4, 5), the peak selection that turns
the predicted map ``yL1-5`` into five centres (docs/method.md section 2, steps 1-6), and a check that
the five centres form a plausible lumbar spine (beyond the paper; see
``docs/plausibility.md``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["LEVELS", "PLAUSIBILITY", "check_plausibility", "confidence_targets", "l5_height",
           "l5_sigma2", "select_peaks"]

from . import LEVELS  # noqa: E402  (re-exported)


def l5_height(outline) -> float:
    """L5's height for Eq. 4: the mean of its anterior and posterior heights.

    Parameters
    ----------
    outline : (8, 2) array_like
        L5's 8-point outline ``(x, y)`` in ``I`` pixels, in the annotation's order:
        points 0 and 6 end the one wall, points 2 and 4 the other.

    Returns
    -------
    float
        ``(|p0 - p6| + |p2 - p4|) / 2`` in the outline's pixels.

    Examples
    --------
    >>> l5_height([[0, 0], [1, 0], [2, 0], [2, 2], [2, 4], [1, 4], [0, 6], [0, 3]])
    5.0
    """
    l5 = np.asarray(outline, dtype=np.float64)
    if l5.shape != (8, 2):
        raise ValueError(f"outline must be (8, 2) points; got shape {l5.shape}")
    return float((np.linalg.norm(l5[0] - l5[6]) + np.linalg.norm(l5[2] - l5[4])) / 2)


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
                 score_fraction: float = 0.5, min_peak: float = 0.05,
                 n_levels: int = 5) -> dict:
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
    min_peak : float
        A map whose maximum is below this holds no centre: the detection fails before
        step 1 (beyond the paper; default 0.05, 0 turns it off). The targets peak at 1;
        on a blank or featureless image the map stays under 0.01, and Otsu's threshold
        would split its noise into hundreds of candidates.
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
    if not min_peak >= 0:
        raise ValueError(f"min_peak must be >= 0; got {min_peak!r}")
    result = {"status": "ok", "otsu_threshold": None, "candidates": [], "centres": {}}
    if not np.all(np.isfinite(y)):
        result["status"] = "failed: confidence map holds non-finite values"
        return result
    if np.ptp(y) == 0:
        result["status"] = "failed: confidence map is constant"
        return result
    peak = float(y.max())
    if peak < min_peak:
        result["status"] = (f"failed: no vertebra found: the confidence map peaks at "
                            f"{peak:.3g}, below min_peak {min_peak:g}")
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


#: Default limits of :func:`check_plausibility` (the workflow's ``peaks: plausibility:``).
#: Real lateral films (100 annotated adults and children) have an L1-L5 centre line
#: 6.6 +- 7.8 degrees from vertical, consecutive centre spacings of 1.28-1.35 mean body
#: heights (SD 0.07-0.10) and an L1-L5 distance of 139 +- 20 mm (5th-95th percentile
#: 111-167 mm) on films 280-350 mm high; the limits lie well outside those ranges.
PLAUSIBILITY = {
    "max_tilt_deg": 40.0,          # L1-L5 line from the image vertical
    "max_spacing_ratio": 1.8,      # largest over smallest consecutive centre spacing
    "max_turn_deg": 60.0,          # direction change between successive segments
    "max_total_turn_deg": 80.0,    # between the L1-L2 and the L4-L5 segment
    "min_length_fraction": 0.12,   # L1-L5 distance over the film's height
    "max_length_fraction": 0.85,
    "min_length_mm": 75.0,         # L1-L5 distance when the pixel spacing is known
    "max_length_mm": 220.0,
}


def check_plausibility(centres, *, film_box=None, pixel_spacing_mm=None,
                       max_tilt_deg: float = PLAUSIBILITY["max_tilt_deg"],
                       max_spacing_ratio: float = PLAUSIBILITY["max_spacing_ratio"],
                       max_turn_deg: float = PLAUSIBILITY["max_turn_deg"],
                       max_total_turn_deg: float = PLAUSIBILITY["max_total_turn_deg"],
                       min_length_fraction: float = PLAUSIBILITY["min_length_fraction"],
                       max_length_fraction: float = PLAUSIBILITY["max_length_fraction"],
                       min_length_mm: float = PLAUSIBILITY["min_length_mm"],
                       max_length_mm: float = PLAUSIBILITY["max_length_mm"]) -> dict:
    """Whether five detected centres can be the L1-L5 of a lateral lumbar film.

    Checks, in this order (every failing check is reported):

    - ``order``: each centre lies below the one before (image rows grow downwards);
    - ``film``: every centre lies on the film, not in the padding around it;
    - ``tilt``: the L1-L5 line is at most ``max_tilt_deg`` from the image vertical
      (either way: films may face left or right);
    - ``spacing``: the four consecutive centre distances agree, the largest at most
      ``max_spacing_ratio`` times the smallest (a skipped or doubled level breaks it);
    - ``curvature``: successive segments turn by at most ``max_turn_deg``, the first and
      the last by at most ``max_total_turn_deg``;
    - ``length``: the L1-L5 distance against the film: a fraction of its height between
      the two ``*_length_fraction`` and, when the pixel spacing is known, a length in mm
      between the two ``*_length_mm``.

    Parameters
    ----------
    centres : (5, 2) array_like
        ``(x, y)`` of L1..L5 in pixels of one grid with square pixels (``Io``).
    film_box : (4,) array_like or None
        ``(x0, y0, x1, y1)``: the film's edges in the same pixels (the content of ``Io``);
        None skips the ``film`` and the fraction part of ``length``.
    pixel_spacing_mm : float or None
        Millimetres per pixel of that grid; None skips the mm part of ``length``.
    max_tilt_deg, max_spacing_ratio, max_turn_deg, max_total_turn_deg : float
        Limits; defaults in :data:`PLAUSIBILITY`.
    min_length_fraction, max_length_fraction, min_length_mm, max_length_mm : float
        Limits of the L1-L5 distance; defaults in :data:`PLAUSIBILITY`.

    Returns
    -------
    dict
        ``plausible`` (bool), ``implausible_reason`` ("" when plausible; the failing
        checks as ``"name: why"`` joined by ``"; "``) and ``measures``: ``tilt_deg``,
        ``spacing_ratio``, ``max_turn_deg``, ``total_turn_deg``, ``length_px``,
        ``length_fraction`` and ``length_mm`` (None where not measured).

    Examples
    --------
    >>> spine = [[700, 1000], [690, 1180], [700, 1360], [720, 1540], [750, 1710]]
    >>> check_plausibility(spine, film_box=(0, 0, 1536, 3072))["plausible"]
    True
    >>> row = [[100, 3000], [400, 3000.5], [700, 3001], [1000, 3001.5], [1300, 3002]]
    >>> check_plausibility(row)["implausible_reason"].split(":")[0]
    'tilt'
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.shape != (5, 2) or not np.all(np.isfinite(c)):
        raise ValueError(f"centres must be five finite (x, y) points; got {np.shape(centres)}")
    limits = {"max_tilt_deg": max_tilt_deg, "max_spacing_ratio": max_spacing_ratio,
              "max_turn_deg": max_turn_deg, "max_total_turn_deg": max_total_turn_deg,
              "min_length_fraction": min_length_fraction,
              "max_length_fraction": max_length_fraction,
              "min_length_mm": min_length_mm, "max_length_mm": max_length_mm}
    for name, value in limits.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number; got {value!r}")
    if max_spacing_ratio < 1:
        raise ValueError(f"max_spacing_ratio must be >= 1; got {max_spacing_ratio!r}")
    if pixel_spacing_mm is not None and not float(pixel_spacing_mm) > 0:
        raise ValueError(f"pixel_spacing_mm must be > 0 or None; got {pixel_spacing_mm!r}")
    reasons = []
    steps = np.diff(c, axis=0)
    lengths = np.hypot(steps[:, 0], steps[:, 1])
    if np.any(steps[:, 1] <= 0):
        k = int(np.argmax(steps[:, 1] <= 0))
        reasons.append(f"order: {LEVELS[k + 1]} is not below {LEVELS[k]}")
    if film_box is not None:
        x0, y0, x1, y1 = (float(v) for v in film_box)
        off = (c[:, 0] < x0) | (c[:, 0] > x1) | (c[:, 1] < y0) | (c[:, 1] > y1)
        if off.any():
            reasons.append("film: " + ", ".join(np.array(LEVELS)[off]) + " in the padding "
                           "outside the film")
    span = c[4] - c[0]
    length = float(np.hypot(*span))
    tilt = float(np.degrees(np.arctan2(abs(span[0]), span[1])))
    if tilt > max_tilt_deg:
        reasons.append(f"tilt: the L1-L5 line is {tilt:.1f} deg from vertical "
                       f"(at most {max_tilt_deg:g})")
    ratio = float(lengths.max() / lengths.min()) if lengths.min() > 0 else float("inf")
    if ratio > max_spacing_ratio:
        reasons.append(f"spacing: centre spacings from {lengths.min():.1f} to "
                       f"{lengths.max():.1f} px, ratio {ratio:.2f} (at most "
                       f"{max_spacing_ratio:g})")
    angles = np.arctan2(steps[:, 0], steps[:, 1])
    turns = np.degrees(np.abs((np.diff(angles) + np.pi) % (2 * np.pi) - np.pi))
    total = float(np.degrees(abs((angles[-1] - angles[0] + np.pi) % (2 * np.pi) - np.pi)))
    if turns.max() > max_turn_deg or total > max_total_turn_deg:
        reasons.append(f"curvature: turns up to {turns.max():.1f} deg between successive "
                       f"segments, {total:.1f} deg from L1-L2 to L4-L5 (at most "
                       f"{max_turn_deg:g} and {max_total_turn_deg:g})")
    fraction = mm = None
    if film_box is not None and y1 > y0:
        fraction = length / (y1 - y0)
        if not min_length_fraction <= fraction <= max_length_fraction:
            reasons.append(f"length: L1-L5 is {fraction:.2f} of the film's height "
                           f"(between {min_length_fraction:g} and {max_length_fraction:g})")
    if pixel_spacing_mm is not None:
        mm = length * float(pixel_spacing_mm)
        if not min_length_mm <= mm <= max_length_mm:
            reasons.append(f"length: L1-L5 is {mm:.0f} mm (between {min_length_mm:g} and "
                           f"{max_length_mm:g} mm)")
    return {"plausible": not reasons, "implausible_reason": "; ".join(reasons),
            "measures": {"tilt_deg": tilt, "spacing_ratio": ratio,
                         "max_turn_deg": float(turns.max()), "total_turn_deg": total,
                         "length_px": length, "length_fraction": fraction, "length_mm": mm}}
