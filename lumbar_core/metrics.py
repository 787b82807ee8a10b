"""Evaluation metrics of the paper's section 3.3 (Eq. 11, 12; Tables 1 and 2).

A chain of plain functions in the manner of nnU-Net's evaluation: boolean masks ->
:func:`confusion_counts` -> :func:`region_metrics` -> per-level rows
(:func:`label_metrics`), and for the localisation :func:`centre_errors` and
:func:`detection_success`. Summaries over images live in :mod:`lumbar_core.tables`.

The region metrics follow Udupa et al. [1]_ as the paper uses them. The paper's
"precision" ``|GT n SG| / |GT u SG|`` (Eq. 11) is the Jaccard index and is reported
under that name, with the usual precision ``|GT n SG| / |SG|`` beside it.

References
----------
.. [1] J. K. Udupa et al., "A framework for evaluating image segmentation algorithms",
       Computerized Medical Imaging and Graphics 30(2), 75-87, 2006.
       :doi:`10.1016/j.compmedimag.2005.12.001`
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LEVELS",
    "METHODS",
    "METRIC_NAMES",
    "centre_errors",
    "confusion_counts",
    "detection_success",
    "label_metrics",
    "region_metrics",
]

from . import LEVELS  # noqa: E402  (re-exported: the one definition lives in the package)

METHODS = {
    "PN+MNet+LS": ("refined", "mnet_labels_io", True),
    "PN+UNet+LS": ("refined", "unet_labels_io", True),
    "PN+MNet": ("mnet", "labels_io", True),
    "PN+UNet": ("unet", "labels_io", True),
    "Orig MNet": ("mnet_whole", "labels_io", False),
    "Orig UNet": ("unet_whole", "labels_io", False),
}
"""The six methods of the paper's Table 2, in its row order: name -> (prediction the
method's masks come from, the label array in that file, whether it needs Pose-net)."""

METRIC_NAMES = ("dice", "jaccard", "precision", "sensitivity", "specificity")
"""Keys of :func:`region_metrics`, in the order the tables print them."""


def _as_mask_pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(
            f"gt and pred must have the same shape; got gt {gt.shape} and pred {pred.shape}"
        )
    if gt.size == 0:
        raise ValueError(f"gt and pred must not be empty arrays; got shape {gt.shape}")
    return gt.astype(bool, copy=False), pred.astype(bool, copy=False)


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def confusion_counts(gt, pred) -> dict:
    """Pixel counts of a binary segmentation against its ground truth.

    Parameters
    ----------
    gt, pred : ndarray of any shape, the same for both
        Ground-truth and predicted masks; nonzero (or ``True``) is foreground.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``tn`` as Python ``int``: pixels in both, only in
        ``pred``, only in ``gt``, in neither.

    Raises
    ------
    ValueError
        If the shapes differ or the arrays are empty.

    Examples
    --------
    >>> confusion_counts([[1, 1], [0, 0]], [[1, 0], [1, 0]])
    {'tp': 1, 'fp': 1, 'fn': 1, 'tn': 1}
    """
    gt, pred = _as_mask_pair(gt, pred)
    tp = int(np.count_nonzero(gt & pred))
    n_gt = int(np.count_nonzero(gt))
    n_pred = int(np.count_nonzero(pred))
    fp = n_pred - tp
    fn = n_gt - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(gt.size) - tp - fp - fn}


def region_metrics(gt, pred) -> dict:
    """Region-based metrics of the paper, Eq. 11 and 12, as fractions in [0, 1].

    Parameters
    ----------
    gt, pred : ndarray of any shape, the same for both
        Ground-truth (``GT``) and predicted (``SG``) masks; nonzero is foreground.

    Returns
    -------
    dict
        Floats keyed as in :data:`METRIC_NAMES`:

        - ``dice``: ``2 |GT n SG| / (|GT| + |SG|)`` (Eq. 11, ``dD``);
        - ``jaccard``: ``|GT n SG| / |GT u SG|``, what the paper calls "precision"
          (Eq. 11, ``dP``);
        - ``precision``: the usual ``|GT n SG| / |SG|``;
        - ``sensitivity``: ``|GT n SG| / |GT|`` (Eq. 12, ``dSen``);
        - ``specificity``: ``|(GT u SG)^c| / |GT^c|`` (Eq. 12, ``dSpe``), which equals
          ``TN / (TN + FP)``.

    Raises
    ------
    ValueError
        If the shapes differ or the arrays are empty.

    Notes
    -----
    Edge cases, decided as follows:

    - both masks empty: ``dice = jaccard = precision = sensitivity = 1`` (nothing to
      find, nothing found) and ``specificity = 1``;
    - empty prediction, non-empty ground truth (e.g. a failed detection):
      ``dice = jaccard = sensitivity = 0``, ``precision`` NaN (undefined: no pixel
      predicted), ``specificity = 1``;
    - empty ground truth, non-empty prediction: ``dice = jaccard = precision = 0``,
      ``sensitivity`` NaN (undefined: nothing to find);
    - ground truth covering every pixel: ``specificity`` NaN (``GT^c`` is empty).

    Examples
    --------
    A 2 x 2 case: ``|GT| = 2``, ``|SG| = 3``, overlap 2.

    >>> m = region_metrics([[1, 1], [0, 0]], [[1, 1], [1, 0]])
    >>> round(m["dice"], 3), round(m["jaccard"], 3), m["sensitivity"], m["specificity"]
    (0.8, 0.667, 1.0, 0.5)
    """
    c = confusion_counts(gt, pred)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    n_gt, n_pred = tp + fn, tp + fp
    if n_gt == 0 and n_pred == 0:
        return {"dice": 1.0, "jaccard": 1.0, "precision": 1.0, "sensitivity": 1.0,
                "specificity": 1.0}
    return {
        "dice": _ratio(2 * tp, n_gt + n_pred),
        "jaccard": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, n_pred),
        "sensitivity": _ratio(tp, n_gt),
        "specificity": _ratio(tn, tn + fp),
    }


def label_metrics(gt_labels, pred_labels, *, levels=(1, 2, 3, 4, 5)) -> list[dict]:
    """Region metrics of a label image, for all levels together and for each level.

    Parameters
    ----------
    gt_labels, pred_labels : (M, N) int ndarray
        Label images (not one-hot): 0 background, 1..5 for L1..L5, in the same grid.
    levels : sequence of int
        Labels to evaluate, each in 1..5; default ``(1, 2, 3, 4, 5)``.

    Returns
    -------
    list of dict
        First the row of level ``"all"`` (union of ``levels`` in each image against the
        union in the other, as the paper evaluates; Eq. 11, 12), then one row per label
        named ``"L1"``..``"L5"``. Each row has ``level`` and the keys of
        :func:`region_metrics`.

    Raises
    ------
    ValueError
        If the shapes differ, the images are not integer label images, or a level is
        not an integer in 1..5 or is repeated.
    """
    gt_labels = np.asarray(gt_labels)
    pred_labels = np.asarray(pred_labels)
    for name, arr in (("gt_labels", gt_labels), ("pred_labels", pred_labels)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} must be an integer label image; got dtype {arr.dtype}")
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(
            "gt_labels and pred_labels must have the same shape; "
            f"got {gt_labels.shape} and {pred_labels.shape}"
        )
    levels = tuple(levels)
    if (not levels or len(set(levels)) != len(levels)
            or not all(isinstance(v, (int, np.integer)) and 1 <= v <= 5 for v in levels)):
        raise ValueError(f"levels must be distinct integers in 1..5; got {levels}")
    rows = [{"level": "all",
             **region_metrics(np.isin(gt_labels, levels), np.isin(pred_labels, levels))}]
    for v in levels:
        rows.append({"level": LEVELS[int(v) - 1],
                     **region_metrics(gt_labels == v, pred_labels == v)})
    return rows


def _as_points(points, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, 2) of (x, y) points; got {arr.shape}")
    return arr


def centre_errors(pred, gt, *, spacing=None) -> np.ndarray:
    """Euclidean distance between each predicted centre and its ground-truth centre.

    Parameters
    ----------
    pred, gt : (5, 2) array_like
        Centres ``(x, y)`` of L1..L5 in the same pixel grid (the paper measures in ``Io``,
        3072 x 1536; any ``(n, 2)`` pair of equal shape is accepted).
    spacing : (2,) array_like of float or None
        Pixel spacing ``(row_mm, col_mm)`` of that grid; when given, the distances are
        in mm (``dx`` scaled by ``col_mm``, ``dy`` by ``row_mm``). Default None: pixels.

    Returns
    -------
    (5,) float64 ndarray
        Distances, L1 first. A NaN coordinate gives a NaN distance.

    Raises
    ------
    ValueError
        If the shapes differ or are not ``(n, 2)``, or ``spacing`` is not two positive
        numbers.

    Examples
    --------
    >>> centre_errors([[3, 4], [0, 0]], [[0, 0], [0, 0]])
    array([5., 0.])
    """
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape; got {pred.shape} and {gt.shape}")
    diff = pred - gt
    if spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.shape != (2,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise ValueError("spacing must be two positive numbers (row_mm, col_mm); "
                             f"got {spacing}")
        diff = diff * sp[::-1]  # (x, y) scaled by (col_mm, row_mm)
    return np.hypot(diff[:, 0], diff[:, 1])


def detection_success(pred, gt) -> bool:
    """Whether a detection found the five lumbar vertebrae, each at its own level.

    Parameters
    ----------
    pred : (5, 2) array_like or None
        Predicted centres ``(x, y)`` of L1..L5; None when the detection failed (fewer
        than five peaks, docs/method.md section 2, step 6).
    gt : (5, 2) array_like
        Ground-truth centres ``(x, y)`` of L1..L5 in the same grid.

    Returns
    -------
    bool
        True when five finite centres were found and each predicted centre is strictly
        closer to its own ground-truth centre than to any other ground-truth centre
        (docs/method.md section 5). A swap of two levels, or a shift by one level onto a
        thoracic vertebra, is a failure even when every error is small.

    Raises
    ------
    ValueError
        If ``gt`` is not a finite (5, 2) array.

    Examples
    --------
    >>> gt = [[0, 0], [0, 10], [0, 20], [0, 30], [0, 40]]
    >>> detection_success([[1, 1], [0, 11], [0, 21], [0, 31], [0, 41]], gt)
    True
    >>> detection_success([[0, 4], [0, 6], [0, 20], [0, 30], [0, 40]], gt)
    True
    >>> detection_success([[0, 6], [0, 4], [0, 20], [0, 30], [0, 40]], gt)
    False
    """
    gt = _as_points(gt, "gt")
    if gt.shape != (len(LEVELS), 2) or not np.all(np.isfinite(gt)):
        raise ValueError(f"gt must be a finite ({len(LEVELS)}, 2) array; got shape {gt.shape}")
    if pred is None:
        return False
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != gt.shape or not np.all(np.isfinite(pred)):
        return False
    from scipy.spatial.distance import cdist  # 0.1 s to import: only where used

    dist = cdist(pred, gt)
    own = np.diag(dist).copy()
    np.fill_diagonal(dist, np.inf)
    return bool(np.all(own < dist.min(axis=1)))
