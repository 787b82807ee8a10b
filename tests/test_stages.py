"""lumbar_core.stages on tiny arrays: the per-image glue, without Snakemake."""

import numpy as np
import pandas as pd
import pytest

from lumbar_core import LEVELS, io, phantom_io, plots
from lumbar_core.metrics import METHODS
from lumbar_core.preprocess import Geometry
from lumbar_core.stages import (
    PREDICTION_SOURCES,
    _rasterise,
    qc_rows,
    read_rows,
    run_image_overlay,
    run_metrics,
    status_of,
    whole_probabilities_to_masks,
)


def test_status_of_npz_and_json_records():
    assert status_of({}) == ("ok", "")
    assert status_of({"status": np.array("excluded"), "message": np.array("too small")}) == (
        "excluded", "too small")
    assert status_of({"status": "failed", "message": "no peak"}) == ("failed", "no peak")


def test_rasterise_fills_each_outline_with_its_level():
    square = np.array([[1, 1], [4, 1], [4, 4], [1, 4]], float)  # x, y: a 4 x 4 block
    labels = _rasterise([square, square + [0, 5]], (12, 8))
    assert labels.dtype == np.uint8
    assert (labels == 1).sum() == 16 and (labels == 2).sum() == 16
    assert labels[1:5, 1:5].min() == 1 and labels[6:10, 1:5].min() == 2
    assert labels[0].max() == 0 and labels[:, 5:].max() == 0


def test_whole_probabilities_to_masks_upsamples_to_io_and_input():
    geometry = Geometry(input_shape=(10, 6), io_shape=(8, 4), i_shape=(4, 2))
    probs = np.zeros((4, 2, 6), np.float32)
    probs[..., 0] = 0.2
    probs[:2, :, 3] = 0.8  # top half: L3
    out = whole_probabilities_to_masks(probs, geometry)
    assert out["labels_io"].shape == (8, 4) and out["labels_input"].shape == (10, 6)
    assert out["labels_io"].dtype == np.uint8
    assert set(np.unique(out["labels_io"])) == {0, 3}
    assert (out["labels_io"][:3] == 3).all() and (out["labels_io"][-3:] == 0).all()


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


def test_run_metrics_exact_on_a_perfect_and_an_imperfect_method(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path)
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    run_metrics("img", points, masks, peaks, predictions, seg, loc)
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


def test_run_metrics_failed_detection_counts_the_two_stage_methods_as_empty(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path, detected=False)
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    run_metrics("img", points, masks, peaks, predictions, seg, loc)
    loc_rows = io.read_table(loc)
    assert loc_rows["error_px"].isna().all() and not loc_rows["success"].any()
    assert (loc_rows["status"] == "failed: 3 peaks").all()
    overall = io.read_table(seg).query("level == 'all'").set_index("method")
    two_stage = [m for m, (_, _, pose) in METHODS.items() if pose]
    assert (overall.loc[two_stage, "status"] == "detection failed").all()
    assert (overall.loc[two_stage, "dice"] == 0).all()
    assert overall.loc["Orig MNet", "dice"] == 1.0


def test_run_metrics_excluded_image_writes_its_reason(tmp_path):
    points, masks, peaks, predictions = _metrics_inputs(tmp_path, points_status="excluded")
    seg, loc = tmp_path / "seg.tsv", tmp_path / "loc.tsv"
    run_metrics("img", points, masks, peaks, predictions, seg, loc)
    rows = io.read_table(seg)
    assert len(rows) == len(METHODS)
    assert (rows["status"] == "excluded: missing level L4").all()
    assert (io.read_table(loc)["status"] == "excluded: missing level L4").all()


def test_qc_rows_lists_only_what_is_not_ok(tmp_path):
    ok, bad = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(ok, {"status": "ok"})
    io.write_json(bad, {"status": "excluded", "message": "truncated PNG file"})
    failed = tmp_path / "c.json"
    io.write_json(failed, {"status": "failed", "message": "3 peaks"})
    rows = qc_rows([ok, bad], [ok], [failed])
    assert rows == [
        {"image_id": "b", "stage": "preprocess", "status": "excluded",
         "message": "truncated PNG file"},
        {"image_id": "c", "stage": "select_peaks", "status": "failed", "message": "3 peaks"},
    ]


def test_read_rows_concatenates_and_keeps_ids_as_text(tmp_path):
    for name, image_id in (("a.tsv", "0012"), ("b.tsv", "x")):
        io.write_table(tmp_path / name, pd.DataFrame({"image_id": [image_id], "v": [1.5]}))
    rows = read_rows([tmp_path / "a.tsv", tmp_path / "b.tsv"])
    assert rows["image_id"].tolist() == ["0012", "x"] and rows["v"].tolist() == [1.5, 1.5]
    assert read_rows([]).empty


# The overlay of one image, whatever its detection found.

SHAPE = (300, 120)
CANDIDATES = [{"x": 100.0, "y": 400.0, "value": 0.9, "score": 0.5, "kept": True},
              {"x": 120.0, "y": 300.0, "value": 0.8, "score": 0.4, "kept": True},
              {"x": 10.0, "y": 10.0, "value": 0.2, "score": 0.01, "kept": False}]


@pytest.fixture
def image_files(tmp_path):
    image = tmp_path / "film.png"
    ramp = np.tile(np.linspace(0, 60000, SHAPE[1]), (SHAPE[0], 1))
    phantom_io.write_png16(image, ramp.astype(np.uint16))
    geometry = tmp_path / "film.geometry.json"
    io.write_json(geometry, {"status": "ok", "message": "",
                             "geometry": Geometry(SHAPE).to_dict()})
    return tmp_path, image, geometry


@pytest.fixture
def drawn(monkeypatch):
    """The arguments plot_overlay is called with (it still draws)."""
    calls = []
    real = plots.plot_overlay

    def spy(image, out_stem, **kwargs):
        calls.append({"image": image, **kwargs})
        return real(image, out_stem, **kwargs)

    monkeypatch.setattr(plots, "plot_overlay", spy)
    return calls


def test_failed_detection_shows_the_kept_candidates_and_its_status(image_files, drawn):
    folder, image, geometry = image_files
    peaks, refined = folder / "peaks.json", folder / "refined.npz"
    io.write_json(peaks, {"status": "failed", "message": "fewer than 5 peaks (2 kept)",
                          "candidates": CANDIDATES, "centres": {}})
    io.save_npz(refined, status="failed", message="fewer than 5 peaks (2 kept)")
    title = run_image_overlay("film", image, peaks, geometry, refined, folder / "o" / "film.png")
    assert title == "film: failed (fewer than 5 peaks (2 kept))"
    assert (folder / "o" / "film.png").read_bytes().startswith(b"\x89PNG")
    assert not (folder / "o" / "film.pdf").exists()
    expected = Geometry(SHAPE).to_input("i", np.array([[100.0, 400.0], [120.0, 300.0]]))
    np.testing.assert_allclose(drawn[0]["candidates"], expected)
    assert drawn[0]["pred_centres"] is None and drawn[0]["pred_masks"] == {}


def test_detected_image_shows_centres_levels_and_refined_outlines(image_files, drawn):
    folder, image, geometry = image_files
    centres = [[60.0, 50.0 + 40 * k] for k in range(5)]
    peaks, refined = folder / "peaks.json", folder / "refined.npz"
    # Any status select_peaks writes is shown, also one this module does not know.
    io.write_json(peaks, {"status": "implausible", "message": "spacing too small",
                          "candidates": CANDIDATES, "centres_input": centres})
    labels = np.zeros(SHAPE, np.uint8)
    labels[40:60, 50:70] = 1
    io.save_npz(refined, status="ok", message="", mnet_labels_input=labels)
    title = run_image_overlay("film", image, peaks, geometry, refined, folder / "film.png")
    assert title == "film: implausible (spacing too small)"
    call = drawn[0]
    assert call["pred_centres"] == centres and list(call["pred_labels"]) == ["L1", "L2", "L3",
                                                                            "L4", "L5"]
    assert call["candidates"] is None
    np.testing.assert_array_equal(call["pred_masks"]["PN+MNet+LS"], labels)


def test_unreadable_image_still_gets_an_overlay(image_files, drawn):
    folder, _, geometry = image_files
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n")
    peaks, refined = folder / "peaks.json", folder / "refined.npz"
    io.write_json(peaks, {"status": "excluded", "message": "truncated PNG file"})
    io.save_npz(refined, status="excluded", message="truncated PNG file")
    title = run_image_overlay("broken", broken, peaks, geometry, refined, folder / "b.png")
    assert title.startswith("broken: excluded (truncated PNG file); image not readable: ")
    assert str(broken) in title and (folder / "b.png").exists()


def test_fracture_figure_of_a_cohort_with_no_graded_vertebra(tmp_path):
    # Every detection failed or was implausible: the morphometry table has its status
    # columns but no heights, and the figure is drawn empty instead of failing the run.
    from lumbar_core.stages import run_fracture_figure

    table = tmp_path / "morphometry.tsv"
    io.write_table(table, pd.DataFrame({"image_id": ["a", "a"], "source": ["PN+MNet+LS"] * 2,
                                        "level": ["L1", "L2"], "status": ["implausible"] * 2,
                                        "grade": [np.nan, np.nan]}))
    assert run_fracture_figure(table, {}, tmp_path / "fracture_examples") == []
    assert (tmp_path / "fracture_examples.png").exists()
