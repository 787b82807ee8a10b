"""Tables 1 and 2 of the paper (section 3.3) from per-image evaluation rows.

The workflow writes one CSV of rows per image and method (see :mod:`lumbar_core.metrics`);
the functions here summarise them over images, stratified by modality (DR/CR) and group
(normal/abnormal) from the sample sheet, with seeded bootstrap confidence intervals, a
paired Wilcoxon signed-rank test against a reference method, and the paper's own numbers
in rows of their own. :func:`write_table` writes a summary as CSV (full precision),
Markdown and LaTeX (booktabs).

Summary columns follow one naming rule: a quantity ``q`` is reported as ``q_mean``,
``q_sd`` (sample standard deviation, ``ddof=1``), ``q_ci_low`` and ``q_ci_high``
(percentile bootstrap confidence interval of the mean [1]_); :func:`write_table` joins
each such group into one cell ``mean ± SD [low, high]``.

References
----------
.. [1] B. Efron and R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman &
       Hall, 1993, chapter 13. :doi:`10.1201/9780429246593`
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .io import atomic_path
from .metrics import LEVELS, METHODS, METRIC_NAMES

__all__ = [
    "METHODS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "STRATA",
    "bootstrap_ci",
    "table1",
    "table2",
    "write_table",
]

STRATA = ("all", "DR", "CR", "normal", "abnormal")
"""Rows of each summary: every image, then by ``modality``, then by ``group``. Images whose
``modality`` or ``group`` is ``unknown`` (unlabelled films) add a row ``"modality unknown"``
after ``"CR"`` or ``"group unknown"`` after ``"abnormal"``, where there are any."""

PAPER_TABLE1 = {
    "source": "paper Table 1 (centre errors) and section 3.3.1 (success rate)",
    "n_images": 160,
    "n_succeeded": 154,
    "success_rate_pct": 96.25,
    # Centre error in Io pixels (3072 x 1536): (mean, SD) over the successful detections.
    "error_px": {
        "L1": (26.84, 10.58),
        "L2": (24.43, 11.45),
        "L3": (24.57, 10.63),
        "L4": (26.73, 10.24),
        "L5": (24.17, 11.18),
        "all": (25.35, 10.86),
    },
}
"""The paper's localisation results (160 clinical test images; 96.25 % of 160 is 154)."""

PAPER_TABLE2 = {
    "source": "paper Table 2 (region-based metrics in %, mean and SD)",
    "n_images": 160,
    # (mean, SD) in %. The paper's column "Precision" is |GT n SG| / |GT u SG| (Eq. 11),
    # the Jaccard index; the paper has no usual precision. The SD 0.035 of PN+UNet's
    # specificity is transcribed as printed (the other SDs of that column are 0.17-0.49).
    "metrics": {
        "PN+MNet+LS": {"dice": (91.60, 2.22), "jaccard": (84.57, 3.64),
                       "sensitivity": (90.13, 2.91), "specificity": (99.59, 0.17)},
        "PN+UNet+LS": {"dice": (91.05, 3.50), "jaccard": (83.74, 5.47),
                       "sensitivity": (90.76, 3.72), "specificity": (99.49, 0.26)},
        "PN+MNet": {"dice": (90.38, 4.31), "jaccard": (82.72, 6.86),
                    "sensitivity": (92.74, 4.33), "specificity": (99.32, 0.33)},
        "PN+UNet": {"dice": (90.14, 4.26), "jaccard": (82.32, 6.79),
                    "sensitivity": (93.61, 3.69), "specificity": (99.24, 0.035)},
        "Orig MNet": {"dice": (88.31, 5.97), "jaccard": (79.55, 9.01),
                      "sensitivity": (89.22, 7.27), "specificity": (99.31, 0.49)},
        "Orig UNet": {"dice": (87.39, 7.13), "jaccard": (78.27, 10.46),
                      "sensitivity": (89.07, 9.01), "specificity": (99.22, 0.46)},
    },
}
"""The paper's segmentation results per method (names as in :data:`METHODS`)."""

_THIS_RUN = "this run"
_PAPER1 = "paper (Table 1)"
_PAPER2 = "paper (Table 2)"
_TABLE_LEVELS = LEVELS + ("all",)
_STATS = ("mean", "sd", "ci_low", "ci_high")


# ----------------------------------------------------------------------------- statistics
def bootstrap_ci(values, *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (``scipy.stats.bootstrap``).

    Parameters
    ----------
    values : (n,) array_like of float
        Sample; NaNs are dropped first.
    n_boot : int
        Number of bootstrap resamples (with replacement, size ``n``); default 2000.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same interval.
        Default 0.
    level : float
        Confidence level in (0, 1); default 0.95.

    Returns
    -------
    (low, high) : tuple of float
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means
        [1]_. ``(nan, nan)`` for an empty sample; ``(v, v)`` for a single value ``v``.

    Raises
    ------
    ValueError
        If ``n_boot`` is not a positive integer or ``level`` is not in (0, 1).

    Examples
    --------
    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    # Resample in batches so that memory stays bounded for long samples.
    batch = max(1, min(int(n_boot), 2_000_000 // x.size))
    result = stats.bootstrap((x,), np.mean, n_resamples=int(n_boot), batch=batch,
                             vectorized=True, axis=-1, confidence_level=level,
                             method="percentile", rng=np.random.default_rng(seed))
    # The interval from scipy's resampled means at the levels themselves: scipy's own
    # interval passes them as percentages, which moves the bounds by up to 2 ulp.
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(result.bootstrap_distribution, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _summary(values, *, n_boot: int, seed: int, scale: float = 1.0,
             ci_values=None) -> dict:
    """mean, sd (ddof=1), bootstrap CI of ``values`` (NaNs dropped), times ``scale``.

    ``ci_values`` (default ``values``) is what the bootstrap resamples: the per-image
    means when ``values`` pools several numbers per image.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)] * scale
    mean = float(x.mean()) if x.size else float("nan")
    sd = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    ci_x = x if ci_values is None else np.asarray(ci_values, dtype=np.float64) * scale
    low, high = bootstrap_ci(ci_x, n_boot=n_boot, seed=seed)
    return {"mean": mean, "sd": sd, "ci_low": low, "ci_high": high}


def _prefixed(prefix: str, summary: dict) -> dict:
    return {f"{prefix}_{k}": summary[k] for k in _STATS}


# ----------------------------------------------------------------------------- inputs
def _require_columns(df, columns, name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; has {list(df.columns)}")


def _as_bool(series: pd.Series, name: str) -> pd.Series:
    if series.dtype == bool:
        return series
    words = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    mapped = series.astype(str).str.strip().str.lower().map(words)
    if mapped.isna().any():
        bad = series[mapped.isna()].unique().tolist()
        raise ValueError(f"{name} must be boolean; got values {bad}")
    return mapped.astype(bool)


def _strata_of(image_ids, sheet: pd.DataFrame) -> dict[str, set]:
    """Image ids of each stratum, in row order: :data:`STRATA` and the unknown ones."""
    _require_columns(sheet, ("image_id", "modality", "group"), "sheet")
    sheet = sheet.assign(image_id=sheet["image_id"].astype(str))
    sheet = sheet.drop_duplicates("image_id").set_index("image_id")
    ids = pd.Index(pd.unique(np.asarray(image_ids, dtype=object)))
    missing = ids.difference(sheet.index)
    if len(missing):
        raise ValueError(f"image_id not in the sample sheet: {sorted(missing)[:10]}")
    info = sheet.loc[ids]
    strata = {"all": set(ids)}
    for col, values in (("modality", ("DR", "CR")), ("group", ("normal", "abnormal"))):
        for v in values:
            strata[v] = set(info.index[info[col].astype(str) == v])
        unknown = set(info.index[info[col].astype(str) == "unknown"])
        if unknown:
            strata[f"{col} unknown"] = unknown
    return strata


def _reason_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items())


# ----------------------------------------------------------------------------- Table 1
def table1(loc_rows, sheet, *, n_boot: int = 2000, seed: int = 0,
           include_paper: bool = True) -> pd.DataFrame:
    """Table 1: centre errors per level and detection success rate, by stratum.

    Parameters
    ----------
    loc_rows : pandas.DataFrame
        Localisation rows, five per image: ``image_id``, ``level`` (``"L1"``..``"L5"``),
        ``error_px`` (in ``Io`` pixels), ``success`` (bool, the same for an image's five
        rows), and optionally ``error_mm`` (NaN when the spacing is unknown),
        ``status`` (``"ok"`` or ``"failed: ..."``) and ``plausible`` (False for a
        detection whose centres do not form a plausible spine, empty without five
        centres).
    sheet : pandas.DataFrame
        Sample sheet with ``image_id``, ``modality`` (DR/CR) and ``group``
        (normal/abnormal); every image of ``loc_rows`` must be in it.
    n_boot : int
        Bootstrap resamples per confidence interval; default 2000.
    seed : int
        Bootstrap seed (see :func:`bootstrap_ci`); default 0.
    include_paper : bool
        Add the paper's row (:data:`PAPER_TABLE1`) after this run's ``"all"`` row;
        default True.

    Returns
    -------
    pandas.DataFrame
        One row per stratum of :data:`STRATA` (and of the unknown ones, and the paper's
        row), columns ``stratum``, ``source`` (``"this run"`` or ``"paper (Table 1)"``),
        ``n_images``, ``n_succeeded``, ``success_rate_pct``, ``n_implausible`` (images
        whose five centres were flagged implausible, whatever their success; 0 without a
        ``plausible`` column; empty for the paper), then for each of
        ``L1``..``L5`` and ``all``: ``<level>_px_mean``, ``_sd``, ``_ci_low``,
        ``_ci_high``; ``n_with_spacing`` and the same columns in mm (``<level>_mm_*``,
        NaN when no spacing is known). ``attrs["notes"]`` holds notes for
        :func:`write_table`.

    Raises
    ------
    ValueError
        If columns are missing, a level is unknown or repeated for an image, an image's
        rows disagree on ``success``, or an image is not in the sheet.

    Notes
    -----
    The errors are averaged over the images whose detection succeeded (five centres,
    each nearest its own ground-truth centre; docs/method.md section 5), as the paper does;
    the others count only against the success rate. Level ``all`` pools the five levels
    (mean and SD over ``5 n`` errors); its confidence interval resamples images (the
    mean of an image's five errors), since the errors of one image are not independent.
    """
    _require_columns(loc_rows, ("image_id", "level", "error_px", "success"), "loc_rows")
    rows = loc_rows.copy()
    rows["image_id"] = rows["image_id"].astype(str)
    bad = sorted(set(rows["level"]) - set(LEVELS))
    if bad:
        raise ValueError(f"loc_rows level must be one of {LEVELS}; got {bad}")
    if rows.duplicated(["image_id", "level"]).any():
        dup = rows.loc[rows.duplicated(["image_id", "level"]), "image_id"].unique().tolist()
        raise ValueError(f"loc_rows has repeated levels for image_id {dup[:10]}")
    rows["success"] = _as_bool(rows["success"], "loc_rows success")
    if "error_mm" not in rows:
        rows["error_mm"] = np.nan
    if "status" not in rows:
        rows["status"] = "ok"
    per_image = rows.groupby("image_id")["success"].agg(["min", "max"])
    mixed = per_image.index[per_image["min"] != per_image["max"]].tolist()
    if mixed:
        raise ValueError(f"loc_rows success differs between the levels of image_id {mixed[:10]}")
    success = per_image["max"]
    strata = _strata_of(success.index, sheet)
    flagged = rows["plausible"].astype(str).str.strip().str.lower().isin(["false", "0"]) \
        if "plausible" in rows else pd.Series(False, index=rows.index)
    implausible = set(rows.loc[flagged, "image_id"])

    err = {unit: rows.pivot(index="image_id", columns="level", values=f"error_{unit}")
           .reindex(columns=list(LEVELS)).astype(np.float64) for unit in ("px", "mm")}
    out = []
    for stratum in strata:
        ids = sorted(strata[stratum])
        ok = [i for i in ids if success[i]]
        n, n_ok = len(ids), len(ok)
        rec = {"stratum": stratum, "source": _THIS_RUN, "n_images": n, "n_succeeded": n_ok,
               "success_rate_pct": 100.0 * n_ok / n if n else np.nan,
               "n_implausible": len(implausible.intersection(ids))}
        for unit in ("px", "mm"):
            e = err[unit].loc[ok]
            if unit == "mm":
                rec["n_with_spacing"] = int(e.notna().any(axis=1).sum())
            for lev in LEVELS:
                rec.update(_prefixed(f"{lev}_{unit}",
                                     _summary(e[lev], n_boot=n_boot, seed=seed)))
            per_image_mean = e.mean(axis=1, skipna=True).dropna()
            rec.update(_prefixed(f"all_{unit}", _summary(
                e.to_numpy(), n_boot=n_boot, seed=seed, ci_values=per_image_mean)))
        out.append(rec)
        if stratum == "all" and include_paper:
            paper = {"stratum": "all", "source": _PAPER1,
                     "n_images": PAPER_TABLE1["n_images"],
                     "n_succeeded": PAPER_TABLE1["n_succeeded"],
                     "success_rate_pct": PAPER_TABLE1["success_rate_pct"]}
            for lev, (mean, sd) in PAPER_TABLE1["error_px"].items():
                paper.update({f"{lev}_px_mean": mean, f"{lev}_px_sd": sd})
            out.append(paper)
    table = pd.DataFrame(out)
    columns = (["stratum", "source", "n_images", "n_succeeded", "success_rate_pct",
                "n_implausible"]
               + [f"{lev}_px_{s}" for lev in _TABLE_LEVELS for s in _STATS]
               + ["n_with_spacing"]
               + [f"{lev}_mm_{s}" for lev in _TABLE_LEVELS for s in _STATS])
    table = table.reindex(columns=columns)

    failed = rows.drop_duplicates("image_id").set_index("image_id").loc[success.index[~success]]
    reasons = failed["status"].where(failed["status"].astype(str) != "ok",
                                     "centres not each nearest their own level")
    n_all = len(success)
    notes = [
        "Centre errors are Euclidean distances in Io pixels (3072 x 1536) and, where the "
        "pixel spacing is known, in mm: mean ± SD [bootstrap 95 % CI of the mean] over the "
        "images whose detection succeeded, as the paper reports them.",
        "Success: five centres found and each nearer its own ground-truth centre than any "
        "other; the success rate is over all images of the stratum.",
        "Level 'all' pools the five levels (5 errors per image); its CI resamples images.",
        "n_implausible: images whose five centres do not form a plausible lumbar spine "
        "(order, tilt, spacing, curvature, length; qc.tsv gives each reason); they are "
        "judged by the success rule all the same.",
        f"Excluded from the error columns: {n_all - int(success.sum())} of {n_all} images"
        + (f" ({_reason_counts(reasons)})." if len(reasons) else "."),
        f"CIs: {n_boot} bootstrap resamples, seed {seed}.",
    ]
    if include_paper:
        notes.append(f"The row '{_PAPER1}' holds the paper's numbers, not results of this "
                     f"run: {PAPER_TABLE1['source']}, {PAPER_TABLE1['n_images']} clinical "
                     "test images.")
    table.attrs["notes"] = notes
    return table


# ----------------------------------------------------------------------------- Table 2
def _wilcoxon(method_dice: pd.Series, ref_dice: pd.Series) -> tuple[int, float]:
    both = pd.concat([method_dice, ref_dice], axis=1, join="inner").dropna()
    diff = both.iloc[:, 0].to_numpy() - both.iloc[:, 1].to_numpy()
    if diff.size == 0 or np.all(diff == 0):
        return int(diff.size), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        p = stats.wilcoxon(both.iloc[:, 0], both.iloc[:, 1]).pvalue
    return int(diff.size), float(p)


def _method_order(methods) -> list[str]:
    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(METHODS))


def table2(seg_rows, sheet, *, reference: str = "PN+MNet+LS", n_boot: int = 2000,
           seed: int = 0, include_paper: bool = True) -> pd.DataFrame:
    """Table 2: region metrics per method and stratum, in %, with a paired test.

    Parameters
    ----------
    seg_rows : pandas.DataFrame
        Segmentation rows: ``image_id``, ``method``, ``level`` (``"all"`` or
        ``"L1"``..``"L5"``; only ``"all"`` is used, the union of the five masks as the
        paper evaluates), ``status`` (``"ok"``, ``"detection failed"`` or other text) and
        the metrics of :data:`lumbar_core.metrics.METRIC_NAMES` as fractions.
    sheet : pandas.DataFrame
        Sample sheet with ``image_id``, ``modality`` and ``group``.
    reference : str
        Method the others are tested against; default ``"PN+MNet+LS"`` (the paper's
        proposed method).
    n_boot : int
        Bootstrap resamples per confidence interval; default 2000.
    seed : int
        Bootstrap seed; default 0.
    include_paper : bool
        Add, after each method's ``"all"`` row, the paper's row for that method
        (:data:`PAPER_TABLE2`); default True.

    Returns
    -------
    pandas.DataFrame
        One row per method and stratum, values in %: ``method``, ``stratum``, ``source``,
        ``n_images``, ``n_succeeded`` (status ``"ok"``), ``n_failed``; for each metric
        ``<metric>_mean``, ``_sd``, ``_ci_low``, ``_ci_high`` over the images with status
        ``"ok"`` ("paper-style"); ``dice_all_images_*`` over all images, a failed image
        counting as Dice 0; ``wilcoxon_n`` and ``wilcoxon_p``: the pairs and the
        two-sided p-value of ``scipy.stats.wilcoxon`` of the per-image Dice (all images)
        against ``reference`` on the images both methods have, NaN for the reference
        itself and when every difference is 0. ``attrs["notes"]`` holds notes.

    Raises
    ------
    ValueError
        If columns are missing, there is no level ``"all"`` row, an image has two rows
        for one method, ``reference`` is not among the methods, or an image is not in
        the sheet.
    """
    _require_columns(seg_rows, ("image_id", "method", "level", "status", *METRIC_NAMES),
                     "seg_rows")
    rows = seg_rows.loc[seg_rows["level"].astype(str) == "all"].copy()
    if rows.empty:
        raise ValueError("seg_rows has no rows of level 'all'")
    rows["image_id"] = rows["image_id"].astype(str)
    if rows.duplicated(["image_id", "method"]).any():
        dup = rows.loc[rows.duplicated(["image_id", "method"]), ["image_id", "method"]]
        raise ValueError(f"seg_rows has repeated (image_id, method): {dup.values.tolist()[:10]}")
    methods = _method_order(rows["method"].unique())
    if reference not in methods:
        raise ValueError(f"reference must be one of the methods {methods}; got {reference!r}")
    strata = _strata_of(rows["image_id"], sheet)
    rows["ok"] = rows["status"].astype(str) == "ok"
    # A failed image has no segmentation: it counts as Dice 0 in the all-images column.
    rows["dice_all_images"] = rows["dice"].astype(np.float64).where(rows["ok"], 0.0)
    by_method = {m: g.set_index("image_id") for m, g in rows.groupby("method")}
    ref_dice = by_method[reference]["dice_all_images"]

    out = []
    for method in methods:
        g = by_method[method]
        for stratum in strata:
            s = g.loc[g.index.isin(strata[stratum])]
            ok = s.loc[s["ok"]]
            rec = {"method": method, "stratum": stratum, "source": _THIS_RUN,
                   "n_images": len(s), "n_succeeded": len(ok), "n_failed": len(s) - len(ok)}
            for m in METRIC_NAMES:
                rec.update(_prefixed(m, _summary(ok[m], n_boot=n_boot, seed=seed,
                                                 scale=100.0)))
            rec.update(_prefixed("dice_all_images", _summary(
                s["dice_all_images"], n_boot=n_boot, seed=seed, scale=100.0)))
            if method == reference:
                rec["wilcoxon_n"], rec["wilcoxon_p"] = np.nan, np.nan
            else:
                rec["wilcoxon_n"], rec["wilcoxon_p"] = _wilcoxon(
                    s["dice_all_images"], ref_dice.loc[ref_dice.index.isin(strata[stratum])])
            out.append(rec)
            paper = PAPER_TABLE2["metrics"].get(method)
            if stratum == "all" and include_paper and paper is not None:
                prec = {"method": method, "stratum": "all", "source": _PAPER2,
                        "n_images": PAPER_TABLE2["n_images"]}
                for m, (mean, sd) in paper.items():
                    prec.update({f"{m}_mean": mean, f"{m}_sd": sd})
                out.append(prec)
    columns = (["method", "stratum", "source", "n_images", "n_succeeded", "n_failed"]
               + [f"{m}_{s}" for m in (*METRIC_NAMES, "dice_all_images") for s in _STATS]
               + ["wilcoxon_n", "wilcoxon_p"])
    table = pd.DataFrame(out).reindex(columns=columns)

    excluded = []
    for method in methods:
        g = by_method[method]
        bad = g.loc[~g["ok"], "status"]
        if len(bad):
            excluded.append(f"{method}: {len(bad)} of {len(g)} ({_reason_counts(bad)})")
    notes = [
        "Values in %. Metric columns: mean ± SD [bootstrap 95 % CI of the mean] over the "
        "images whose detection succeeded (status 'ok'), as the paper averages; "
        "'Dice, all images' averages over every image, a failed detection counting as "
        "Dice 0.",
        "Region metrics on the union of L1-L5 against the ground-truth union (Eq. 11, 12). "
        "Jaccard |GT n SG| / |GT u SG| is what the paper calls 'precision'; Precision is "
        "the usual |GT n SG| / |SG|, which the paper does not report.",
        "Excluded from the paper-style columns: "
        + ("; ".join(excluded) if excluded else "none") + ".",
        f"Wilcoxon p: two-sided paired signed-rank test of per-image Dice (all images) "
        f"against {reference} on the images both methods have; NaN for {reference} itself "
        "and when all differences are 0.",
        f"CIs: {n_boot} bootstrap resamples, seed {seed}.",
    ]
    if include_paper:
        notes.append(f"Rows '{_PAPER2}' hold the paper's numbers, not results of this run: "
                     f"{PAPER_TABLE2['source']}, {PAPER_TABLE2['n_images']} clinical test "
                     "images; the paper's 'Precision' column is shown as Jaccard, and its SD "
                     "0.035 for PN+UNet specificity is as printed.")
    table.attrs["notes"] = notes
    return table


# ----------------------------------------------------------------------------- writing
_LABELS = {
    "stratum": "stratum",
    "source": "source",
    "method": "method",
    "n_images": "n",
    "n_succeeded": "n ok",
    "n_failed": "n failed",
    "n_implausible": "n implausible",
    "n_with_spacing": "n with spacing",
    "success_rate_pct": "success %",
    "dice": "Dice",
    "jaccard": "Jaccard (paper: precision)",
    "precision": "Precision",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "dice_all_images": "Dice, all images",
    "wilcoxon_n": "Wilcoxon n",
    "wilcoxon_p": "Wilcoxon p",
}
_LEVEL_UNIT = re.compile(r"^(L[1-5]|all)_(px|mm)$")


def _label(name: str) -> str:
    m = _LEVEL_UNIT.match(name)
    if m:
        return f"{m.group(1)} ({m.group(2)})"
    return _LABELS.get(name, name.replace("_", " "))


def _fmt_number(value, name: str, decimals: int) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) or name.startswith("n_") or name.endswith("_n"):
        return str(int(round(float(value))))
    if isinstance(value, (float, np.floating)):
        if name.endswith("_p"):
            return f"{value:.3g}"
        return f"{value:.{decimals}f}"
    return str(value)


def _format_cells(df: pd.DataFrame, *, pm: str, decimals: int) -> tuple[pd.DataFrame, list[str]]:
    """One string cell per column or per ``q_mean/_sd/_ci_low/_ci_high`` group.

    Also returns the labels of the columns (or groups) left out for having no value.
    """
    cells, used, dropped = {}, set(), []
    for col in df.columns:
        if col in used:
            continue
        if col.endswith("_mean"):
            base = col[: -len("_mean")]
            group = {s: f"{base}_{s}" for s in _STATS if f"{base}_{s}" in df.columns}
            used.update(group.values())
            if df[list(group.values())].isna().all().all():
                dropped.append(_label(base))
                continue
            f = f"{{:.{decimals}f}}"
            texts = []
            for _, r in df.iterrows():
                mean = r[group["mean"]]
                if pd.isna(mean):
                    texts.append("n/a")
                    continue
                t = f.format(mean)
                if "sd" in group and pd.notna(r[group["sd"]]):
                    t += f"{pm}{f.format(r[group['sd']])}"
                if ("ci_low" in group and "ci_high" in group
                        and pd.notna(r[group["ci_low"]]) and pd.notna(r[group["ci_high"]])):
                    t += f" [{f.format(r[group['ci_low']])}, {f.format(r[group['ci_high']])}]"
                texts.append(t)
            cells[_label(base)] = texts
        else:
            used.add(col)
            if df[col].isna().all():
                dropped.append(_label(col))
                continue
            cells[_label(col)] = [_fmt_number(v, col, decimals) for v in df[col]]
    return pd.DataFrame(cells), dropped


# Characters that pandas' LaTeX escaping (``Styler.format(escape="latex")``) leaves alone:
# set after it, as text-mode LaTeX.
_LATEX_AFTER_PANDAS = {"|": r"\textbar{}", "±": r"$\pm$", "×": r"$\times$"}
_LATEX_AFTER_PANDAS_RE = re.compile("|".join(re.escape(k) for k in _LATEX_AFTER_PANDAS))
# For the caption and the notes, which pandas does not escape: the same characters as
# pandas' escaping, then the ones above.
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                   "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", **_LATEX_AFTER_PANDAS}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def _latex_escape(text: str) -> str:
    """Text-mode LaTeX of a caption or a note."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group(0)], str(text))


def _latex_after_pandas(text: str) -> str:
    return _LATEX_AFTER_PANDAS_RE.sub(lambda m: _LATEX_AFTER_PANDAS[m.group(0)], str(text))


def _to_latex(cells: pd.DataFrame, *, caption: str) -> str:
    """The LaTeX table of formatted text cells: pandas' ``Styler.to_latex`` escapes
    the cells and the headers (booktabs rules, one left-aligned column each)."""
    styler = (cells.style.hide(axis="index")
              .format(escape="latex", formatter=_latex_after_pandas)
              .format_index(escape="latex", formatter=_latex_after_pandas, axis=1))
    return styler.to_latex(caption=_latex_escape(caption), hrules=True,
                           column_format="l" * cells.shape[1])


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_table(df, stem, *, title: str, notes=(), decimals: int = 2) -> list[Path]:
    """Write a summary table as ``stem.csv``, ``stem.md`` and ``stem.tex``.

    Parameters
    ----------
    df : pandas.DataFrame
        The table, e.g. from :func:`table1` or :func:`table2`. Column groups
        ``q_mean``, ``q_sd``, ``q_ci_low``, ``q_ci_high`` become one formatted cell
        ``mean ± SD [low, high]`` in Markdown and LaTeX.
    stem : str or path-like
        Output path without suffix; parent folders are created.
    title : str
        Heading of the Markdown file and caption of the LaTeX table.
    notes : sequence of str
        Notes printed under the table, after those in ``df.attrs["notes"]``; default none.
    decimals : int
        Decimals of the formatted numbers (p-values get 3 significant digits);
        default 2, as the paper prints.

    Returns
    -------
    list of pathlib.Path
        ``[stem.csv, stem.md, stem.tex]``.

    Raises
    ------
    ValueError
        If ``df`` is not a DataFrame, ``title`` is empty or ``decimals`` is negative.

    Notes
    -----
    The CSV keeps every column at full precision (machine-readable). Markdown and LaTeX
    omit columns with no value at all (e.g. mm when no spacing is known) and say so in a
    note; missing cells read ``n/a``. Each file is written through
    :func:`lumbar_core.io.atomic_path`, so a reader never sees half a table.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame; got {type(df).__name__}")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string; got {title!r}")
    if not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer; got {decimals!r}")
    stem = Path(stem)
    csv_path, md_path, tex_path = (Path(f"{stem}{ext}") for ext in (".csv", ".md", ".tex"))
    md_cells, dropped = _format_cells(df, pm=" ± ", decimals=decimals)
    all_notes = [str(n) for n in (*df.attrs.get("notes", ()), *notes)]
    if dropped:
        all_notes.append("Left out here for having no value (the CSV keeps them): "
                         + ", ".join(dropped) + ".")

    _write_text(csv_path, df.to_csv(index=False))

    md = [f"# {title}", "", md_cells.to_markdown(index=False, disable_numparse=True), ""]
    if all_notes:
        md += ["Notes:", ""] + [f"- {n}" for n in all_notes] + [""]
    _write_text(md_path, "\n".join(md))

    tex = _to_latex(md_cells, caption=title)
    if all_notes:
        body = "\n".join([r"\par\smallskip\footnotesize"]
                         + [_latex_escape(n) + r"\par" for n in all_notes])
        head, sep, tail = tex.rpartition(r"\end{table}")
        tex = f"{head}{body}\n{sep}{tail}"
    _write_text(tex_path, tex)
    return [csv_path, md_path, tex_path]
