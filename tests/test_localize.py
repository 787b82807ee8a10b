import numpy as np
import pytest

from lumbar_core.localize import (
    LEVELS,
    PLAUSIBILITY,
    check_plausibility,
    confidence_targets,
    l5_sigma2,
    select_peaks,
)

CENTRES = np.array([[128, 120], [130, 180], [131, 240], [129, 300], [126, 360]], float)


def _map(centres, sigma2=36.0, extra=()):
    _, y = confidence_targets(centres, sigma2)
    for (x, yy, amp, s2) in extra:
        rows, cols = np.mgrid[0:512, 0:256]
        y = np.maximum(y, amp * np.exp(-((cols - x) ** 2 + (rows - yy) ** 2) / s2))
    return y


def test_targets_peak_and_width():
    y_l5, y_l15 = confidence_targets(CENTRES, 36.0)
    assert y_l5.shape == y_l15.shape == (512, 256) and y_l5.dtype == np.float32
    for x, y in CENTRES.astype(int):
        assert y_l15[y, x] == pytest.approx(1.0)
    assert y_l5[360, 126] == pytest.approx(1.0) and y_l5[120, 128] < 1e-6
    # exp(-d^2 / sigma^2): at d = sigma the value is 1/e.
    assert y_l5[360, 126 + 6] == pytest.approx(np.exp(-1), rel=1e-5)
    assert np.allclose(y_l15, np.maximum.reduce([confidence_targets(np.roll(CENTRES, k, 0), 36.0)[0]
                                                 for k in range(5)]))


def test_sigma2_is_a_quarter_of_the_l5_height():
    assert l5_sigma2(40.0) == 10.0
    with pytest.raises(ValueError):
        l5_sigma2(0.0)


def test_five_clean_peaks():
    r = select_peaks(_map(CENTRES))
    assert r["status"] == "ok"
    got = np.array([r["centres"][k] for k in ("L1", "L2", "L3", "L4", "L5")])
    assert np.allclose(got, CENTRES)


def test_thoracic_peak_above_l1_is_not_picked():
    r = select_peaks(_map(np.vstack([[[127, 60]], CENTRES])[1:], extra=[(127, 60, 1.0, 36.0)]))
    assert r["status"] == "ok"
    assert r["centres"]["L1"] == [128.0, 120.0]
    assert len([c for c in r["candidates"] if c["kept"]]) == 6


def test_weak_spurious_peak_below_l5_is_dropped():
    r = select_peaks(_map(CENTRES, extra=[(120, 440, 0.45, 4.0)]))
    spurious = [c for c in r["candidates"] if c["y"] == 440]
    assert spurious and not spurious[0]["kept"]
    assert r["status"] == "ok" and r["centres"]["L5"] == [126.0, 360.0]


def test_four_peaks_fail_and_are_recorded():
    r = select_peaks(_map(CENTRES[:4].tolist() + [[129, 300]]))
    assert r["status"].startswith("failed: fewer than 5 peaks")
    assert r["centres"] == {}


def test_two_peaks_in_one_window_are_two_candidates():
    centres = CENTRES.copy()
    centres[0] = [128, 165]  # 15 px above L2: both inside one 31 x 31 window
    r = select_peaks(_map(centres, sigma2=9.0))
    ys = sorted(c["y"] for c in r["candidates"] if c["kept"])
    assert 165.0 in ys and 180.0 in ys
    assert r["status"] == "ok"


def test_peaks_touching_the_border():
    centres = CENTRES.copy()
    centres[4] = [0, 511]
    r = select_peaks(_map(centres))
    assert r["status"] == "ok" and r["centres"]["L5"] == [0.0, 511.0]


def test_map_without_a_confident_peak_fails_as_no_vertebra_found():
    # A blank film: the network's map is faint noise, which Otsu's threshold would split
    # into hundreds of candidates and five of them into an "ok" detection.
    rng = np.random.default_rng(0)
    faint = 0.004 * rng.random((512, 256))
    r = select_peaks(faint)
    assert r["status"] == "failed: no vertebra found: the confidence map peaks at 0.004, below min_peak 0.05"
    assert r["candidates"] == [] and r["centres"] == {}
    assert select_peaks(faint, min_peak=0.0)["status"] == "ok"  # the paper's steps alone
    # Weak but real peaks above the floor are judged by the paper's steps as before.
    weak = 0.2 * _map(CENTRES)
    assert select_peaks(weak)["status"] == "ok" == select_peaks(weak, min_peak=0.0)["status"]
    assert select_peaks(weak, min_peak=0.25)["status"].startswith("failed: no vertebra found")
    for y in (weak, np.zeros((512, 256))):
        with pytest.raises(ValueError, match="min_peak"):
            select_peaks(y, min_peak=-0.1)


def test_constant_map_fails_cleanly():
    assert select_peaks(np.zeros((512, 256)))["status"].startswith("failed")
    with pytest.raises(ValueError, match="odd"):
        select_peaks(np.zeros((512, 256)), window=30)


# --------------------------------------------------------------------------- plausibility

FILM = (-0.5, -0.5, 1535.5, 3071.5)  # a 2:1 film filling Io


def _spine(tilt_deg=6.0, spacing=250.0, lordosis_deg=30.0, top=(760.0, 1000.0)):
    """Five centres along an arc: the direction turns by lordosis/3 at each level."""
    angles = np.radians(tilt_deg + lordosis_deg / 2 - np.arange(4) * lordosis_deg / 3)
    steps = spacing * np.column_stack([np.sin(angles), np.cos(angles)])
    return np.vstack([top, top + np.cumsum(steps, axis=0)])


@pytest.mark.parametrize("kwargs", [{}, {"tilt_deg": -25.0}, {"tilt_deg": 30.0},
                                    {"lordosis_deg": 55.0}, {"spacing": 180.0},
                                    {"spacing": 330.0}])
def test_plausible_spines_pass(kwargs):
    spine = _spine(**kwargs)
    out = check_plausibility(spine, film_box=FILM, pixel_spacing_mm=0.14)
    assert out["plausible"] and out["implausible_reason"] == ""
    # Mirrored (a film facing the other way) passes as well.
    mirrored = spine * [-1, 1] + [1535, 0]
    assert check_plausibility(mirrored, film_box=FILM)["plausible"]
    assert out["measures"]["length_mm"] == pytest.approx(out["measures"]["length_px"] * 0.14)


def _swap(c, i, j):
    c = c.copy()
    c[[i, j]] = c[[j, i]]
    return c


@pytest.mark.parametrize("case, reason", [
    # five points in a row along the bottom edge of the film
    (np.column_stack([np.linspace(100, 1400, 5), 3050.0 + np.arange(5) * 0.5]), "tilt"),
    (_swap(_spine(), 1, 2), "order"),
    # a skipped level: one spacing twice the others
    (np.vstack([_spine(lordosis_deg=0)[:3], _spine(lordosis_deg=0)[3:] + [0, 250]]), "spacing"),
    # a zig-zag across the spine
    (_spine(lordosis_deg=0) + [[0, 0], [200, 0], [0, 0], [200, 0], [0, 0]], "curvature"),
    # five peaks bunched together: L1-L5 30 px, 1 % of the film
    (_spine(spacing=8.0), "length"),
    # a centre in the padding above a 1:1 film (content rows 767.5-2303.5)
    (_spine(top=(760.0, 700.0)), "film"),
])
def test_implausible_detections_fail_with_their_reason(case, reason):
    film = FILM if reason != "film" else (-0.5, 767.5, 1535.5, 2303.5)
    out = check_plausibility(case, film_box=film)
    assert not out["plausible"]
    assert out["implausible_reason"].split(":")[0] == reason


def test_plausibility_length_in_mm_and_limits_from_the_caller():
    spine = _spine()  # L1-L5 about 990 px
    assert check_plausibility(spine, pixel_spacing_mm=0.14)["plausible"]
    out = check_plausibility(spine, pixel_spacing_mm=0.5)  # 495 mm: no lumbar spine
    assert not out["plausible"] and "mm" in out["implausible_reason"]
    strict = check_plausibility(_spine(tilt_deg=20.0), max_tilt_deg=10.0)
    assert strict["implausible_reason"].startswith("tilt:") and "at most 10" in \
        strict["implausible_reason"]
    assert set(PLAUSIBILITY) <= set(check_plausibility.__kwdefaults__)


@pytest.mark.parametrize("kwargs", [{"centres": np.zeros((4, 2))},
                                    {"centres": [[0, np.nan]] * 5},
                                    {"max_tilt_deg": -1.0}, {"max_spacing_ratio": 0.5},
                                    {"pixel_spacing_mm": 0.0}])
def test_plausibility_rejects_bad_input(kwargs):
    kwargs = {"centres": _spine(), **kwargs}
    with pytest.raises(ValueError, match=next(k for k in kwargs if k != "centres" or
                                              len(kwargs) == 1)):
        check_plausibility(kwargs.pop("centres"), **kwargs)


def _write_inputs(tmp_path, centres_i, *, shape=(2400, 1200)):
    from lumbar_core import io
    from lumbar_core.preprocess import Geometry

    _, y = confidence_targets(centres_i, 9.0)
    io.save_npz(tmp_path / "maps.npz", y_l15=y.astype(np.float16), status="ok", message="")
    io.write_json(tmp_path / "geometry.json", {"status": "ok",
                                               "geometry": Geometry(shape).to_dict(),
                                               "pixel_spacing_mm": [0.14, 0.14]})
    return tmp_path / "maps.npz", tmp_path / "geometry.json"


SETTINGS = {"window": 31, "score_fraction": 0.5, "min_distance": 3,
            "plausibility": dict(PLAUSIBILITY)}
BOTTOM_ROW = np.column_stack([np.linspace(20, 236, 5), np.arange(500.0, 505.0)])


def test_select_peaks_stage_records_plausibility(tmp_path):
    from lumbar_core.steps.pose import select_peaks as select_peaks_step

    maps, geo = _write_inputs(tmp_path, _spine() / 6.0)
    out = select_peaks_step(maps=maps, geometry=geo, out=tmp_path / "peaks.json",
                            settings=SETTINGS)
    assert out["status"] == "ok" and out["plausible"] is True
    assert out["implausible_reason"] == ""
    assert out["plausibility"]["length_mm"] == pytest.approx(990 * 0.14 / 1.28, rel=0.05)


def test_implausible_detection_without_annotation_gets_no_crop_and_is_in_qc(tmp_path):
    from lumbar_core import io
    from lumbar_core.steps.evaluate import qc
    from lumbar_core.steps.pose import select_peaks as select_peaks_step
    from lumbar_core.steps.segment import crop

    maps, geo = _write_inputs(tmp_path, BOTTOM_ROW)
    out = select_peaks_step(maps=maps, geometry=geo, out=tmp_path / "x.json", settings=SETTINGS)
    assert out["status"] == "implausible" and out["plausible"] is False
    assert out["message"] == out["implausible_reason"] and out["message"].startswith("tilt:")
    assert len(out["centres_input"]) == 5  # kept for the overlays
    io.save_npz(tmp_path / "io.npz", io=np.zeros((3072, 1536), np.uint16), status="ok",
                message="")
    record = crop(io_image=tmp_path / "io.npz", peaks=tmp_path / "x.json",
                  out=tmp_path / "crop.npz", patch_size=64)
    crop = io.load_npz(tmp_path / "crop.npz")
    assert record["status"] == "implausible" and "patches" not in crop
    rows = qc(geometry=[geo], points=[], peaks=[tmp_path / "x.json"])
    assert rows == [{"image_id": "x", "stage": "select_peaks", "status": "implausible",
                     "message": out["implausible_reason"]}]


def test_implausible_detection_of_an_annotated_image_stays_evaluated(tmp_path):
    from lumbar_core.steps.evaluate import qc
    from lumbar_core.steps.pose import select_peaks as select_peaks_step

    maps, geo = _write_inputs(tmp_path, BOTTOM_ROW)
    out = select_peaks_step(maps=maps, geometry=geo, out=tmp_path / "y.json", settings=SETTINGS,
                            annotated=True)
    assert out["status"] == "ok" and out["plausible"] is False
    assert out["implausible_reason"].startswith("tilt:")
    (row,) = qc(geometry=[geo], points=[], peaks=[tmp_path / "y.json"])
    assert row["status"] == "implausible" and row["message"].startswith(out["implausible_reason"])


def _phantom_check(job):
    """Plausibility of the ground-truth centres of one demo image, as select_peaks sees them."""
    from lumbar_core import phantom
    from lumbar_core.preprocess import Geometry

    seed, split_code, k, difficulty, style = job
    plan = phantom._cohort_draw(seed, split_code, k)
    # The spine and film size render_phantom would draw, without rendering the image.
    p, anatomy, frame, _ = phantom._spine(plan["seed"], plan["modality"], plan["abnormal"],
                                          difficulty, style, {})
    ann = phantom._annotation(p, anatomy, frame)
    g = Geometry(tuple(ann["image_shape"]))
    centres = g.input_to("io", [ann["vertebrae"][lv]["centre"] for lv in LEVELS])
    out = check_plausibility(centres, film_box=g.film_box("io"),
                             pixel_spacing_mm=g.pixel_spacing("io", ann["pixel_spacing_mm"]),
                             **PLAUSIBILITY)
    return (split_code, k), out


def test_every_training_and_validation_spine_of_the_demo_cohort_is_plausible():
    """The default limits pass all of the demo's training and validation spines."""
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "config.yaml").read_text())
    demo = config["demo"]
    jobs = ([(demo["seed"], 0, k, demo["difficulty"], demo["style"])
             for k in range(demo["n_train"])]
            + [(demo["seed"], 1, k, demo["difficulty"], demo["style"])
               for k in range(demo["n_val"])])
    assert len(jobs) >= 100
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_phantom_check, jobs))
    failed = {key: out["implausible_reason"] for key, out in results if not out["plausible"]}
    assert not failed, failed
    tilts = [out["measures"]["tilt_deg"] for _, out in results]
    assert max(tilts) < PLAUSIBILITY["max_tilt_deg"] and np.std(tilts) > 1.0  # not degenerate
