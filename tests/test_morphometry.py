"""Tests of lumbar_core.morphometry: heights, Genant grades, spine tables, agreement."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.draw import polygon
from sklearn.metrics import cohen_kappa_score

from lumbar_core.morphometry import (
    GRADE_BOUNDS,
    LEVELS,
    POINT_NAMES,
    agreement,
    body_axis,
    genant_grade,
    heights_from_outline,
    measure_spine,
    spine_anterior_direction,
    vertebral_heights,
)

DEPTH, HEIGHT = 140.0, 110.0  # px: a body of about 35 x 27 mm at 0.25 mm per pixel
# One reduction per grade, each more than 1.5 % away from the grade bounds.
GRADE_REDUCTIONS = {0: 0.10, 1: 0.225, 2: 0.325, 3: 0.50}
HEIGHT_KEYS = ("ha_px", "hm_px", "hp_px")


def _outline(ha, hm, hp, *, depth=DEPTH, angle=0.0, centre=(200.3, 180.7), anterior="left"):
    """8-point outline of a body whose walls stand square on its lower end plate.

    The upper end plate runs straight from ``hp`` (posterior) to ``ha`` (anterior);
    ``hm`` below the straight-plate middle height bows both end plates in equally.
    """
    bow = 0.5 * ((ha + hp) / 2.0 - hm)
    uv = np.array([
        [depth, ha], [depth / 2, (ha + hp) / 2 - bow], [0, hp], [0, hp / 2],
        [0, 0], [depth / 2, bow], [depth, 0], [depth, ha / 2],
    ])
    uv -= uv[[0, 2, 4, 6]].mean(axis=0)
    a = np.deg2rad(angle)
    sign = -1.0 if anterior == "left" else 1.0
    ap = sign * np.array([np.cos(a), np.sin(a)])
    up = np.array([np.sin(a), -np.cos(a)])
    return np.asarray(centre, float) + uv[:, :1] * ap + uv[:, 1:] * up


def _fill(outlines, shape):
    """Label image of filled outlines, label k for the k-th (from 1)."""
    labels = np.zeros(shape, dtype=np.uint8)
    for k, outline in enumerate(outlines, start=1):
        rr, cc = polygon(outline[:, 1], outline[:, 0], shape)
        labels[rr, cc] = k
    return labels


def _heights_for(kind, reduction):
    """(ha, hm, hp) of one body; a crush is relative to HEIGHT, its neighbours' height."""
    if kind == "wedge":
        ha = (1 - reduction) * HEIGHT
        return ha, (ha + HEIGHT) / 2, HEIGHT
    if kind == "biconcave":
        return HEIGHT, (1 - reduction) * HEIGHT, HEIGHT
    h = (1 - reduction) * HEIGHT
    return h, h, h


def _spine(levels, *, angle, anterior):
    """Label mask and outlines of L1..L5 on a lordotic curve, turned by ``angle``.

    ``levels`` maps a level index 0..4 to (ha, hm, hp); the others are normal.
    """
    sign = -1.0 if anterior == "left" else 1.0
    bulge = np.array([0.0, 22.0, 30.0, 22.0, 0.0])  # lordosis: the middle lies anterior
    tilt = np.array([-6.0, -3.0, 0.0, 3.0, 6.0])
    ys = np.arange(5) * (HEIGHT + 40.0)
    ys -= ys.mean()
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centres = (np.c_[sign * bulge, ys] @ rot.T) + np.array([350.4, 480.6])
    outlines = []
    for i in range(5):
        ha, hm, hp = levels.get(i, (HEIGHT, HEIGHT, HEIGHT))
        outlines.append(_outline(ha, hm, hp, angle=angle + tilt[i], centre=centres[i],
                                 anterior=anterior))
    return _fill(outlines, (960, 700)), outlines


def _close(measured, true, *, rel=0.02, px=1.5):
    return abs(measured - true) <= max(rel * true, px)


# --------------------------------------------------------------------------- grading


@pytest.mark.parametrize(
    ("heights", "neighbours", "grade", "kind"),
    [
        ((81, 100, 100), None, 0, "normal"),  # 19 %
        ((80, 100, 100), None, 1, "wedge"),  # exactly 20 %: grade 1
        ((76, 100, 100), None, 1, "wedge"),
        ((75, 100, 100), None, 2, "wedge"),  # exactly 25 %: grade 2
        ((60, 100, 100), None, 2, "wedge"),  # exactly 40 %: still grade 2
        ((59, 100, 100), None, 3, "wedge"),
        ((100, 80, 100), None, 1, "biconcave"),
        ((100, 75, 100), None, 2, "biconcave"),
        ((100, 60, 100), None, 2, "biconcave"),
        ((100, 59, 100), None, 3, "biconcave"),
        ((80, 80, 80), [100, 100], 1, "crush"),
        ((75, 75, 75), [90, 110], 2, "crush"),  # neighbours' mean is the reference
        ((60, 60, 60), [100], 2, "crush"),
        ((59, 59, 59), [100, 100], 3, "crush"),
        ((100, 100, 70), None, 2, "crush"),  # posterior height lost
        ((110, 80, 100), None, 1, "biconcave"),  # against hp, not the taller ha
        ((125, 110, 98), None, 1, "crush"),  # own reference: hp against ha
        ((125, 110, 98), [100, 100], 0, "normal"),  # neighbours replace it
        ((60, 60, 60), None, 0, "normal"),  # uniformly low, nothing to compare with
        ((60, 60, 60), [], 0, "normal"),
    ],
)
def test_genant_grade_boundaries(heights, neighbours, grade, kind):
    result = genant_grade(*heights, neighbour_hp=neighbours)
    assert (result["grade"], result["type"]) == (grade, kind)


def test_genant_grade_bounds_constant():
    assert GRADE_BOUNDS == (0.20, 0.25, 0.40)


def test_genant_grade_reports_reduction_and_ratios():
    result = genant_grade(60.0, 90.0, 120.0, neighbour_hp=[100.0, 140.0])
    assert result["reduction"] == pytest.approx(0.5)  # 1 - 60 / 120
    assert result["reductions"]["biconcave"] == pytest.approx(0.25)  # 1 - 90 / 120
    assert result["reductions"]["crush"] == pytest.approx(0.0)  # hp equals neighbours' mean
    assert result["ratios"] == pytest.approx(
        {"ha/hp": 0.5, "hm/hp": 0.75, "hm/ha": 1.5, "hp/neighbour_hp": 1.0}
    )
    taller = genant_grade(100.0, 100.0, 100.0, neighbour_hp=[80.0])
    assert taller["reduction"] == 0.0 and taller["type"] == "normal"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((0, 1, 1), {}), ((1, -1, 1), {}), ((1, 1, np.nan), {}),
     ((1, 1, 1), {"neighbour_hp": [1, 1, 1]}), ((1, 1, 1), {"neighbour_hp": [0]})],
)
def test_genant_grade_rejects_bad_heights(args, kwargs):
    with pytest.raises(ValueError):
        genant_grade(*args, **kwargs)


# --------------------------------------------------------------------------- heights


def test_heights_from_outline_hand_example():
    outline = [[0, 0], [5, 2], [10, 0], [10, 4], [10, 8], [5, 6], [3, 8], [0, 4]]
    h = heights_from_outline(outline, spacing_mm=(0.5, 0.1))
    assert (h["ha_px"], h["hm_px"], h["hp_px"]) == pytest.approx((np.hypot(3, 8), 4.0, 8.0))
    assert (h["ha_mm"], h["hm_mm"], h["hp_mm"]) == pytest.approx(
        (np.hypot(0.3, 4.0), 2.0, 4.0)
    )
    assert np.isnan(heights_from_outline(outline)["ha_mm"])
    with pytest.raises(ValueError):
        heights_from_outline(outline[:6])


@pytest.mark.parametrize("kind", ["wedge", "biconcave", "crush"])
@pytest.mark.parametrize("grade", [0, 1, 2, 3])
@pytest.mark.parametrize(("angle", "anterior"), [(0, "left"), (15, "right"), (15, "left")])
def test_vertebral_heights_match_outline(kind, grade, angle, anterior):
    outline = _outline(*_heights_for(kind, GRADE_REDUCTIONS[grade]), angle=angle,
                       anterior=anterior)
    true = heights_from_outline(outline)
    measured = vertebral_heights(_fill([outline], (400, 400)) == 1, anterior=anterior)
    for key in HEIGHT_KEYS:
        assert _close(measured[key], true[key]), (key, measured[key], true[key])
    corners = outline[[0, 1, 2, 4, 5, 6]]
    found = np.array([measured["points"][name] for name in POINT_NAMES])
    assert np.max(np.hypot(*(found - corners).T)) < 1.5
    if kind != "crush":  # a crush needs its neighbours: see the spine test
        g = genant_grade(measured["ha_px"], measured["hm_px"], measured["hp_px"])
        assert g["grade"] == grade
        assert g["type"] == (kind if grade else "normal")


def test_vertebral_heights_ignores_stray_components_and_sets_mm_nan():
    outline = _outline(HEIGHT, HEIGHT, HEIGHT)
    mask = _fill([outline], (400, 400)) == 1
    mask[5:9, 5:9] = True  # a speck far away
    measured = vertebral_heights(mask, anterior="left")
    assert _close(measured["hp_px"], HEIGHT)
    assert np.isnan(measured["hp_mm"])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["wedge", "biconcave"])
def test_vertebral_heights_robust_to_boundary_noise(seed, kind):
    rng = np.random.default_rng(seed)
    outline = _outline(*_heights_for(kind, 0.3), angle=10.0)
    mask = _fill([outline], (400, 400)) == 1
    clean = vertebral_heights(mask, anterior="left")
    noisy = mask.copy()
    inner = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    outer = np.argwhere(ndimage.binary_dilation(mask) & ~mask)
    for pixels, value in ((inner, False), (outer, True)):
        pick = pixels[rng.choice(len(pixels), size=40, replace=False)]
        noisy[pick[:, 0], pick[:, 1]] = value
    assert np.count_nonzero(noisy != mask) == 80
    measured = vertebral_heights(noisy, anterior="left")
    for key in HEIGHT_KEYS:
        assert abs(measured[key] - clean[key]) < 0.03 * clean[key], key


@pytest.mark.parametrize("angle", [0.0, 15.0])
def test_vertebral_heights_anisotropic_spacing(angle):
    spacing = (0.2, 0.1)  # (row_mm, col_mm)
    outline = _outline(*_heights_for("wedge", 0.3), angle=angle, anterior="right")
    mask = _fill([outline], (400, 400)) == 1
    measured = vertebral_heights(mask, anterior="right", spacing_mm=spacing)
    true = heights_from_outline(outline, spacing_mm=spacing)
    for name, pos in (("ha", "anterior"), ("hm", "mid"), ("hp", "posterior")):
        dx, dy = measured["points"][f"upper_{pos}"] - measured["points"][f"lower_{pos}"]
        assert measured[f"{name}_mm"] == pytest.approx(np.hypot(0.1 * dx, 0.2 * dy))
        assert _close(measured[f"{name}_mm"], true[f"{name}_mm"], px=0.3)
    if angle == 0.0:  # upright body: heights run along the rows, 0.2 mm each
        assert measured["hp_mm"] == pytest.approx(0.2 * measured["hp_px"], rel=1e-4)


def test_vertebral_heights_rejects_bad_input():
    mask = _fill([_outline(HEIGHT, HEIGHT, HEIGHT)], (400, 400)) == 1
    with pytest.raises(ValueError, match="anterior"):
        vertebral_heights(mask, anterior=None)
    with pytest.raises(ValueError, match="anterior"):
        vertebral_heights(mask, anterior="front")
    with pytest.raises(ValueError, match="spacing_mm"):
        vertebral_heights(mask, anterior="left", spacing_mm=(0.1, -0.1))
    with pytest.raises(ValueError, match="empty"):
        vertebral_heights(np.zeros((50, 50), bool), anterior="left")
    with pytest.raises(ValueError, match="2-D"):
        vertebral_heights(mask[None], anterior="left")


# ------------------------------------------------------------------------- body frame


@pytest.mark.parametrize("angle", [0.0, 15.0, -20.0])
def test_body_axis_follows_the_rotation(angle):
    outline = _outline(*_heights_for("wedge", 0.3), angle=angle, anterior="right")
    mask = _fill([outline], (400, 400)) == 1
    axis = body_axis(mask, anterior="right")
    # A wedge's axis bisects its end plates: the lower plate lies along ``angle`` and
    # the upper one falls towards anterior (image right, y down) by atan((hp - ha) / depth).
    half_wedge = 0.5 * np.degrees(np.arctan(0.3 * HEIGHT / DEPTH))
    a = np.deg2rad(angle + half_wedge)
    assert axis["up"] == pytest.approx([np.sin(a), -np.cos(a)], abs=0.01)
    assert axis["anterior"] == pytest.approx([np.cos(a), np.sin(a)], abs=0.01)
    assert axis["centre"] == pytest.approx(np.argwhere(mask).mean(axis=0)[::-1])
    unsigned = body_axis(mask)
    assert unsigned["anterior"] is None and unsigned["ap_axis"][0] >= 0
    assert body_axis(mask, anterior="left")["anterior"] == pytest.approx(-axis["anterior"])


@pytest.mark.parametrize(("sign", "side"), [(-1, "left"), (1, "right")])
def test_spine_anterior_direction_curved_spine(sign, side):
    ys = np.array([0.0, 150.0, 300.0, 450.0, 600.0])
    bulge = np.array([0.0, 25.0, 33.0, 25.0, 0.0])
    tilted = np.c_[500.0 + sign * bulge + 0.3 * ys, ys]  # the whole spine leans, too
    assert spine_anterior_direction(tilted) == side
    assert spine_anterior_direction(tilted[::-1]) == side  # order does not matter


def test_spine_anterior_direction_rejects_straight_or_short():
    with pytest.raises(ValueError, match="straight"):
        spine_anterior_direction([[10, 0], [12, 10], [14, 20]])
    with pytest.raises(ValueError, match="3"):
        spine_anterior_direction([[10, 0], [12, 10]])


# ------------------------------------------------------------------------ whole spine


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
@pytest.mark.parametrize(("angle", "anterior"), [(0.0, "left"), (15.0, "right")])
def test_measure_spine_grades_a_crushed_level(grade, angle, anterior):
    crushed = _heights_for("crush", GRADE_REDUCTIONS[grade])
    labels, outlines = _spine({2: crushed}, angle=angle, anterior=anterior)
    table = measure_spine(labels, spacing_mm=(0.25, 0.25))
    assert list(table["level"]) == list(LEVELS)
    assert set(table["anterior"]) == {anterior}  # found from the lordosis
    for row, outline in zip(table.itertuples(), outlines):
        true = heights_from_outline(outline)
        for key in HEIGHT_KEYS:
            assert _close(getattr(row, key), true[key])
        assert row.ha_mm == pytest.approx(0.25 * row.ha_px)
    assert table["grade"].tolist() == [0, 0, grade, 0, 0]
    assert table["type"].tolist()[2] == ("crush" if grade else "normal")
    assert table.loc[2, "ratio_hp_neighbours"] == pytest.approx(
        1 - GRADE_REDUCTIONS[grade], abs=0.015
    )


@pytest.mark.parametrize(
    ("seed", "overrides"),
    [
        (1, {"fractures": [{"level": "L2", "grade": 2, "type": "wedge"},
                           {"level": "L4", "grade": 3, "type": "biconcave"}]}),
        (2, {"fractures": [{"level": "L1", "grade": 1, "type": "biconcave"},
                           {"level": "L3", "grade": 2, "type": "crush"},
                           {"level": "L5", "grade": 1, "type": "wedge"}]}),
        (3, {"fractures": [{"level": "L2", "grade": 3, "type": "crush"},
                           {"level": "L4", "grade": 1, "type": "wedge"}],
             "anterior": "right", "rotation_deg": 12.0}),
    ],
)
def test_measure_spine_agrees_with_phantom_ground_truth(seed, overrides):
    from lumbar_core import phantom

    image, annotation, _ = phantom.render_phantom(
        seed, abnormal=True, shape=(1000, 700), pixel_spacing_mm=0.35, **overrides
    )
    vertebrae = annotation["vertebrae"]
    assert sum(vertebrae[level]["genant_grade"] > 0 for level in LEVELS) >= 2
    outlines = [np.asarray(vertebrae[level]["outline"], float) for level in LEVELS]
    table = measure_spine(_fill(outlines, image.shape),
                          spacing_mm=annotation["pixel_spacing_mm"])
    assert set(table["anterior"]) == {annotation["anterior"]}
    assert table["grade"].tolist() == [vertebrae[lv]["genant_grade"] for lv in LEVELS]
    assert table["type"].tolist() == [vertebrae[lv]["genant_type"] for lv in LEVELS]
    for row, outline in zip(table.itertuples(), outlines):
        true = heights_from_outline(outline, spacing_mm=annotation["pixel_spacing_mm"])
        for key in ("ha_mm", "hm_mm", "hp_mm"):
            assert _close(getattr(row, key), true[key], px=0.35 * 1.5)


def test_measure_spine_missing_level_is_not_measured():
    labels, _ = _spine({0: _heights_for("wedge", 0.3)}, angle=0.0, anterior="left")
    labels[labels == 4] = 0
    table = measure_spine(labels)
    l4 = table.set_index("level").loc["L4"]
    assert np.isnan(l4["ha_px"]) and np.isnan(l4["upper_mid_x"]) and pd.isna(l4["grade"])
    assert pd.isna(l4["type"])
    assert table["grade"].dtype == "Int64"
    assert table["grade"].tolist()[:3] == [2, 0, 0]
    assert table["type"].tolist()[0] == "wedge"
    assert np.isnan(table["ha_mm"]).all()  # no spacing given
    empty = measure_spine(np.zeros((60, 60), np.uint8))
    assert len(empty) == 5 and empty["grade"].isna().all()


def test_measure_spine_takes_anterior_as_vector():
    labels, _ = _spine({3: _heights_for("biconcave", 0.3)}, angle=0.0, anterior="right")
    table = measure_spine(labels, anterior=(1.0, 0.0))
    assert set(table["anterior"]) == {"(1, 0)"}
    assert table["grade"].tolist() == [0, 0, 0, 2, 0]
    assert table["type"].tolist()[3] == "biconcave"
    flipped = measure_spine(labels, anterior="left")  # the wrong side swaps ha and hp
    assert flipped["ha_px"].to_numpy() == pytest.approx(table["hp_px"].to_numpy(), abs=0.5)


def test_measure_spine_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..5"):
        measure_spine(np.full((20, 20), 7, np.uint8))
    few = np.zeros((200, 200), np.uint8)
    few[10:60, 10:80] = 1
    with pytest.raises(ValueError, match="anterior"):
        measure_spine(few)


# -------------------------------------------------------------------------- agreement


def test_agreement_hand_example():
    true = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    pred = [0, 0, 0, 1, 1, 2, 2, 2, 3, 2]
    # Confusion (rows true, columns predicted), counted by hand.
    confusion = np.array([[3, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 1, 1]])
    # Linear weighted kappa: 1 - sum(w * O) / sum(w * E), w = |i - j|, E = row x col / n.
    # sum(w * O) = 1 + 1 + 1 (the three off-diagonal cells, each one grade off) = 3;
    # sum(w * row x col) = 4 (2 + 8 + 3) + 2 (3 + 4 + 2) + 2 (6 + 2 + 1) + 2 (9 + 4 + 4)
    # = 52 + 18 + 18 + 34 = 122, so sum(w * E) = 12.2 and kappa = 1 - 3 / 12.2.
    rows, cols, n = [4, 2, 2, 2], [3, 2, 4, 1], 10
    observed = sum(abs(i - j) * int(confusion[i, j]) for i in range(4) for j in range(4))
    expected = sum(abs(i - j) * Fraction(rows[i] * cols[j], n)
                   for i in range(4) for j in range(4))
    assert (observed, expected) == (3, Fraction(122, 10))
    kappa = float(1 - observed / expected)  # 0.7541...
    result = agreement(true, pred)
    assert result["n"] == 10 and result["n_missing"] == 0
    np.testing.assert_array_equal(result["confusion"], confusion)
    assert result["kappa_linear"] == pytest.approx(kappa)
    assert cohen_kappa_score(true, pred, weights="linear") == pytest.approx(kappa)
    assert result["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(true, pred, weights="quadratic", labels=[0, 1, 2, 3])
    )
    assert result["sensitivity_any"] == pytest.approx(6 / 6)
    assert result["specificity_any"] == pytest.approx(3 / 4)
    assert result["sensitivity_ge2"] == pytest.approx(4 / 4)
    assert result["specificity_ge2"] == pytest.approx(5 / 6)


def test_agreement_drops_missing_pairs_and_rejects_bad_grades():
    true = pd.Series([0, 1, pd.NA, 3], dtype="Int64")
    pred = [0.0, None, 2.0, 3.0]
    result = agreement(true, pred)
    assert (result["n"], result["n_missing"]) == (2, 2)
    assert result["confusion"].sum() == 2 and result["confusion"][3, 3] == 1
    assert np.isnan(agreement([], [])["kappa_linear"])
    with pytest.raises(ValueError, match="4"):
        agreement([0, 4], [0, 1])
    with pytest.raises(ValueError, match="length"):
        agreement([0, 1], [0])


def test_spine_anterior_direction_one_threshold_and_the_s1_fallback():
    """A bulge under 1 % of the chord is too straight to tell; the S1 tilt then decides."""
    ys = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    slight = np.c_[100.0 - np.array([0.0, 2.0, 3.0, 2.0, 0.0]), ys]  # mean bulge 0.58 %
    with pytest.raises(ValueError, match="straight"):
        spine_anterior_direction(slight)
    assert spine_anterior_direction(slight, s1_endplate=[[120, 440], [80, 450]]) == "left"
    assert spine_anterior_direction(slight, s1_endplate=[[80, 440], [120, 450]]) == "right"
    with pytest.raises(ValueError, match="S1 end plate is level"):
        spine_anterior_direction(slight, s1_endplate=[[80, 440], [120, 441]])
    clear = np.c_[100.0 - np.array([0.0, 4.0, 6.0, 4.0, 0.0]), ys]  # 1.17 %
    assert spine_anterior_direction(clear, s1_endplate=[[80, 440], [120, 450]]) == "left"
