"""Tests of lumbar_core.metrics: hand-counted masks, edge cases, centre errors, success."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from lumbar_core.metrics import (
    LEVELS,
    METRIC_NAMES,
    centre_errors,
    confusion_counts,
    detection_success,
    label_metrics,
    region_metrics,
)

GT_CENTRES = np.array([[50, 100], [52, 200], [55, 300], [57, 400], [60, 500]], dtype=float)

# 2 x 2: GT = top row, SG = top row + bottom-left pixel. tp 2, fp 1, fn 0, tn 1.
GT_2 = np.array([[1, 1], [0, 0]])
SG_2 = np.array([[1, 1], [1, 0]])
# 4 x 4: GT rows 0-1 x cols 0-2 (6 px), SG rows 1-2 x cols 1-3 (6 px); overlap row 1 x
# cols 1-2 (2 px), union 10 px, (GT u SG)^c 6 px, GT^c 10 px.
GT_4 = np.zeros((4, 4), dtype=int)
GT_4[0:2, 0:3] = 1
SG_4 = np.zeros((4, 4), dtype=int)
SG_4[1:3, 1:4] = 1


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
@pytest.mark.parametrize(
    ("gt", "sg", "counts", "expected"),
    [
        (GT_2, SG_2, {"tp": 2, "fp": 1, "fn": 0, "tn": 1},
         {"dice": 0.8, "jaccard": 2 / 3, "precision": 2 / 3, "sensitivity": 1.0,
          "specificity": 0.5}),
        (GT_4, SG_4, {"tp": 2, "fp": 4, "fn": 4, "tn": 6},
         {"dice": 4 / 12, "jaccard": 2 / 10, "precision": 2 / 6, "sensitivity": 2 / 6,
          "specificity": 6 / 10}),
    ],
    ids=["2x2", "4x4"],
)
def test_hand_counted_cases(gt, sg, counts, expected, dtype):
    assert confusion_counts(gt.astype(dtype), sg.astype(dtype)) == counts
    got = region_metrics(gt.astype(dtype), sg.astype(dtype))
    assert set(got) == set(METRIC_NAMES)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_specificity_is_complement_of_union_over_complement_of_gt():
    got = region_metrics(GT_4, SG_4)
    union_c = np.count_nonzero(~(GT_4.astype(bool) | SG_4.astype(bool)))
    gt_c = np.count_nonzero(~GT_4.astype(bool))
    assert (union_c, gt_c) == (6, 10)
    assert got["specificity"] == pytest.approx(union_c / gt_c)


def test_empty_prediction_nonempty_gt():
    got = region_metrics(GT_4, np.zeros_like(GT_4))
    assert got["dice"] == 0.0
    assert got["jaccard"] == 0.0
    assert got["sensitivity"] == 0.0
    assert np.isnan(got["precision"])
    assert got["specificity"] == 1.0


def test_empty_gt_nonempty_prediction():
    got = region_metrics(np.zeros_like(SG_4), SG_4)
    assert got["dice"] == 0.0
    assert got["jaccard"] == 0.0
    assert got["precision"] == 0.0
    assert np.isnan(got["sensitivity"])
    assert got["specificity"] == pytest.approx(10 / 16)


def test_both_empty_is_perfect():
    got = region_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
    assert got == {"dice": 1.0, "jaccard": 1.0, "precision": 1.0, "sensitivity": 1.0,
                   "specificity": 1.0}


def test_gt_covering_everything_has_undefined_specificity():
    got = region_metrics(np.ones((2, 2)), SG_2)
    assert np.isnan(got["specificity"])
    assert got["precision"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    gt = rng.random((9, 7)) < 0.4
    sg = rng.random((9, 7)) < 0.5
    got = region_metrics(gt, sg)
    y, p = gt.ravel(), sg.ravel()
    assert got["dice"] == pytest.approx(f1_score(y, p))
    assert got["jaccard"] == pytest.approx(jaccard_score(y, p))
    assert got["precision"] == pytest.approx(precision_score(y, p))
    assert got["sensitivity"] == pytest.approx(recall_score(y, p))
    assert got["specificity"] == pytest.approx(recall_score(~y, ~p))


def test_dice_and_jaccard_are_related():
    got = region_metrics(GT_4, SG_4)
    assert got["jaccard"] == pytest.approx(got["dice"] / (2 - got["dice"]))


@pytest.mark.parametrize(
    ("gt", "sg"),
    [(np.zeros((2, 2)), np.zeros((2, 3))), (np.zeros((0,)), np.zeros((0,)))],
)
def test_bad_masks_raise(gt, sg):
    with pytest.raises(ValueError):
        region_metrics(gt, sg)


def _labels():
    gt = np.zeros((10, 4), dtype=np.uint8)
    for k in range(5):
        gt[2 * k, :] = k + 1  # L1 row 0, L2 row 2, ..., L5 row 8
    return gt


def test_label_metrics_rows_and_union():
    gt = _labels()
    pred = gt.copy()
    pred[gt == 1], pred[gt == 2] = 2, 1  # L1 and L2 swapped: the union is still perfect
    rows = label_metrics(gt, pred)
    assert [r["level"] for r in rows] == ["all", *LEVELS]
    by_level = {r["level"]: r for r in rows}
    assert by_level["all"]["dice"] == 1.0
    assert by_level["L1"]["dice"] == 0.0
    assert by_level["L2"]["dice"] == 0.0
    assert by_level["L3"]["dice"] == 1.0


def test_label_metrics_hand_counted_level():
    gt = _labels()
    pred = gt.copy()
    pred[8, :2] = 0  # L5 loses 2 of its 4 pixels
    by_level = {r["level"]: r for r in label_metrics(gt, pred)}
    assert by_level["L5"]["dice"] == pytest.approx(2 * 2 / (4 + 2))
    assert by_level["all"]["sensitivity"] == pytest.approx(18 / 20)
    assert by_level["L4"]["dice"] == 1.0


def test_label_metrics_subset_of_levels():
    gt = _labels()
    pred = np.zeros_like(gt)
    pred[gt == 3] = 3
    rows = label_metrics(gt, pred, levels=(3,))
    assert [r["level"] for r in rows] == ["all", "L3"]
    assert rows[0]["dice"] == 1.0


@pytest.mark.parametrize("levels", [(), (0, 1), (1, 1), (6,), (1.5,)])
def test_label_metrics_bad_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        label_metrics(_labels(), _labels(), levels=levels)


def test_label_metrics_rejects_float_labels():
    with pytest.raises(ValueError, match="label image"):
        label_metrics(_labels().astype(float), _labels())


def test_centre_errors_pixels_and_mm():
    pred = GT_CENTRES + np.array([[3, 4], [0, 0], [-6, 8], [1, 0], [0, -2]])
    np.testing.assert_allclose(centre_errors(pred, GT_CENTRES), [5, 0, 10, 1, 2])
    # spacing (row_mm, col_mm): dy scaled by 0.5, dx by 0.2 -> (0.6, 2.0) for L1.
    mm = centre_errors(pred, GT_CENTRES, spacing=(0.5, 0.2))
    assert mm[0] == pytest.approx(np.hypot(3 * 0.2, 4 * 0.5))
    assert mm[3] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("pred", "kwargs"),
    [(np.zeros((4, 2)), {}), (np.zeros((5, 3)), {}), (GT_CENTRES, {"spacing": (0, 1)})],
)
def test_centre_errors_bad_input(pred, kwargs):
    with pytest.raises(ValueError):
        centre_errors(pred, GT_CENTRES, **kwargs)


def test_success_with_small_errors():
    assert detection_success(GT_CENTRES + 3.0, GT_CENTRES)


def test_success_with_large_error_still_nearest_own_level():
    pred = GT_CENTRES.copy()
    pred[2, 1] += 45  # 45 px off, but nearer L3 (55 away from L4)
    assert detection_success(pred, GT_CENTRES)


def test_swap_is_failure_even_with_small_errors():
    gt = np.array([[0, 0], [0, 10], [0, 20], [0, 30], [0, 40]], dtype=float)
    pred = gt.copy()
    pred[[0, 1]] = [[0, 6], [0, 4]]  # L1 and L2 swapped, each only 4-6 px off
    assert centre_errors(pred, gt).max() <= 6
    assert not detection_success(pred, gt)


def test_shift_by_one_level_is_failure():
    pred = GT_CENTRES - [0, 100]  # everything one level up: L1 lands on T12
    assert not detection_success(pred, GT_CENTRES)


def test_tie_is_failure():
    pred = GT_CENTRES.copy()
    pred[0] = (GT_CENTRES[0] + GT_CENTRES[1]) / 2
    assert not detection_success(pred, GT_CENTRES)


@pytest.mark.parametrize(
    "pred", [None, GT_CENTRES[:4], np.where(np.eye(5, 2, dtype=bool), np.nan, GT_CENTRES)],
    ids=["none", "four", "nan"],
)
def test_missing_centres_fail(pred):
    assert detection_success(pred, GT_CENTRES) is False


def test_success_needs_five_gt_centres():
    with pytest.raises(ValueError, match="gt"):
        detection_success(GT_CENTRES[:4], GT_CENTRES[:4])
