"""Rules of ``rules/evaluate.smk``: paper 3.3, per-image metrics, cohort QC and the tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import LEVELS, io
from ..metrics import METHODS
from ._common import NO_IMAGE_IN_SPLITS, StrPath, image_id_of, read_rows

__all__ = ["PREDICTION_SOURCES", "QC_COLUMNS", "metrics", "qc", "tables"]

#: Table 2's methods in the order the per-image rows list them: baselines first.
_ROW_ORDER = tuple(reversed(METHODS))

#: The predictions rule ``metrics`` reads: one npz per source (the refined masks hold
#: both level-set methods).
PREDICTION_SOURCES = tuple(dict.fromkeys(src for src, _, _ in METHODS.values()))

#: Columns of ``qc.tsv``.
QC_COLUMNS = ["image_id", "stage", "status", "message"]


def metrics(*, image_id: str, points: StrPath, masks: StrPath, peaks: StrPath,
            predictions: Mapping[str, StrPath], out_segmentation: StrPath,
            out_localization: StrPath) -> None:
    """Rule ``metrics``: localisation rows (five levels) and region rows (six methods).

    Region metrics are computed in ``Io`` on the union of L1..L5 (``level == "all"``, as
    the paper does) and per level (:func:`lumbar_core.metrics.label_metrics`). An image
    whose detection failed gets, for the two-stage methods, the metrics of an empty
    prediction with status ``"detection failed"``. The localisation rows carry
    ``plausible`` from the detection (empty without one).

    Parameters
    ----------
    image_id : str
        The image's id.
    points, masks : path
        Its ground-truth JSON and masks npz (rule ``ground_truth``).
    peaks : path
        Its detected centres JSON (rule ``select_peaks``).
    predictions : dict of str to path
        Each of :data:`PREDICTION_SOURCES` to the image's npz of that source.
    out_segmentation, out_localization : path
        Output TSVs.
    """
    import pandas as pd

    from ..metrics import centre_errors, detection_success, label_metrics

    truth = io.read_json(points)
    detection = io.read_json(peaks)
    if truth.get("status") != "ok":
        reason = truth.get("message", "")
        io.write_table(out_localization, pd.DataFrame(
            [{"image_id": image_id, "level": lv, "error_px": np.nan, "error_mm": np.nan,
              "success": False, "status": f"excluded: {reason}", "plausible": np.nan}
             for lv in LEVELS]))
        io.write_table(out_segmentation, pd.DataFrame(
            [{"image_id": image_id, "method": m, "level": "all", "status": f"excluded: {reason}"}
             for m in _ROW_ORDER]))
        return
    gt_io = np.array(truth["centres_io"])
    detected = detection.get("status") == "ok"
    if detected:
        pred_io = np.array(detection["centres_io"])
        errors = centre_errors(pred_io, gt_io)
        spacing = truth.get("pixel_spacing_mm")
        if spacing:
            errors_mm = centre_errors(detection["centres_input"], truth["centres_input"],
                                      spacing=spacing)
        else:
            errors_mm = np.full(5, np.nan)
        success = detection_success(pred_io, gt_io)
        status = "ok"
    else:
        errors = errors_mm = np.full(5, np.nan)
        success = False
        status = f"{detection.get('status')}: {detection.get('message', '')}"
    # Whether the five centres form a plausible spine (empty when there were no five).
    plausible = detection.get("plausible", np.nan)
    io.write_table(out_localization, pd.DataFrame(
        {"image_id": image_id, "level": list(LEVELS), "error_px": errors, "error_mm": errors_mm,
         "success": success, "status": status, "plausible": plausible}))
    gt = io.load_npz(masks)["io"]
    rows = []
    for method in _ROW_ORDER:
        source, key, two_stage = METHODS[method]
        data = io.load_npz(predictions[source])
        if two_stage and not detected:
            pred, row_status = np.zeros_like(gt), "detection failed"
        else:
            pred, row_status = data[key], "ok"
        for row in label_metrics(gt, pred):
            rows.append({"image_id": image_id, "method": method, "status": row_status, **row})
    io.write_table(out_segmentation, pd.DataFrame(rows))


def qc(*, geometry: Sequence[StrPath], points: Sequence[StrPath], peaks: Sequence[StrPath],
       out: StrPath | None = None) -> list[dict]:
    """Rule ``qc``: one row per image and stage whose status is not ``ok``.

    An implausible detection (rule ``select_peaks``) has a row with status
    ``implausible`` and the reason, also in annotated images whose status stays ``ok``.

    Parameters
    ----------
    geometry, points, peaks : sequence of path
        The per-image JSON files of rules ``preprocess``, ``ground_truth`` and
        ``select_peaks``.
    out : path, optional
        Output TSV with columns ``image_id``, ``stage``, ``status``, ``message``; not
        written when None.

    Returns
    -------
    list of dict
        The rows.
    """
    rows = []
    for stage, paths in (("preprocess", geometry), ("ground_truth", points),
                         ("select_peaks", peaks)):
        for path in paths:
            data = io.read_json(path)
            if data.get("status") != "ok":
                rows.append({"image_id": image_id_of(path), "stage": stage,
                             "status": data.get("status"), "message": data.get("message", "")})
            elif data.get("plausible") is False:  # annotated: evaluated all the same
                rows.append({"image_id": image_id_of(path), "stage": stage,
                             "status": "implausible",
                             "message": data.get("implausible_reason", "")
                             + " (annotated: still evaluated)"})
    if out is not None:
        import pandas as pd

        io.write_table(out, pd.DataFrame(rows, columns=QC_COLUMNS))
    return rows


def tables(*, segmentation: Sequence[StrPath], localization: Sequence[StrPath], qc: StrPath,
           sheet, table1_stem: StrPath, table2_stem: StrPath, n_boot: int = 2000,
           seed: int = 0) -> None:
    """Rule ``tables``: Table 1 and Table 2 (CSV, Markdown, LaTeX) with strata and CIs.

    Images excluded before evaluation (unreadable file, unusable annotation) are left out
    of both tables; the notes under each table say how many and why.

    Parameters
    ----------
    segmentation, localization : sequence of path
        The per-image TSVs of rule ``metrics``.
    qc : path
        The cohort's ``qc.tsv``.
    sheet : DataFrame or list of dict
        ``image_id``, ``split``, ``modality`` and ``group`` of every image (the strata).
    table1_stem, table2_stem : path
        Output paths without extension; ``.csv``, ``.md`` and ``.tex`` are written.
    n_boot : int, optional
        Bootstrap resamples of the confidence intervals; default 2000.
    seed : int, optional
        Seed of the bootstrap; default 0.

    Raises
    ------
    ValueError
        No image to evaluate: no annotated image in the splits the run predicts (or, in
        a fresh clone, no demo cohort written yet).
    """
    import pandas as pd

    from ..tables import table1, table2, write_table

    if not localization:
        raise ValueError("Tables 1 and 2 have no image to evaluate: "
                         + NO_IMAGE_IN_SPLITS.format(what="annotated "))
    sheet = pd.DataFrame(sheet)
    loc, seg = read_rows(localization), read_rows(segmentation)
    excluded = loc["status"].astype(str).str.startswith("excluded")
    notes = []
    if excluded.any():
        reasons = loc.loc[excluded].groupby("image_id")["status"].first()
        notes.append(f"{reasons.size} image(s) excluded before evaluation: "
                     + "; ".join(f"{i} ({s})" for i, s in reasons.items()))
    problems = io.read_table(qc)
    if len(problems):
        notes.append(f"qc.tsv lists {len(problems)} problem(s) across the cohort.")
    excluded_ids = set(loc.loc[excluded, "image_id"])
    loc = loc.loc[~excluded]
    seg = seg.loc[~seg["image_id"].isin(excluded_ids)]
    t1 = table1(loc, sheet, n_boot=n_boot, seed=seed)
    write_table(t1, Path(table1_stem),
                title="Table 1: centre error (Io pixels) and detection success", notes=notes)
    t2 = table2(seg, sheet, n_boot=n_boot, seed=seed)
    write_table(t2, Path(table2_stem),
                title="Table 2: segmentation of L1-L5 (union, Io space), %", notes=notes)
