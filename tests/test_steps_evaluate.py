"""lumbar_core.steps.evaluate on tiny arrays: per-image metrics and the QC table."""

import numpy as np
import pytest

from lumbar_core import LEVELS, io
from lumbar_core.metrics import METHODS
from lumbar_core.steps.evaluate import PREDICTION_SOURCES, metrics, qc, tables


def _metrics_inputs(tmp_path, *, detected=True, points_status="ok"):
    """Ground truth: L1..L5 as 2-row bands of an 12 x 4 label image; every method
    predicts it exactly, except the whole-image U-net, which misses L5."""
    gt = np.zeros((12, 4), np.uint8)
    for k in range(5):
        gt[2 * k:2 * k + 2] = k + 1
    centres = [[1.5, 2.0 * k + 0.5] for k in range(5)]
    points = tmp_path / "gt.json"
    io.write_json(points, {"status": points_status, "message": "" if points_status == "ok"
                           else "missing level L4", "centres_io": centres,
                           "centres_input": centres, "pixel_spacing_mm": [0.5, 0.5]})
    masks = tmp_path / "gt.npz"
    io.save_npz(masks, io=gt)
    peaks = tmp_path / "peaks.json"
    io.write_json(peaks, {"status": "ok", "centres_io": centres, "centres_input": centres}
                  if detected else {"status": "failed", "message": "3 peaks"})
    predictions = {}
    for source in PREDICTION_SOURCES:
        predictions[source] = tmp_path / f"{source}.npz"
        if source == "refined":
            io.save_npz(predictions[source], mnet_labels_io=gt, unet_labels_io=gt)
        else:
            pred = np.where(gt == 5, 0, gt) if source == "unet_whole" else gt
            io.save_npz(predictions[source], labels_io=pred.astype(np.uint8))
    return points, masks, peaks, predictions


def test_metrics_exact_on_a_perfect_and_an_imperfect_method(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path)
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    metrics(image_id="img", points=points, masks=masks, peaks=peaks, predictions=predictions,
            out_segmentation=seg, out_localization=loc)
    loc_rows = io.read_table(loc)
    assert loc_rows["level"].tolist() == list(LEVELS)
    assert (loc_rows["error_px"] == 0).all() and (loc_rows["error_mm"] == 0).all()
    assert loc_rows["success"].all() and (loc_rows["status"] == "ok").all()
    rows = io.read_table(seg)
    # The baselines first, then the two-stage methods; each with "all" and L1..L5.
    assert list(dict.fromkeys(rows["method"])) == list(reversed(METHODS))
    overall = rows[rows["level"] == "all"].set_index("method")
    assert (overall["status"] == "ok").all()
    # Orig UNet misses L5 (8 of 40 pixels): Dice 2*32 / (40 + 32).
    assert overall.loc["Orig UNet", "dice"] == pytest.approx(64 / 72)
    assert (overall.drop(index="Orig UNet")["dice"] == 1.0).all()


def test_metrics_failed_detection_counts_the_two_stage_methods_as_empty(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path, detected=False)
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    metrics(image_id="img", points=points, masks=masks, peaks=peaks, predictions=predictions,
            out_segmentation=seg, out_localization=loc)
    loc_rows = io.read_table(loc)
    assert loc_rows["error_px"].isna().all() and not loc_rows["success"].any()
    assert (loc_rows["status"] == "failed: 3 peaks").all()
    overall = io.read_table(seg).query("level == 'all'").set_index("method")
    two_stage = [m for m, (_, _, pose) in METHODS.items() if pose]
    assert (overall.loc[two_stage, "status"] == "detection failed").all()
    assert (overall.loc[two_stage, "dice"] == 0).all()
    assert overall.loc["Orig MNet", "dice"] == 1.0


def test_metrics_excluded_image_writes_its_reason(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path, points_status="excluded")
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    metrics(image_id="img", points=points, masks=masks, peaks=peaks, predictions=predictions,
            out_segmentation=seg, out_localization=loc)
    rows = io.read_table(seg)
    assert len(rows) == len(METHODS)
    assert (rows["status"] == "excluded: missing level L4").all()
    assert (io.read_table(loc)["status"] == "excluded: missing level L4").all()


def test_qc_lists_only_what_is_not_ok(tmp_path):
    ok, bad = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(ok, {"status": "ok"})
    io.write_json(bad, {"status": "excluded", "message": "truncated PNG file"})
    failed = tmp_path / "c.json"
    io.write_json(failed, {"status": "failed", "message": "3 peaks"})
    rows = qc(geometry=[ok, bad], points=[ok], peaks=[failed], out=tmp_path / "qc.tsv")
    assert rows == [
        {"image_id": "b", "stage": "preprocess", "status": "excluded",
         "message": "truncated PNG file"},
        {"image_id": "c", "stage": "select_peaks", "status": "failed", "message": "3 peaks"},
    ]
    table = io.read_table(tmp_path / "qc.tsv")
    assert table.columns.tolist() == ["image_id", "stage", "status", "message"]
    assert table["image_id"].tolist() == ["b", "c"]


def test_qc_of_a_clean_cohort_is_an_empty_table_with_its_columns(tmp_path):
    ok = tmp_path / "a.json"
    io.write_json(ok, {"status": "ok"})
    assert qc(geometry=[ok], points=[ok], peaks=[ok], out=tmp_path / "qc.tsv") == []
    table = io.read_table(tmp_path / "qc.tsv")
    assert table.empty and table.columns.tolist() == ["image_id", "stage", "status", "message"]


def test_tables_without_an_image_to_evaluate_say_so(tmp_path):
    qc_tsv = tmp_path / "qc.tsv"
    qc(geometry=[], points=[], peaks=[], out=qc_tsv)
    with pytest.raises(ValueError, match="no image to evaluate.*predict_splits"):
        tables(segmentation=[], localization=[], qc=qc_tsv, sheet=[],
               table1_stem=tmp_path / "table1", table2_stem=tmp_path / "table2")
    assert not list(tmp_path.glob("table*"))
