"""Vertebral morphometry and Genant grading of compression fractures (docs/method.md section 7).

The paper stops at the segmentation and names compression fracture evaluation as its
motive; this module goes the last step. From each vertebral body mask it measures the
six morphometry points (upper and lower end-plate points at the anterior, middle and
posterior positions of the body) and the anterior, middle and posterior heights
``ha, hm, hp`` (:func:`vertebral_heights`), grades them with Genant's semi-quantitative
method [1]_ (:func:`genant_grade`), does both for a whole L1-L5 label mask
(:func:`measure_spine`) and compares grades with a reference by weighted kappa [2]_
(:func:`agreement`).

Every body is measured in its own frame (:func:`body_axis`): the lumbar spine is curved,
so its bodies are rotated by tens of degrees in the image. Which image side is anterior
cannot be told from a body mask alone; it comes from the caller or from the lordosis of
the whole lumbar spine (:func:`spine_anterior_direction`).

References
----------
.. [1] H. K. Genant, C. Y. Wu, C. van Kuijk, M. C. Nevitt, "Vertebral fracture
       assessment using a semiquantitative technique", Journal of Bone and Mineral
       Research 8(9), 1137-1148, 1993. :doi:`10.1002/jbmr.5650080915`
.. [2] J. Cohen, "Weighted kappa: nominal scale agreement with provision for scaled
       disagreement or partial credit", Psychological Bulletin 70(4), 213-220, 1968.
       :doi:`10.1037/h0026256`
.. [3] P. K. Sen, "Estimates of the regression coefficient based on Kendall's tau",
       Journal of the American Statistical Association 63(324), 1379-1389, 1968.
       :doi:`10.1080/01621459.1968.10480934`
.. [4] R. Eastell, S. L. Cedel, H. W. Wahner, B. L. Riggs, L. J. Melton III,
       "Classification of vertebral fractures", Journal of Bone and Mineral Research
       6(3), 207-215, 1991. :doi:`10.1002/jbmr.5650060302`
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import theilslopes
from skimage.measure import label as _label_components
from skimage.measure import regionprops

__all__ = [
    "GRADE_BOUNDS",
    "LEVELS",
    "POINT_NAMES",
    "agreement",
    "agreement_summary",
    "body_axis",
    "genant_grade",
    "heights_from_outline",
    "measure_spine",
    "spine_anterior_direction",
    "MIN_LORDOSIS_BULGE",
    "MIN_S1_TILT",
    "vertebral_heights",
]

GRADE_BOUNDS = (0.20, 0.25, 0.40)
"""Height reductions that open Genant grades 1 (mild), 2 (moderate) and 3 (severe)."""

from . import LEVELS  # noqa: E402  (re-exported)

POINT_NAMES = (
    "upper_anterior",
    "upper_mid",
    "upper_posterior",
    "lower_posterior",
    "lower_mid",
    "lower_anterior",
)
"""The six morphometry points, in the order of the 8-point outline's indices 0,1,2,4,5,6."""

_TYPES = ("wedge", "biconcave", "crush")
_MIN_PIXELS = 64  # smaller masks are not measured
_MIN_EXTENT_PX = 8.0  # nor bodies less deep or less tall than this
_STRIP = 0.2  # width of the fits on either side of a mid point, fraction of the depth
_CORNER_STRIP = 0.35  # width of the plate and wall fits next to a corner, fraction
_ISOTROPIC = 1.2  # eigenvalue ratio below which the principal axes are not trusted
_DECIMALS = 9  # reductions are rounded to this before grading


# ----------------------------------------------------------------------------- inputs


def _anterior_vector(anterior) -> np.ndarray | None:
    if anterior is None:
        return None
    if isinstance(anterior, str):
        if anterior == "left":
            return np.array([-1.0, 0.0])
        if anterior == "right":
            return np.array([1.0, 0.0])
        raise ValueError(f"anterior must be 'left', 'right', a 2-vector or None; got {anterior!r}")
    vec = np.asarray(anterior, dtype=float)
    norm = float(np.hypot(*vec)) if vec.shape == (2,) else 0.0
    if vec.shape != (2,) or not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"anterior must be 'left', 'right', a 2-vector or None; got {anterior!r}")
    return vec / norm


def _spacing(spacing_mm) -> np.ndarray | None:
    if spacing_mm is None:
        return None
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(
            f"spacing_mm must be (row_mm, col_mm), two positive numbers; got {spacing_mm!r}"
        )
    return spacing


def _component(mask):
    """Largest 8-connected component of a 2-D mask: its pixel coordinates and image."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array; got shape {mask.shape}")
    labels = _label_components(mask.astype(bool, copy=False), connectivity=2)
    props = regionprops(labels)
    if not props:
        raise ValueError("mask is empty: no vertebral body to measure")
    prop = max(props, key=lambda p: p.area)
    if prop.area < _MIN_PIXELS:
        raise ValueError(
            f"mask's largest component has {int(prop.area)} pixels; at least {_MIN_PIXELS} "
            "are needed to measure a vertebral body"
        )
    return prop


# ------------------------------------------------------------------- the body's frame


def _theil_sen(x, y, lo, hi) -> tuple[float, float]:
    """Line ``y = intercept + slope * x`` through the points with x in [lo, hi].

    Theil-Sen regression [3]_, then least squares on the points within 1 px of it.
    """
    keep = (x >= lo) & (x <= hi) & np.isfinite(y)
    if np.count_nonzero(keep) < 3:
        raise ValueError(
            "vertebral body too small or too irregular to fit its end plates and walls"
        )
    x, y = x[keep], y[keep]
    res = theilslopes(y, x)
    intercept, slope = float(res.intercept), float(res.slope)
    # Least squares on the points within a pixel of the robust line: Theil-Sen's
    # robustness to stray pixels with the precision of least squares on a staircase edge.
    # Only where most points agree with it: a kinked profile keeps the robust line.
    inliers = np.abs(y - (intercept + slope * x)) <= 1.0
    if np.count_nonzero(inliers) >= max(3, len(x) // 2) and np.ptp(x[inliers]) > 0:
        slope, intercept = np.polyfit(x[inliers], y[inliers], 1)
    return float(intercept), float(slope)


class _Frame:
    """A body resampled on a grid of its own frame: u along ``ap``, v along ``up``."""

    def __init__(self, prop, centre, ap, up):
        self.centre, self.ap, self.up = centre, ap, up
        rows, cols = prop.coords[:, 0].astype(float), prop.coords[:, 1].astype(float)
        rel_x, rel_y = cols - centre[0], rows - centre[1]
        u_px = rel_x * ap[0] + rel_y * ap[1]
        v_px = rel_x * up[0] + rel_y * up[1]
        extent = max(np.ptp(u_px), np.ptp(v_px))
        self.step = step = max(0.25, extent / 400.0)
        self.u = np.arange(u_px.min() - 2.0, u_px.max() + 2.0 + step, step)
        self.v = np.arange(v_px.min() - 2.0, v_px.max() + 2.0 + step, step)
        uu, vv = np.meshgrid(self.u, self.v)
        x = centre[0] + uu * ap[0] + vv * up[0]
        y = centre[1] + uu * ap[1] + vv * up[1]
        min_row, min_col = prop.bbox[0] - 1, prop.bbox[1] - 1
        # The 0.5 level of the bilinear interpolant lies half way between the last pixel
        # centre inside and the first outside: an unbiased sub-pixel boundary. The one
        # pixel of padding keeps that true at the edges of the component's box.
        image = np.pad(prop.image.astype(float), 1)
        grid = ndimage.map_coordinates(image, [y - min_row, x - min_col], order=1, cval=0.0)
        body = grid >= 0.5
        half = step / 2.0
        nv, nu = body.shape
        cols_any, rows_any = body.any(axis=0), body.any(axis=1)
        first_v = np.argmax(body, axis=0)
        last_v = nv - 1 - np.argmax(body[::-1], axis=0)
        first_u = np.argmax(body, axis=1)
        last_u = nu - 1 - np.argmax(body[:, ::-1], axis=1)
        self.top = np.where(cols_any, self.v[last_v] + half, np.nan)
        self.bottom = np.where(cols_any, self.v[first_v] - half, np.nan)
        self.front = np.where(rows_any, self.u[last_u] + half, np.nan)
        self.back = np.where(rows_any, self.u[first_u] - half, np.nan)
        self.u_lo = float(self.u[cols_any][0] - half)
        self.u_hi = float(self.u[cols_any][-1] + half)
        self.depth = self.u_hi - self.u_lo
        height = float(self.v[rows_any][-1] - self.v[rows_any][0] + step)
        if min(self.depth, height) < _MIN_EXTENT_PX:
            raise ValueError(
                f"vertebral body too small to measure: {self.depth:.1f} x {height:.1f} px "
                f"(depth x height); at least {_MIN_EXTENT_PX} px each are needed"
            )

    def to_image(self, u, v) -> np.ndarray:
        return self.centre + u * self.ap + v * self.up


def _up_from_axis(ap) -> np.ndarray:
    up = np.array([ap[1], -ap[0]])
    return up if up[1] < 0 else -up


def _fit_frame(prop, *, trim):
    """Centre, unsigned antero-posterior axis and up axis of one body, refined."""
    centre = np.array([prop.centroid[1], prop.centroid[0]])
    pts = prop.coords[:, ::-1].astype(float)
    evals, evecs = np.linalg.eigh(np.cov(pts, rowvar=False))
    if evals[1] > _ISOTROPIC * max(evals[0], 1e-12):
        axes = evecs.T  # principal axes of the region, as (x, y) rows
        up0 = axes[np.argmax(np.abs(axes[:, 1]))]
        ap = np.array([-up0[1], up0[0]])
    else:
        ap = np.array([1.0, 0.0])  # a nearly square body: start from the image axes
    ap = ap if ap[0] >= 0 else -ap
    up = _up_from_axis(ap)
    for _ in range(10):
        frame = _Frame(prop, centre, ap, up)
        lo = frame.u_lo + trim * frame.depth
        hi = frame.u_hi - trim * frame.depth
        _, slope_top = _theil_sen(frame.u, frame.top, lo, hi)
        _, slope_bottom = _theil_sen(frame.u, frame.bottom, lo, hi)
        # The body's axis bisects its two end plates, so a wedge keeps both in view.
        phi = 0.5 * (np.arctan(slope_top) + np.arctan(slope_bottom))
        ap = np.cos(phi) * ap + np.sin(phi) * up
        ap /= np.hypot(*ap)
        up = _up_from_axis(ap)
        if abs(phi) < 1e-3:  # 0.06 degrees
            break
    return centre, ap, up


def body_axis(mask, *, anterior=None, trim: float = 0.1) -> dict:
    """Centre and axes of one vertebral body, in the image.

    Parameters
    ----------
    mask : (H, W) array_like of bool
        One vertebral body; only its largest 8-connected component is used.
    anterior : {'left', 'right'} or (2,) array_like of float or None
        Which image side the belly is on, or any vector pointing anteriorly, (x, y).
        None (default): the antero-posterior axis is returned without a direction, and
        ``"anterior"`` is None; a cohort-level answer comes from
        :func:`spine_anterior_direction`.
    trim : float
        Fraction of the body depth next to each wall left out when the end-plate
        directions are fitted (rounded corners); 0 to 0.3, default 0.1.

    Returns
    -------
    dict
        ``"centre"`` : (2,) float ndarray, the centroid (x, y) in pixels;
        ``"up"`` : (2,) float ndarray, unit vector towards the upper end plate (its y is
        negative); ``"ap_axis"`` : (2,) float ndarray, the unit antero-posterior axis with
        non-negative x; ``"anterior"`` : (2,) float ndarray, that axis pointing anteriorly,
        or None when ``anterior`` is None.

    Notes
    -----
    The start is the principal axis of the region closer to the image vertical (the
    image axes when the region is nearly isotropic). Then, repeatedly, the body is
    resampled in that frame, straight lines are fitted by Theil-Sen regression [3]_ to
    the upper and lower boundaries over the central part of the depth, and the frame is
    turned onto the bisector of the two end-plate directions, until it no longer turns.
    A wedge-shaped body thus gets the axis half way between its end plates, and a
    symmetric biconcave one the axis of its rim.
    """
    direction = _anterior_vector(anterior)
    if not 0.0 <= trim <= 0.3:
        raise ValueError(f"trim must lie in [0, 0.3]; got {trim!r}")
    prop = _component(mask)
    centre, ap, up = _fit_frame(prop, trim=trim)
    if direction is None:
        signed = None
    else:
        if abs(float(ap @ direction)) < 1e-6:
            raise ValueError(
                f"anterior {anterior!r} is perpendicular to the body's antero-posterior axis"
            )
        signed = ap if ap @ direction > 0 else -ap
    return {"centre": centre, "up": up, "ap_axis": ap, "anterior": signed}


#: Smallest lordotic bulge that tells the anterior side: the mean horizontal offset of the
#: inner centres from the chord, as a fraction of the chord's length.
MIN_LORDOSIS_BULGE = 0.01

#: Smallest forward tilt of the S1 upper end plate that tells the anterior side: the height
#: difference of its corners as a fraction of their horizontal distance.
MIN_S1_TILT = 0.05


def spine_anterior_direction(centres, *, s1_endplate=None) -> str:
    """Which image side is anterior, from the lordosis of the lumbar spine.

    Parameters
    ----------
    centres : (N, 2) array_like of float
        Vertebral centres (x, y), N >= 3, for example L1..L5; their order does not matter.
    s1_endplate : (2, 2) array_like of float, optional
        The two corners (x, y) of the S1 upper end plate, in either order. Used only when
        the centres are too straight to tell (default None: then that raises).

    Returns
    -------
    str
        ``"left"`` or ``"right"``.

    Raises
    ------
    ValueError
        Fewer than 3 finite centres, centres all at one height, or a straight spine
        (bulge below :data:`MIN_LORDOSIS_BULGE`) without a tilted S1 end plate (tilt
        below :data:`MIN_S1_TILT`): the side is then undetermined, pass ``anterior``
        explicitly.

    Notes
    -----
    The lumbar lordosis makes the spine convex anteriorly: the middle centres lie on the
    anterior side of the chord from the top centre to the bottom one. The mean
    horizontal offset of the inner centres from that chord (at their own height) gives
    the side when it exceeds 1 % of the chord's length. Otherwise the sacrum decides: it
    tilts forward, so the lower corner of the S1 upper end plate is the anterior one. A
    spine that has lost its lordosis (flat back, kyphosis) defeats the rule; an
    annotation's ``anterior`` field should then be used instead. This one rule serves
    both the corner-point importer (:func:`lumbar_core.io.import_corner_csv`) and the
    measurement of predicted masks.

    Examples
    --------
    >>> spine_anterior_direction([[100, 0], [90, 30], [86, 60], [90, 90], [100, 120]])
    'left'
    >>> spine_anterior_direction([[100, 0], [100, 30], [100, 60]],
    ...                          s1_endplate=[[80, 100], [120, 90]])
    'left'
    """
    pts = np.asarray(centres, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"centres must be an (N, 2) array of (x, y); got shape {pts.shape}")
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 3:
        raise ValueError(f"at least 3 finite centres are needed; got {len(pts)}")
    pts = pts[np.argsort(pts[:, 1], kind="stable")]
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    if y1 == y0:
        raise ValueError("centres all lie at one height; the spine's chord is undefined")
    inner = pts[1:-1]
    offset = float(np.mean(inner[:, 0] - (x0 + (inner[:, 1] - y0) * (x1 - x0) / (y1 - y0))))
    if abs(offset) > MIN_LORDOSIS_BULGE * float(np.hypot(x1 - x0, y1 - y0)):
        return "left" if offset < 0 else "right"
    if s1_endplate is not None:
        plate = np.asarray(s1_endplate, dtype=float)
        if plate.shape != (2, 2) or not np.all(np.isfinite(plate)):
            raise ValueError(f"s1_endplate must be two finite points (x, y); got {s1_endplate!r}")
        (lx, ly), (rx, ry) = plate[np.argsort(plate[:, 0], kind="stable")]
        if abs(ly - ry) > MIN_S1_TILT * abs(rx - lx):
            return "left" if ly > ry else "right"
        raise ValueError("the centres lie nearly on a straight line and the S1 end plate is "
                         "level: the anterior side is undetermined")
    raise ValueError("the centres lie nearly on a straight line: the anterior side is "
                     "undetermined")


# ------------------------------------------------------------------------ the heights


def _lengths(vectors, spacing) -> np.ndarray:
    """Lengths of (..., 2) vectors (dx, dy) in pixels, or in mm with (row_mm, col_mm)."""
    vec = np.asarray(vectors, dtype=float)
    if spacing is not None:
        vec = vec * np.array([spacing[1], spacing[0]])
    return np.hypot(vec[..., 0], vec[..., 1])


def _corner(plate, wall) -> tuple[float, float]:
    """Intersection of the end-plate line v = c + d u with the wall line u = e + f v."""
    (c, d), (e, f) = plate, wall
    u = (e + f * c) / (1.0 - f * d)
    return u, c + d * u


def _corners(frame, *, trim) -> dict:
    """The four corners (u, v) of a body in its frame, where end plates meet walls.

    Each corner is the intersection of two lines fitted next to it: the end plate over
    the strip from ``trim`` to ``trim + 0.35`` of the depth away from the corner, and the
    wall over the strip from ``trim`` to ``trim + 0.35`` of the wall's height away from
    it, both short of the plate's or wall's middle. Fitting next to the corner, not over
    the whole plate or wall, keeps concave end plates and walls from pulling the corner
    inwards, and a wall that leans in the body's frame out of the end-plate strips. The
    strips depend on the corners, so the fit is repeated until the corners stay put.
    """
    depth = frame.depth
    inward = {"anterior": -1.0, "posterior": 1.0}
    walls = {"anterior": frame.front, "posterior": frame.back}
    at = {f"{plate}_{side}": (frame.u_hi if side == "anterior" else frame.u_lo)
          for plate in ("upper", "lower") for side in inward}
    for _ in range(6):
        corners = {}
        for side, sign in inward.items():
            lines = {}
            for plate, profile in (("upper", frame.top), ("lower", frame.bottom)):
                near = at[f"{plate}_{side}"] + sign * trim * depth
                far = near + sign * _CORNER_STRIP * depth
                lines[plate] = _theil_sen(frame.u, profile, min(near, far), max(near, far))
            v_top = lines["upper"][0] + lines["upper"][1] * at[f"upper_{side}"]
            v_bottom = lines["lower"][0] + lines["lower"][1] * at[f"lower_{side}"]
            height = v_top - v_bottom
            for plate, end, down in (("upper", v_top, -1.0), ("lower", v_bottom, 1.0)):
                near = end + down * trim * height
                far = near + down * _CORNER_STRIP * height
                wall = _theil_sen(frame.v, walls[side], min(near, far), max(near, far))
                corners[f"{plate}_{side}"] = _corner(lines[plate], wall)
        shift = max(abs(corners[name][0] - at[name]) for name in corners)
        at = {name: corner[0] for name, corner in corners.items()}
        if shift < 0.01 * frame.step:
            break
    return corners


def _two_sided(u, profile, at, width) -> float:
    """Profile value at ``at`` from lines fitted on each side of it, averaged."""
    left = _theil_sen(u, profile, at - width, at)
    right = _theil_sen(u, profile, at, at + width)
    return 0.5 * ((left[0] + left[1] * at) + (right[0] + right[1] * at))


def vertebral_heights(mask, *, anterior, spacing_mm=None, trim: float = 0.1) -> dict:
    """The six morphometry points and the heights ``ha, hm, hp`` of one vertebral body.

    Parameters
    ----------
    mask : (H, W) array_like of bool
        One vertebral body (a filled region); only its largest 8-connected component is
        measured.
    anterior : {'left', 'right'} or (2,) array_like of float
        Which image side the belly is on, or a vector pointing anteriorly, (x, y).
        Required: a body mask alone cannot tell front from back.
    spacing_mm : (2,) array_like of float or None
        Pixel spacing ``(row_mm, col_mm)``; None (default) leaves the mm heights NaN.
        Spacing may be anisotropic: each height vector is converted before its length
        is taken.
    trim : float
        Fraction of the body depth next to each wall, and of each wall's height next to
        the end plates, left out of the line fits because segmentations round the
        corners; 0 to 0.3, default 0.1.

    Returns
    -------
    dict
        ``"points"``: dict of the six morphometry points (:data:`POINT_NAMES`), each a
        (2,) float ndarray (x, y) in pixels; ``"ha_px", "hm_px", "hp_px"``: anterior,
        middle and posterior heights in pixels; ``"ha_mm", "hm_mm", "hp_mm"``: the same
        in mm (NaN without ``spacing_mm``); ``"centre", "up", "anterior"``: the body's
        frame as returned by :func:`body_axis`.

    Notes
    -----
    The body is resampled in its own frame (:func:`body_axis`), u towards anterior and v
    up, on a grid of a quarter pixel (coarser for bodies over 100 px), and the mask's
    upper, lower, anterior and posterior boundaries are read off as profiles. Each
    morphometry point comes from straight lines fitted to a strip of a profile (Theil-Sen
    regression [3]_, then least squares on the points within 1 px of that line), so that
    a few wrong boundary pixels do not move it:

    - the corners (upper/lower anterior/posterior) are the intersections of the end
      plate, fitted over the strip from ``trim`` to ``trim + 0.35`` of the depth away
      from that corner, with the wall, fitted over the strip from ``trim`` to
      ``trim + 0.35`` of the wall's height away from it (a few rounds, as the strips
      depend on the corners); concave end plates and walls thus do not pull the
      corners in;
    - the mid points lie on the end plate half way between its two corners; the plate's
      position there is the mean of two lines fitted over 20 % of the depth on either
      side, so that an end plate bowed in to a point (a biconcave body) or a straight
      one (a wedge) are both measured at the middle, not above or below it.

    On polygons of 55-110 px heights the points come within about 1 px of the outline's
    (standard deviation 0.1-0.3 px).

    Heights are the distances ``ha = |upper_anterior - lower_anterior|``,
    ``hm = |upper_mid - lower_mid|``, ``hp = |upper_posterior - lower_posterior|``, the
    definitions of the 8-point annotation outline (:func:`heights_from_outline`).
    Heights are not read from strips set back from the walls (say at 10 % and 90 % of
    the depth): in a wedge such a strip measures the height 10 % of the way towards the
    other wall, several per cent off.
    """
    direction = _anterior_vector(anterior)
    if direction is None:
        raise ValueError(
            "anterior is required ('left', 'right' or a vector); use "
            "spine_anterior_direction for a whole spine"
        )
    spacing = _spacing(spacing_mm)
    if not 0.0 <= trim <= 0.3:
        raise ValueError(f"trim must lie in [0, 0.3]; got {trim!r}")
    prop = _component(mask)
    centre, ap, up = _fit_frame(prop, trim=trim)
    if abs(float(ap @ direction)) < 1e-6:
        raise ValueError(
            f"anterior {anterior!r} is perpendicular to the body's antero-posterior axis"
        )
    ap = ap if ap @ direction > 0 else -ap
    frame = _Frame(prop, centre, ap, up)
    points_uv = _corners(frame, trim=trim)
    for plate, profile in (("upper", frame.top), ("lower", frame.bottom)):
        at = 0.5 * (points_uv[f"{plate}_anterior"][0] + points_uv[f"{plate}_posterior"][0])
        points_uv[f"{plate}_mid"] = (at, _two_sided(frame.u, profile, at, _STRIP * frame.depth))

    points = {name: frame.to_image(*points_uv[name]) for name in POINT_NAMES}
    pairs = (("ha", "anterior"), ("hm", "mid"), ("hp", "posterior"))
    vectors = np.array([points[f"upper_{pos}"] - points[f"lower_{pos}"] for _, pos in pairs])
    px = _lengths(vectors, None)
    mm = _lengths(vectors, spacing) if spacing is not None else np.full(3, np.nan)
    out = {"points": points}
    for i, (name, _) in enumerate(pairs):
        out[f"{name}_px"] = float(px[i])
    for i, (name, _) in enumerate(pairs):
        out[f"{name}_mm"] = float(mm[i])
    out.update({"centre": centre, "up": up, "anterior": ap})
    return out


def heights_from_outline(outline, *, spacing_mm=None) -> dict:
    """Ground-truth heights from an 8-point annotation outline.

    Parameters
    ----------
    outline : (8, 2) array_like of float
        ``[upper_anterior, upper_mid, upper_posterior, posterior_mid, lower_posterior,
        lower_mid, lower_anterior, anterior_mid]``, each (x, y) in pixels.
    spacing_mm : (2,) array_like of float or None
        Pixel spacing ``(row_mm, col_mm)``; None (default) leaves the mm heights NaN.

    Returns
    -------
    dict
        ``"ha_px" = |p0 - p6|``, ``"hm_px" = |p1 - p5|``, ``"hp_px" = |p2 - p4|`` and the
        same in mm (``"ha_mm", "hm_mm", "hp_mm"``), floats.

    Examples
    --------
    >>> box = [[0, 0], [5, 0], [10, 0], [10, 3], [10, 6], [5, 6], [0, 6], [0, 3]]
    >>> heights_from_outline(box)["hm_px"]
    6.0
    """
    pts = np.asarray(outline, dtype=float)
    if pts.shape != (8, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(
            f"outline must be 8 finite (x, y) points; got an array of shape {pts.shape}"
        )
    spacing = _spacing(spacing_mm)
    vectors = pts[[0, 1, 2]] - pts[[6, 5, 4]]
    px = _lengths(vectors, None)
    mm = _lengths(vectors, spacing) if spacing is not None else np.full(3, np.nan)
    names = ("ha", "hm", "hp")
    out = {f"{n}_px": float(v) for n, v in zip(names, px)}
    out.update({f"{n}_mm": float(v) for n, v in zip(names, mm)})
    return out


# ----------------------------------------------------------------------------- grading


def _grade(reduction: float) -> int:
    r = round(reduction, _DECIMALS)
    mild, moderate, severe = GRADE_BOUNDS
    if r < mild:
        return 0
    if r < moderate:
        return 1
    return 2 if r <= severe else 3


def genant_grade(ha, hm, hp, *, neighbour_hp=None) -> dict:
    """Genant semi-quantitative grade and type of one vertebra from its heights.

    Parameters
    ----------
    ha, hm, hp : float
        Anterior, middle and posterior heights, positive, any one unit.
    neighbour_hp : sequence of float or None
        Posterior heights of the adjacent vertebrae (0, 1 or 2 values, same unit), the
        reference for a crushed body; None (default) or empty: not used.

    Returns
    -------
    dict
        ``"grade"`` : int 0..3; ``"type"`` : ``"normal"`` (grade 0), ``"wedge"``,
        ``"biconcave"`` or ``"crush"``; ``"reduction"`` : float, the largest height
        reduction (0 when no height is reduced); ``"reductions"`` : dict of the reduction
        of each type; ``"ratios"`` : dict ``"ha/hp", "hm/hp", "hm/ha"`` and
        ``"hp/neighbour_hp"`` (NaN without neighbours).

    Notes
    -----
    A reduction is ``1 - h / reference``. The reference rule, that of quantitative
    vertebral morphometry [4]_ and of the demo phantom's ground truth:

    - wedge: ``1 - ha / hp``, the anterior height against the posterior one;
    - biconcave: ``1 - hm / hp``;
    - crush: with neighbours, ``1 - hp / mean(neighbour_hp)``, the posterior height (and
      with it the whole body) against the posterior heights next to it; without
      neighbours, ``1 - hp / max(ha, hm)``, the vertebra's own largest other height, so
      that only a posterior height lost against the front counts (a uniformly crushed
      body cannot be told from a small normal one and grades 0).

    The posterior height, not the largest other height, is the reference of the wedge
    and biconcave reductions: the lower lumbar bodies are normally taller in front
    (``ha / hp`` about 1.1 at L5), and ``1 - hm / max(ha, hp)`` would grade a biconcave
    L4 or L5 one grade too high. For the same reason the neighbours, when given, replace
    the own reference of a crush.

    The largest of the three reductions gives the type (ties go to wedge, then
    biconcave) and the grade [1]_: grade 0 below 20 %, grade 1 (mild) from 20 % up to
    but not including 25 %, grade 2 (moderate) from 25 % up to and including 40 %,
    grade 3 (severe) above 40 %. So exactly 20 % is grade 1, exactly 25 % grade 2 and
    exactly 40 % grade 2 (Genant's severe grade is "> 40 %"). Reductions are rounded to
    9 decimals before this comparison, so that a height ratio such as 80/100 grades as
    exactly 20 % despite floating point.

    Examples
    --------
    >>> g = genant_grade(75.0, 95.0, 100.0)
    >>> g["grade"], g["type"], round(g["reduction"], 3)
    (2, 'wedge', 0.25)
    """
    heights = {}
    for name, value in (("ha", ha), ("hm", hm), ("hp", hp)):
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite height; got {value!r}")
        heights[name] = value
    ha, hm, hp = heights["ha"], heights["hm"], heights["hp"]
    neighbours = [] if neighbour_hp is None else [float(h) for h in neighbour_hp]
    if len(neighbours) > 2 or not all(np.isfinite(h) and h > 0 for h in neighbours):
        raise ValueError(
            f"neighbour_hp must hold 0 to 2 positive finite heights; got {neighbour_hp!r}"
        )
    reference_hp = float(np.mean(neighbours)) if neighbours else float("nan")
    reductions = {
        "wedge": 1.0 - ha / hp,
        "biconcave": 1.0 - hm / hp,
        "crush": 1.0 - hp / (reference_hp if neighbours else max(ha, hm)),
    }
    kind = max(_TYPES, key=lambda t: (round(reductions[t], _DECIMALS), -_TYPES.index(t)))
    reduction = max(0.0, reductions[kind])
    grade = _grade(reduction)
    return {
        "grade": grade,
        "type": kind if grade > 0 else "normal",
        "reduction": reduction,
        "reductions": reductions,
        "ratios": {
            "ha/hp": ha / hp,
            "hm/hp": hm / hp,
            "hm/ha": hm / ha,
            "hp/neighbour_hp": hp / reference_hp if neighbours else float("nan"),
        },
    }


_RATIO_COLUMNS = {
    "ha/hp": "ratio_ha_hp",
    "hm/hp": "ratio_hm_hp",
    "hm/ha": "ratio_hm_ha",
    "hp/neighbour_hp": "ratio_hp_neighbours",
}


def _columns() -> list[str]:
    cols = ["level", "label", "anterior", "ha_px", "hm_px", "hp_px", "ha_mm", "hm_mm", "hp_mm"]
    cols += [f"{name}_{axis}" for name in POINT_NAMES for axis in ("x", "y")]
    cols += list(_RATIO_COLUMNS.values()) + ["reduction", "grade", "type"]
    return cols


def measure_spine(label_mask, *, spacing_mm=None, anterior=None) -> pd.DataFrame:
    """Heights, morphometry points and Genant grades of L1..L5 in one label mask.

    Parameters
    ----------
    label_mask : (H, W) array_like of int
        0 background, 1..5 for L1..L5, in any pixel grid (usually the input image's).
    spacing_mm : (2,) array_like of float or None
        Pixel spacing ``(row_mm, col_mm)``; None (default) leaves the mm columns NaN.
    anterior : {'left', 'right'} or (2,) array_like of float or None
        Which image side the belly is on. None (default): from the lordosis of the label
        centroids (:func:`spine_anterior_direction`), which needs at least 3 levels.

    Returns
    -------
    pandas.DataFrame
        Five rows, L1..L5, columns ``level, label``, ``anterior`` (``"left"``,
        ``"right"`` or the given vector as text), ``ha_px, hm_px, hp_px, ha_mm, hm_mm,
        hp_mm``, the six points as ``<point>_x, <point>_y`` (pixels, see
        :data:`POINT_NAMES`), ``ratio_ha_hp, ratio_hm_hp, ratio_hm_ha,
        ratio_hp_neighbours, reduction``, ``grade`` (nullable Int64) and ``type``. A level
        that is absent or too small to measure ("not measured") has NaN numbers and a
        missing grade and type.

    Raises
    ------
    ValueError
        Labels outside 0..5, or ``anterior`` None with fewer than 3 levels present
        (unless no level is present at all: then every row is "not measured").

    Notes
    -----
    Each level is measured by :func:`vertebral_heights` and graded by
    :func:`genant_grade` with the posterior heights of the measured adjacent levels as
    ``neighbour_hp`` (L1 and L5 have one lumbar neighbour: T12 is not in the mask), on
    the mm heights when ``spacing_mm`` is given and the pixel heights otherwise.
    """
    labels = np.asarray(label_mask)
    if labels.ndim != 2:
        raise ValueError(f"label_mask must be a 2-D (H, W) array; got shape {labels.shape}")
    if labels.size and (
        not np.all(np.isin(np.unique(labels), np.arange(len(LEVELS) + 1)))
    ):
        raise ValueError(
            f"label_mask must hold labels 0..5; got values {np.unique(labels).tolist()}"
        )
    spacing = _spacing(spacing_mm)
    counts = np.bincount(labels.ravel().astype(np.intp), minlength=len(LEVELS) + 1)
    present = [k for k in range(1, len(LEVELS) + 1) if counts[k] >= _MIN_PIXELS]
    if anterior is None:
        if not present:
            side = None
        elif len(present) < 3:
            raise ValueError(
                f"anterior is None and only {len(present)} level(s) are present; at least 3 "
                "are needed to find the anterior side from the lordosis: pass anterior"
            )
        else:
            centroids = ndimage.center_of_mass(labels > 0, labels, present)
            side = spine_anterior_direction([(c, r) for r, c in centroids])
    else:
        vector = _anterior_vector(anterior)
        side = anterior if isinstance(anterior, str) else f"({vector[0]:.4g}, {vector[1]:.4g})"
    measured = {}
    for k in present:
        try:
            measured[k] = vertebral_heights(
                labels == k, anterior=anterior if anterior is not None else side,
                spacing_mm=spacing,
            )
        except ValueError:
            continue  # too small or irregular to measure: the row says "not measured"
    # Grade on physical heights where the spacing is known: with anisotropic pixels,
    # heights in pixels along differently tilted directions do not compare.
    unit = "mm" if spacing is not None else "px"
    rows = []
    for k, level in enumerate(LEVELS, start=1):
        row = dict.fromkeys(_columns(), np.nan)
        row.update(level=level, label=k, type=None, anterior=side)
        if k in measured:
            m = measured[k]
            row.update({f"{h}_{unit}": m[f"{h}_{unit}"] for h in ("ha", "hm", "hp")
                        for unit in ("px", "mm")})
            for name in POINT_NAMES:
                row[f"{name}_x"], row[f"{name}_y"] = (float(c) for c in m["points"][name])
            neighbours = [measured[j][f"hp_{unit}"] for j in (k - 1, k + 1) if j in measured]
            g = genant_grade(*(m[f"{h}_{unit}"] for h in ("ha", "hm", "hp")),
                             neighbour_hp=neighbours)
            row.update({col: g["ratios"][key] for key, col in _RATIO_COLUMNS.items()})
            row.update(reduction=g["reduction"], grade=g["grade"], type=g["type"])
        rows.append(row)
    table = pd.DataFrame(rows, columns=_columns())
    table["grade"] = table["grade"].astype("Int64")
    return table


# --------------------------------------------------------------------------- agreement


def _grades(values, name) -> np.ndarray:
    """Grades as floats with NaN for missing; ValueError on anything but 0..3."""
    series = pd.Series(list(values), dtype=object)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & (numeric.isna() | ~numeric.isin([0, 1, 2, 3]))
    if bad.any():
        raise ValueError(
            f"{name} must hold grades 0, 1, 2, 3 or missing values; got "
            f"{series[bad].iloc[0]!r}"
        )
    return numeric.to_numpy(dtype=float)


def _rate(hit: np.ndarray, condition: np.ndarray) -> float:
    den = np.count_nonzero(condition)
    return float(np.count_nonzero(hit & condition) / den) if den else float("nan")


def agreement(true_grades, pred_grades) -> dict:
    """Agreement of predicted Genant grades with reference grades.

    Parameters
    ----------
    true_grades, pred_grades : (N,) array_like
        Grades 0..3, paired by position; None, NaN or pandas NA marks a vertebra that
        was not graded, and a pair with either missing is left out.

    Returns
    -------
    dict
        ``"n"`` : int, pairs compared; ``"n_missing"`` : int, pairs left out;
        ``"confusion"`` : (4, 4) int ndarray, rows the reference grade 0..3, columns the
        predicted one; ``"kappa_linear"``, ``"kappa_quadratic"`` : Cohen's weighted kappa
        [2]_ over the grades 0..3 (NaN when undefined, e.g. no pairs or a single grade
        on both sides); ``"sensitivity_any", "specificity_any"`` : for "any fracture"
        (grade >= 1); ``"sensitivity_ge2", "specificity_ge2"`` : for grade >= 2 (NaN when
        there is no positive, respectively negative, reference).

    Notes
    -----
    Computed with ``sklearn.metrics.confusion_matrix`` and ``cohen_kappa_score`` with the
    labels fixed to 0..3, so grades absent from both lists still count in the weights.
    """
    true = _grades(true_grades, "true_grades")
    pred = _grades(pred_grades, "pred_grades")
    if true.shape != pred.shape:
        raise ValueError(
            f"true_grades and pred_grades must have the same length; got {len(true)} and "
            f"{len(pred)}"
        )
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    keep = np.isfinite(true) & np.isfinite(pred)
    true, pred = true[keep].astype(int), pred[keep].astype(int)
    grades = [0, 1, 2, 3]
    out = {"n": int(keep.sum()), "n_missing": int((~keep).sum())}
    if out["n"]:
        out["confusion"] = confusion_matrix(true, pred, labels=grades)
        for weights in ("linear", "quadratic"):
            out[f"kappa_{weights}"] = float(
                cohen_kappa_score(true, pred, labels=grades, weights=weights)
            )
    else:
        out["confusion"] = np.zeros((4, 4), dtype=int)
        out["kappa_linear"] = out["kappa_quadratic"] = float("nan")
    for suffix, cut in (("any", 1), ("ge2", 2)):
        out[f"sensitivity_{suffix}"] = _rate(pred >= cut, true >= cut)
        out[f"specificity_{suffix}"] = _rate(pred < cut, true < cut)
    return out


def agreement_summary(rows: pd.DataFrame) -> list[dict]:
    """Agreement with the annotated grades and height errors, per source of masks.

    Parameters
    ----------
    rows : DataFrame
        The cohort's morphometry rows (rule ``morphometry``): ``source``, ``grade``,
        ``true_grade`` and the heights ``ha``, ``hm``, ``hp`` with their ``true_``
        counterparts, in ``mm`` where the annotation has them in mm, else in ``px``.
        Rows without ``true_grade`` are left out.

    Returns
    -------
    list of dict
        One dict per source (e.g. ``"PN+MNet+LS"``, ``"ground truth mask"``):
        :func:`agreement`'s counts, kappas, sensitivities and specificities, the
        confusion matrix as a nested list and ``height_mae_mm`` (or ``height_mae_px``),
        the mean absolute error of the three heights together. Empty without a
        ``true_grade`` column.
    """
    summary = []
    if "true_grade" not in rows:
        return summary
    for source, group in rows.dropna(subset=["true_grade"]).groupby("source"):
        stats = agreement(group["true_grade"].tolist(), group["grade"].tolist())
        unit = "mm" if group["true_ha_mm"].notna().any() else "px"
        errors = np.concatenate([np.abs(group[f"{h}_{unit}"] - group[f"true_{h}_{unit}"])
                                 for h in ("ha", "hm", "hp")])
        summary.append({"source": source, "n": stats["n"], "n_missing": stats["n_missing"],
                        "kappa_linear": stats["kappa_linear"],
                        "kappa_quadratic": stats["kappa_quadratic"],
                        "sensitivity_any": stats["sensitivity_any"],
                        "specificity_any": stats["specificity_any"],
                        "sensitivity_ge2": stats["sensitivity_ge2"],
                        "specificity_ge2": stats["specificity_ge2"],
                        f"height_mae_{unit}": float(np.nanmean(errors)),
                        "confusion": stats["confusion"].tolist()})
    return summary
