"""lumbar_core.steps.report: the overlay of one image, whatever its detection found."""

import numpy as np
import pytest

from lumbar_core import io, phantom_io, plots
from lumbar_core.preprocess import Geometry
from lumbar_core.steps.report import image_overlay


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
    title = image_overlay(image_id="film", image=image, peaks=peaks, geometry=geometry,
                          refined=refined, out_png=folder / "o" / "film.png")
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
    title = image_overlay(image_id="film", image=image, peaks=peaks, geometry=geometry,
                          refined=refined, out_png=folder / "film.png")
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
    title = image_overlay(image_id="broken", image=broken, peaks=peaks, geometry=geometry,
                          refined=refined, out_png=folder / "b.png")
    assert title.startswith("broken: excluded (truncated PNG file); image not readable: ")
    assert str(broken) in title and (folder / "b.png").exists()
