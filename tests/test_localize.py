import numpy as np
import pytest

from lumbar_core.localize import confidence_targets, l5_sigma2, select_peaks

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


def test_constant_map_fails_cleanly():
    assert select_peaks(np.zeros((512, 256)))["status"].startswith("failed")
    with pytest.raises(ValueError, match="odd"):
        select_peaks(np.zeros((512, 256)), window=30)
