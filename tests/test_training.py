"""Tests of lumbar_core.training: seeds, augmentation, sequences, the training loop."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from scipy import ndimage

from lumbar_core.localize import confidence_targets
from lumbar_core.models import build_posenet, build_unet, posenet_loss, unet_loss
from lumbar_core.training import (
    PAPER_AUGMENTATION,
    HeatmapSequence,
    SegmentationSequence,
    augment_pair,
    set_seed,
    train_model,
)

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- set_seed


def test_set_seed_repeats_draws():
    set_seed(7)
    a = (np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,))))
    set_seed(7)
    b = (np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,))))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="seed=-1"):
        set_seed(-1)


# ---------------------------------------------------------------- augment_pair


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augment_pair_moves_point_with_its_pixel(seed):
    image = np.zeros((41, 61), np.float32)
    x, y = 48, 10  # far from the centre (30, 20), so a rotation moves it visibly
    image[y, x] = 1.0
    out, points, _ = augment_pair(
        image,
        rng=np.random.default_rng(seed),
        points=np.array([[x, y]], float),
        max_rotation_deg=15.0,
        max_shift_frac=0.08,
        gamma_range=(1.0, 1.0),
        gain_range=(1.0, 1.0),
    )
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert out.max() > 0.2
    assert np.hypot(col - points[0, 0], row - points[0, 1]) <= 1.0
    assert np.hypot(points[0, 0] - x, points[0, 1] - y) > 1.0


def test_augment_pair_rotation_direction_and_identity():
    image = np.random.default_rng(0).random((9, 9)).astype(np.float32)
    same, points, labels = augment_pair(
        image,
        rng=np.random.default_rng(0),
        points=np.array([[1.0, 2.0]]),
        labels=np.arange(81).reshape(9, 9),
        max_rotation_deg=0.0,
        max_shift_frac=0.0,
        gamma_range=(1.0, 1.0),
        gain_range=(1.0, 1.0),
    )
    np.testing.assert_allclose(same, image, atol=1e-6)
    np.testing.assert_allclose(points, [[1.0, 2.0]])
    np.testing.assert_array_equal(labels, np.arange(81).reshape(9, 9))


def test_augment_pair_labels_stay_integer_classes():
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:28] = 1
    labels[14:22, 4:28] = 2
    labels[24:30, 4:28] = 5
    image = labels.astype(np.float32) / 5.0
    _, _, out = augment_pair(image, rng=np.random.default_rng(5), labels=labels)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    assert set(np.unique(out)) <= {0, 1, 2, 5}
    assert not np.array_equal(out, labels)


def test_augment_pair_is_deterministic_given_rng():
    image = np.random.default_rng(1).random((24, 16)).astype(np.float32)
    pts = np.array([[3.0, 4.0], [10.0, 20.0]])
    a = augment_pair(image, rng=np.random.default_rng(42), points=pts)
    b = augment_pair(image, rng=np.random.default_rng(42), points=pts)
    c = augment_pair(image, rng=np.random.default_rng(43), points=pts)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and 0.0 <= a[0].min() and a[0].max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_rotation_deg": -1.0}, "max_rotation_deg=-1.0"),
        ({"max_shift_frac": 0.5}, "max_shift_frac=0.5"),
        ({"gamma_range": (1.3, 0.7)}, r"gamma_range=\(1\.3, 0\.7\)"),
        ({"gain_range": (0.0, 1.0)}, "gain_range"),
        ({"offset_range": (-2.0, 0.0)}, "offset_range"),
        ({"tone_curve_strength": 0.5}, "tone_curve_strength=0.5"),
        ({"flip_prob": 1.5}, "flip_prob=1.5"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"aspect_range": (1.2, 0.9)}, "aspect_range"),
        ({"blur_sigma_range": (-1.0, 1.0)}, "blur_sigma_range"),
        ({"unsharp_gain_range": (-2.0, 1.0)}, "unsharp_gain_range"),
        ({"unsharp_sigma_range": (0.0, 2.0)}, "unsharp_sigma_range"),
        ({"noise_sigma_range": (0.1,)}, "noise_sigma_range"),
        ({"noise_signal_dependence": 2.0}, "noise_signal_dependence=2.0"),
        ({"rng": 0}, "rng"),
        ({"points": np.zeros((3, 3))}, "points"),
        ({"labels": np.zeros((4, 4), np.float32)}, "labels"),
    ],
)
def test_augment_pair_rejects_bad_arguments(kwargs, match):
    kwargs = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        augment_pair(np.zeros((8, 8), np.float32), **kwargs)


#: Every part on, for the tests of the wider augmentation.
WIDE = {
    "max_rotation_deg": 15.0,
    "max_shift_frac": 0.08,
    "gamma_range": (0.8, 1.2),
    "gain_range": (0.8, 1.2),
    "offset_range": (-0.05, 0.05),
    "tone_curve_strength": 0.1,
    "flip_prob": 0.5,
    "scale_range": (0.6, 1.2),
    "aspect_range": (0.8, 1.25),
    "blur_sigma_range": (0.5, 1.0),
    "unsharp_gain_range": (-0.5, 1.0),
    "unsharp_sigma_range": (2.0, 4.0),
    "noise_sigma_range": (0.01, 0.03),
    "noise_signal_dependence": 0.5,
}
#: Geometry only: every photometric part neutral.
GEOMETRY = {**PAPER_AUGMENTATION, "gamma_range": (1.0, 1.0), "gain_range": (1.0, 1.0),
            **{k: WIDE[k] for k in ("max_rotation_deg", "max_shift_frac", "flip_prob",
                                    "scale_range", "aspect_range")}}


def _blob(shape, x, y, sigma=1.5):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(image):
    """Intensity centroid (x, y) in the 9 x 9 window around the brightest pixel."""
    row, col = np.unravel_index(np.argmax(image), image.shape)
    r0, c0 = max(row - 4, 0), max(col - 4, 0)
    window = image[r0 : row + 5, c0 : col + 5].astype(float)
    rows, cols = np.mgrid[r0 : r0 + window.shape[0], c0 : c0 + window.shape[1]]
    return (cols * window).sum() / window.sum(), (rows * window).sum() / window.sum()


@pytest.mark.parametrize("seed", range(8))
def test_augment_pair_points_land_on_their_pixels_under_flip_scale_aspect_rotation_shift(seed):
    shape = (96, 64)
    start = np.array([[44.0, 20.0]])  # off-centre, so that every part of the map moves it
    out, points, _ = augment_pair(_blob(shape, *start[0]), rng=np.random.default_rng(seed),
                                  points=start, **{**GEOMETRY, "flip_prob": 0.5})
    assert out.max() > 0.3  # the dot stayed inside the image
    found = _centroid(out)
    assert np.hypot(found[0] - points[0, 0], found[1] - points[0, 1]) < 0.3
    assert np.hypot(*(points[0] - start[0])) > 1.0


def test_augment_pair_flip_mirrors_points_and_labels_and_keeps_level_order():
    shape = (40, 30)
    centres = np.array([[8.0, 6.0], [9.0, 12.0], [10.0, 18.0], [11.0, 24.0], [12.0, 30.0]])
    labels = np.zeros(shape, np.uint8)
    for level, (x, y) in enumerate(centres.astype(int), start=1):
        labels[y - 2 : y + 3, x - 2 : x + 3] = level
    image = _blob(shape, *centres[0])
    flat = {**PAPER_AUGMENTATION, "max_rotation_deg": 0.0, "max_shift_frac": 0.0,
            "gamma_range": (1.0, 1.0), "gain_range": (1.0, 1.0)}
    out, points, out_labels = augment_pair(image, rng=np.random.default_rng(0), points=centres,
                                           labels=labels, **{**flat, "flip_prob": 1.0})
    np.testing.assert_allclose(points, np.column_stack([29.0 - centres[:, 0], centres[:, 1]]))
    np.testing.assert_array_equal(out_labels, labels[:, ::-1])
    np.testing.assert_allclose(out, image[:, ::-1], atol=1e-6)
    # L1..L5 stay in their order, each point on its own label.
    for level, (x, y) in enumerate(points.astype(int), start=1):
        assert out_labels[y, x] == level
    same = augment_pair(image, rng=np.random.default_rng(0), points=centres, labels=labels,
                        **{**flat, "flip_prob": 0.0})
    np.testing.assert_array_equal(same[2], labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, bool])
def test_augment_pair_labels_keep_their_classes_and_follow_the_image(dtype):
    labels = np.zeros((64, 48), np.uint8)
    labels[6:18, 8:40] = 1
    labels[22:34, 8:40] = 2
    labels[40:56, 8:40] = 5
    labels = labels > 0 if dtype is bool else labels.astype(dtype)
    image = labels.astype(np.float32) / 5.0
    classes = set(np.unique(labels.astype(np.uint8)))
    changed = False
    for seed in range(4):
        out, _, out_labels = augment_pair(image, rng=np.random.default_rng(seed), labels=labels,
                                          **GEOMETRY)
        assert out_labels.dtype == (np.uint8 if dtype is bool else dtype)
        assert set(np.unique(out_labels)) <= classes
        # The labels moved with the image: away from edges, the grey level is the class / 5.
        agree = np.abs(out * 5.0 - out_labels.astype(np.float32)) < 0.5
        interior = ndimage.maximum_filter(out_labels, 3) == ndimage.minimum_filter(out_labels, 3)
        assert agree[interior].mean() > 0.99
        changed |= not np.array_equal(out_labels, labels)
    assert changed


def _paper_reference(image, rng, points):
    """The project's augmentation before its ranges were widened (gamma, gain, rotation, shift)."""
    gamma, gain = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    shift = rng.uniform(-0.08, 0.08, size=2) * np.asarray(image.shape)
    work = np.clip(image, 0.0, 1.0) ** np.float32(gamma)
    mean = work.mean(dtype=np.float64)
    work = (work - mean) * gain + mean
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = (np.asarray(image.shape, float) - 1.0) / 2.0
    work = ndimage.affine_transform(work, rot.T, offset=centre - rot.T @ (centre + shift), order=1)
    moved = ((points[:, ::-1] - centre) @ rot.T + centre + shift)[:, ::-1]
    return np.clip(work, 0.0, 1.0).astype(np.float32), moved


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augment_pair_paper_setting_repeats_the_paper_augmentation_exactly(seed):
    image = ndimage.gaussian_filter(np.random.default_rng(9).random((48, 32)), 2).astype(np.float32)
    points = np.array([[5.0, 7.0], [20.0, 40.0]])
    expected, moved = _paper_reference(image, np.random.default_rng(seed), points)
    for kwargs in (PAPER_AUGMENTATION, {}):  # the named setting and the defaults
        out, got, _ = augment_pair(image, rng=np.random.default_rng(seed), points=points, **kwargs)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_allclose(got, moved, atol=1e-9)


#: Each photometric part: a setting that switches it on, and its neutral setting.
PHOTOMETRIC = {
    "gamma": ({"gamma_range": (0.5, 0.5)}, {"gamma_range": (1.0, 1.0)}),
    "gain": ({"gain_range": (1.5, 1.5)}, {"gain_range": (1.0, 1.0)}),
    "offset": ({"offset_range": (0.1, 0.1)}, {"offset_range": (0.0, 0.0)}),
    "tone_curve": ({"tone_curve_strength": 0.2}, {"tone_curve_strength": 0.0}),
    "blur": ({"blur_sigma_range": (1.5, 1.5)}, {"blur_sigma_range": (0.0, 0.0)}),
    "unsharp": ({"unsharp_gain_range": (1.0, 1.0)}, {"unsharp_gain_range": (0.0, 0.0)}),
    "smoothing": ({"unsharp_gain_range": (-1.0, -1.0)}, {"unsharp_gain_range": (0.0, 0.0)}),
    "noise": ({"noise_sigma_range": (0.05, 0.05)}, {"noise_sigma_range": (0.0, 0.0)}),
}
_NEUTRAL = {**PAPER_AUGMENTATION, "max_rotation_deg": 0.0, "max_shift_frac": 0.0,
            "gamma_range": (1.0, 1.0), "gain_range": (1.0, 1.0)}


@pytest.mark.parametrize("part", sorted(PHOTOMETRIC))
def test_augment_pair_photometric_part_is_off_at_neutral_and_on_otherwise(part):
    on, neutral = PHOTOMETRIC[part]
    image = (0.2 + 0.6 * ndimage.gaussian_filter(np.random.default_rng(3).random((40, 40)), 1.5)).astype(np.float32)
    image[10:30, 15:25] += 0.15  # an edge for the filters to act on
    wide_rest = {k: v for k, v in WIDE.items() if k not in on and k not in neutral}
    for others in ({}, wide_rest):  # neutral switches the part off alone and amid others
        base = {**_NEUTRAL, **others}
        off = augment_pair(image, rng=np.random.default_rng(1), **{**base, **neutral})[0]
        if not others:
            np.testing.assert_array_equal(off, image)
        switched = augment_pair(image, rng=np.random.default_rng(1), **{**base, **on})[0]
        assert np.abs(switched - off).max() > 0.01


def test_augment_pair_photometric_parts_do_what_they_say():
    rng = np.random.default_rng(0)
    flat = np.full((64, 64), 0.5, np.float32)
    ramp = np.tile(np.linspace(0.05, 0.95, 64, dtype=np.float32), (64, 1))
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 0.6
    step += 0.2

    def run(image, **kwargs):
        return augment_pair(image, rng=np.random.default_rng(int(rng.integers(1000))), **{**_NEUTRAL, **kwargs})[0]

    # Offset moves every grey level by it; the tone curve keeps the order of grey levels.
    np.testing.assert_allclose(run(flat, offset_range=(0.1, 0.1)), 0.6, atol=1e-6)
    toned = run(ramp, tone_curve_strength=0.25)
    assert np.all(np.diff(toned[0]) >= 0) and np.abs(toned - ramp).max() > 0.01
    # Additive noise has the drawn standard deviation; signal-dependent noise is weaker on dark.
    noisy = run(flat, noise_sigma_range=(0.04, 0.04))
    assert abs(float((noisy - flat).std()) - 0.04) < 0.004
    dark_bright = np.where(np.arange(64)[None, :] < 32, 0.05, 0.8).astype(np.float32) * np.ones((64, 1), np.float32)
    quantum = run(dark_bright, noise_sigma_range=(0.04, 0.04), noise_signal_dependence=1.0) - dark_bright
    assert quantum[:, :32].std() < 0.5 * quantum[:, 32:].std()
    # Blur and smoothing soften the step; the unsharp mask overshoots it (a halo).
    assert run(step, blur_sigma_range=(1.5, 1.5))[:, 31].min() > 0.25
    assert run(step, unsharp_gain_range=(-1.0, -1.0), unsharp_sigma_range=(2.0, 2.0))[:, 31].min() > 0.25
    sharp = run(step, unsharp_gain_range=(1.0, 1.0), unsharp_sigma_range=(2.0, 2.0))
    assert sharp[:, 32].min() > 0.85 and sharp[:, 31].max() < 0.15


def test_augment_pair_with_every_part_is_deterministic_given_rng():
    image = ndimage.gaussian_filter(np.random.default_rng(1).random((48, 32)), 1).astype(np.float32)
    labels = (image > image.mean()).astype(np.uint8)
    pts = np.array([[3.0, 4.0], [10.0, 20.0]])
    a = augment_pair(image, rng=np.random.default_rng(42), points=pts, labels=labels, **WIDE)
    b = augment_pair(image, rng=np.random.default_rng(42), points=pts, labels=labels, **WIDE)
    c = augment_pair(image, rng=np.random.default_rng(43), points=pts, labels=labels, **WIDE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    assert a[0].dtype == np.float32 and 0.0 <= a[0].min() and a[0].max() <= 1.0


def test_heatmap_sequence_scales_sigma2_with_the_spine():
    images, centres = _spine(n=1)
    half = {**_NEUTRAL, "scale_range": (0.5, 0.5)}
    seq = HeatmapSequence(images, centres, 6.0, batch_size=1, augment=True, seed=0,
                          augment_kwargs=half)
    _, y = seq[0]
    middle = (np.array([32.0, 64.0]) - 1.0) / 2.0  # (x, y) of the image centre
    moved = (centres[0] - middle) * 0.5 + middle
    expected = confidence_targets(moved, 3.0, (64, 32))
    np.testing.assert_allclose(y["y_l5"][0, ..., 0], expected[0], atol=1e-6)
    np.testing.assert_allclose(y["y_l15"][0, ..., 0], expected[1], atol=1e-6)


def test_config_augmentation_blocks_are_valid_settings():
    """Every shipped augmentation block names every part and is accepted as it stands."""
    image = np.full((32, 16), 0.5, np.float32)

    def block(path):
        augment = yaml.safe_load((REPO / path).read_text())["training"]["augment"]
        return {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}

    for path in ("config.yaml", "config/augment_wide.yaml"):
        settings = block(path)
        assert set(settings) == set(PAPER_AUGMENTATION)
        augment_pair(image, rng=np.random.default_rng(0), **settings)
    assert block("config/paper.yaml") == PAPER_AUGMENTATION
    # The default is the paper's augmentation: the other parts are off.
    out = augment_pair(image, rng=np.random.default_rng(0), **block("config.yaml"))[0]
    np.testing.assert_array_equal(out, augment_pair(image, rng=np.random.default_rng(0))[0])


# ---------------------------------------------------------------- sequences


def _spine(n=3, shape=(64, 32)):
    """Images with a bright 3x3 blob at each of five centres, and the centres."""
    rows, cols = shape
    centres = np.stack(
        [np.stack([np.full(5, cols / 2 + k), np.linspace(12, rows - 14, 5)], axis=1) for k in range(n)]
    )
    images = np.zeros((n, rows, cols), np.float32)
    for i, pts in enumerate(centres):
        for x, y in np.rint(pts).astype(int):
            images[i, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    return images, centres


def test_heatmap_sequence_targets_without_augmentation():
    images, centres = _spine()
    seq = HeatmapSequence(images, centres, [4.0, 5.0, 6.0], batch_size=2)
    assert len(seq) == 2
    x, y = seq[1]
    assert x.shape == (1, 64, 32, 1) and set(y) == {"y_l5", "y_l15"}
    y_l5, y_l15 = confidence_targets(centres[2], 6.0, (64, 32))
    np.testing.assert_allclose(y["y_l5"][0, ..., 0], y_l5)
    np.testing.assert_allclose(y["y_l15"][0, ..., 0], y_l15)
    np.testing.assert_array_equal(x[0, ..., 0], images[2])


def test_heatmap_sequence_augmented_targets_follow_image():
    images, centres = _spine()
    seq = HeatmapSequence(
        images,
        centres,
        4.0,
        batch_size=3,
        augment=True,
        seed=3,
        augment_kwargs={"gamma_range": (1.0, 1.0), "gain_range": (1.0, 1.0)},
    )
    x, y = seq[0]
    moved = False
    for b in range(3):
        row, col = np.unravel_index(np.argmax(y["y_l5"][b, ..., 0]), (64, 32))
        assert x[b, row, col, 0] > 0.3  # the L5 blob lies under the L5 target peak
        peaks = y["y_l15"][b, ..., 0] > 0.5
        assert x[b, ..., 0][peaks].mean() > 0.3
        moved |= not np.array_equal(x[b, ..., 0], images[seq._order[b]])
    assert moved
    again = HeatmapSequence(
        images,
        centres,
        4.0,
        batch_size=3,
        augment=True,
        seed=3,
        augment_kwargs={"gamma_range": (1.0, 1.0), "gain_range": (1.0, 1.0)},
    )
    np.testing.assert_array_equal(again[0][0], x)
    seq.on_epoch_end()
    assert not np.array_equal(seq[0][0], x)


def test_heatmap_sequence_rejects_bad_inputs():
    images, centres = _spine()
    with pytest.raises(ValueError, match="centres"):
        HeatmapSequence(images, centres[:, :4], 4.0)
    with pytest.raises(ValueError, match="sigma2"):
        HeatmapSequence(images, centres, 0.0)
    with pytest.raises(ValueError, match="batch_size=0"):
        HeatmapSequence(images, centres, 4.0, batch_size=0)


def test_segmentation_sequence_one_hot_per_output():
    images = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 6, (3, 16, 16)).astype(np.uint8)
    seq = SegmentationSequence(images, labels, 6, batch_size=2, output_names=["side_1", "fused"])
    x, y = seq[0]
    assert x.shape == (2, 16, 16, 1) and sorted(y) == ["fused", "side_1"]
    assert y["fused"].shape == (2, 16, 16, 6) and y["fused"].dtype == np.float32
    np.testing.assert_array_equal(np.argmax(y["fused"], axis=-1), labels[:2])
    np.testing.assert_array_equal(y["fused"].sum(axis=-1), 1.0)
    aug = SegmentationSequence(images, labels, 6, batch_size=3, augment=True, seed=0)
    xa, ya = aug[0]
    np.testing.assert_array_equal(ya["fused"].sum(axis=-1), 1.0)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        SegmentationSequence(images, labels + 1, 6)
    with pytest.raises(ValueError, match="labels"):
        SegmentationSequence(images, labels.astype(np.float32), 6)


# ---------------------------------------------------------------- train_model


@pytest.fixture
def eager():
    """Run Keras' train/test functions eagerly (TensorFlow): tracing a convolutional
    model costs seconds on a loaded CPU, far more than these tiny runs themselves."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


def _linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
    return x, y


def _linear_model():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs), name="linear")


def test_train_model_warmup_then_lr_and_history():
    set_seed(0)
    model = _linear_model()
    log = io.StringIO()
    data = _linear_problem()
    history = train_model(
        model,
        data,
        data,
        loss="mse",
        epochs=4,
        warmup_epochs=2,
        warmup_lr=1e-4,
        lr=1e-2,
        patience=10,
        log=log,
    )
    assert list(history.columns) == ["epoch", "loss", "val_loss", "lr", "seconds", "best"]
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(history["lr"], [1e-4, 1e-4, 1e-2, 1e-2], rtol=1e-6)
    assert history["best"].sum() == 1
    lines = log.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("epoch 3/4 loss ") and "val_loss" in lines[2] and "lr 0.01" in lines[2]


def test_train_model_early_stopping_restores_best_weights():
    """A huge learning rate after the warm-up makes the validation loss blow up: the
    run must stop ``patience`` epochs after the warm-up and keep the best weights."""
    set_seed(0)
    model = _linear_model()
    data = _linear_problem()
    history = train_model(
        model, data, data, loss="mse", epochs=30, warmup_epochs=3, warmup_lr=1e-2, lr=50.0, patience=2
    )
    assert len(history) == 5  # three warm-up epochs, then two without improvement
    best = history["val_loss"].idxmin()
    assert history["best"].tolist() == [i == best for i in range(len(history))]
    assert best < 3 and history["val_loss"].iloc[-1] > history["val_loss"].min()
    val = model.evaluate(data[0], data[1], verbose=0, return_dict=True)["loss"]
    assert val == pytest.approx(history["val_loss"].min(), rel=1e-5)


def test_train_model_without_patience_runs_every_epoch_and_keeps_the_best_weights():
    """The run of the test above, without early stopping: every epoch runs (patience 2
    stops it after five) and the model still holds the best epoch's weights."""
    set_seed(0)
    model = _linear_model()
    data = _linear_problem()
    history = train_model(
        model, data, data, loss="mse", epochs=8, warmup_epochs=3, warmup_lr=1e-2, lr=50.0,
        patience=None
    )
    assert len(history) == 8
    best = history["val_loss"].idxmin()
    assert best < 3 and history["best"].tolist() == [i == best for i in range(8)]
    val = model.evaluate(data[0], data[1], verbose=0, return_dict=True)["loss"]
    assert val == pytest.approx(history["val_loss"].min(), rel=1e-5)


def test_train_model_never_stops_during_warmup():
    set_seed(0)
    model = _linear_model()
    data = _linear_problem()
    history = train_model(
        model, data, data, loss="mse", epochs=4, warmup_epochs=4, warmup_lr=50.0, lr=50.0, patience=1
    )
    assert len(history) == 4


def _train_tiny_posenet(seed, epochs=2, **kwargs):
    images, centres = _spine(n=6, shape=(32, 16))
    centres[..., 1] = np.linspace(6, 25, 5)
    set_seed(seed)
    model = build_posenet((32, 16, 1), width=2, depth=2)
    train = HeatmapSequence(images, centres, 3.0, batch_size=2, augment=True, seed=seed, **kwargs)
    val = HeatmapSequence(images[:2], centres[:2], 3.0, batch_size=2, **kwargs)
    history = train_model(model, train, val, loss=posenet_loss(), epochs=epochs, warmup_epochs=1,
                          seed=seed)
    return model.get_weights(), history


def test_trained_weights_do_not_depend_on_data_workers():
    """The default two batch workers (no tf.data stall) train what one worker trains."""
    from lumbar_core.training import DATA_WORKERS

    assert DATA_WORKERS > 1
    one, _ = _train_tiny_posenet(0, epochs=3, workers=1)
    default, _ = _train_tiny_posenet(0, epochs=3)
    assert len(one) == len(default)
    for a, b in zip(one, default):
        np.testing.assert_array_equal(a, b)


def test_train_model_is_deterministic(eager):
    first, history = _train_tiny_posenet(0)
    second, _ = _train_tiny_posenet(0)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    # Each map's own loss is in the history; together they make the loss (Eq. 2 + 3).
    outputs = ["y_l15_loss", "y_l5_loss", "val_y_l15_loss", "val_y_l5_loss"]
    assert sorted(history.columns[6:]) == sorted(outputs)
    np.testing.assert_allclose(history["val_y_l5_loss"] + history["val_y_l15_loss"],
                               history["val_loss"], rtol=1e-4)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_train_model_on_segmentation_sequence(eager):
    set_seed(0)
    model = build_unet((16, 16, 1), filters=(2, 2, 2, 2, 2))
    images = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    labels = (images > 0.5).astype(np.uint8)
    seq = SegmentationSequence(images, labels, 2, batch_size=2, output_names=model.output_names)
    history = train_model(model, seq, seq, loss=unet_loss(), epochs=1, warmup_epochs=0, lr=1e-2)
    assert history["lr"].tolist() == [pytest.approx(1e-2)]
    assert np.isfinite(history["val_loss"]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1"),
        ({"patience": 0}, "patience=0"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"min_delta": -1.0}, "min_delta=-1.0"),
    ],
)
def test_train_model_rejects_bad_arguments(kwargs, match):
    data = _linear_problem()
    kwargs = {"loss": "mse", "epochs": 1, "warmup_epochs": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_model(_linear_model(), data, data, **kwargs)
    with pytest.raises(ValueError, match="val_data"):
        train_model(_linear_model(), data, None, loss="mse", epochs=1, warmup_epochs=0)


# ------------------------------------------- the Keras callbacks against the old loop
class _ReferenceWarmupEarlyStopping(keras.callbacks.Callback):
    """The hand-written callback that train_model used before it used Keras' callbacks:
    the specification the library callbacks must reproduce (weights and history)."""

    def __init__(self, *, warmup_epochs, warmup_lr, lr, patience, min_delta):
        super().__init__()
        self.warmup_epochs, self.warmup_lr, self.lr = warmup_epochs, warmup_lr, lr
        self.patience, self.min_delta = patience, min_delta
        self.rows, self.best, self.best_epoch, self.best_weights, self.wait = [], np.inf, None, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = self.warmup_lr if epoch < self.warmup_epochs else self.lr
        self.model.optimizer.learning_rate = self._lr

    def on_epoch_end(self, epoch, logs=None):
        val_loss = float(logs.get("val_loss", np.nan))
        self.rows.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": val_loss,
                          "lr": self._lr})
        if val_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = val_loss, epoch + 1, 0
            self.best_weights = self.model.get_weights()
        elif epoch >= self.warmup_epochs:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _reference_train(data, *, epochs, warmup_epochs, warmup_lr, lr, patience, min_delta=0.0):
    set_seed(0)
    model = _linear_model()
    callback = _ReferenceWarmupEarlyStopping(warmup_epochs=warmup_epochs, warmup_lr=warmup_lr,
                                             lr=lr, patience=patience, min_delta=min_delta)
    first = warmup_lr if warmup_epochs > 0 else lr
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=first), loss="mse")
    set_seed(0)
    model.fit(x=data[0], y=data[1], batch_size=4, shuffle=True, epochs=epochs,
              callbacks=[callback], verbose=0, validation_data=data)
    rows = callback.rows
    for row in rows:
        row["best"] = row["epoch"] == callback.best_epoch
    return model.get_weights(), rows


@pytest.mark.parametrize("kwargs", [
    # a warm-up epoch is the best, then the loss blows up: stop `patience` epochs later
    {"epochs": 30, "warmup_epochs": 3, "warmup_lr": 1e-2, "lr": 50.0, "patience": 2},
    # patience 1 right after the warm-up
    {"epochs": 30, "warmup_epochs": 3, "warmup_lr": 1e-2, "lr": 50.0, "patience": 1},
    # a run that keeps improving to the end
    {"epochs": 8, "warmup_epochs": 2, "warmup_lr": 1e-3, "lr": 3e-2, "patience": 3},
    # no warm-up; a noisy run that stops on patience
    {"epochs": 25, "warmup_epochs": 0, "warmup_lr": 1e-5, "lr": 0.6, "patience": 2},
    # the whole run is warm-up; min_delta
    {"epochs": 4, "warmup_epochs": 6, "warmup_lr": 0.3, "lr": 1e-3, "patience": 1,
     "min_delta": 1e-3},
])
def test_keras_callbacks_train_the_same_weights_and_history_as_the_old_loop(kwargs):
    data = _linear_problem()
    want_weights, want_rows = _reference_train(data, **kwargs)
    set_seed(0)  # the same initial weights as the reference; train_model seeds fit itself
    model = _linear_model()
    history = train_model(model, data, data, loss="mse", seed=0, **kwargs)
    got = history[["epoch", "loss", "val_loss", "lr", "best"]].to_dict("records")
    assert got == want_rows
    for w, v in zip(model.get_weights(), want_weights, strict=True):
        np.testing.assert_array_equal(w, v)


def test_train_model_writes_a_csv_log(tmp_path):
    set_seed(0)
    data = _linear_problem()
    history = train_model(_linear_model(), data, data, loss="mse", epochs=3, warmup_epochs=1,
                          csv_log=tmp_path / "epochs.csv")
    import pandas as pd

    logged = pd.read_csv(tmp_path / "epochs.csv")
    assert logged["epoch"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(logged["val_loss"], history["val_loss"])
    np.testing.assert_allclose(logged["learning_rate"], history["lr"], rtol=1e-6)


# ---------------------------------------------------------------- backends


class _EpochLog(SegmentationSequence):
    """A sequence that records the epoch of every batch Keras asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetched = []

    def __getitem__(self, idx):
        self.fetched.append(self.epoch)
        return super().__getitem__(idx)


def test_train_model_draws_epoch_e_of_the_sequence_in_epoch_e():
    """Keras calls on_epoch_end also when fit starts, and TensorFlow first reads batches to
    learn their shapes: counting those calls drew epochs 1 and 2 of the sequence for two
    epochs of training on TensorFlow, another order of draws on JAX."""
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16)).astype("float32")
    train = _EpochLog(images, images > 0.5, 2, batch_size=2, augment=True, output_names=["fused"])
    val = SegmentationSequence(images[:2], images[:2] > 0.5, 2, batch_size=2, output_names=["fused"])
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            train.fetched.clear()

        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(set(train.fetched)))

    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, {"fused": keras.layers.Conv2D(2, 1, activation="softmax")(inputs)})
    fit = keras.Model.fit

    def fit_recording(self, *args, **kwargs):
        return fit(self, *args, **{**kwargs, "callbacks": [*kwargs["callbacks"], Record()]})

    try:
        keras.Model.fit = fit_recording
        train_model(model, train, val, loss="categorical_crossentropy", epochs=3, warmup_epochs=1)
    finally:
        keras.Model.fit = fit
    assert seen == [[0], [1], [2]]


def _backend_run(folder, out, **env):
    """Run tests/backend_run.py in a subprocess with ``env`` and return its result."""
    environ = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    code = "import sys, backend_run; backend_run.main(sys.argv[1], sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(out)],
                          capture_output=True, text=True, env=environ, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(out).read_text())


def test_training_gives_the_same_losses_on_tensorflow_jax_and_onednn(tmp_path):
    """Same weights, data, losses and loop: the M-net, U-net and Pose-net give the same
    forward pass within 1e-5 and the same training and validation losses after each of two
    epochs (four Adam steps at 1e-4) within 1e-3 on TensorFlow with oneDNN off and on and on
    JAX. On identical batches the three backends agree to about 1e-6 after twelve steps; a
    larger gap means the backends were fed different data or compute differently."""
    import backend_run
    from tensorflow.python.util import _pywrap_util_port

    here = backend_run.train_networks(tmp_path)
    assert here["backend"] == "tensorflow"
    onednn_here = bool(_pywrap_util_port.IsMklEnabled())
    other = _backend_run(tmp_path, tmp_path / "tf.json", KERAS_BACKEND="tensorflow",
                         TF_ENABLE_ONEDNN_OPTS="0" if onednn_here else "1")
    jax = _backend_run(tmp_path, tmp_path / "jax.json", KERAS_BACKEND="jax")
    assert other["backend"] == "tensorflow" and jax["backend"] == "jax"
    for name in ("mnet", "unet", "posenet"):
        ref = here[name]
        assert len(ref["val_loss"]) == backend_run.EPOCHS and np.all(np.isfinite(ref["val_loss"])), ref
        for label, result in ((f"oneDNN {'off' if onednn_here else 'on'}", other), ("JAX", jax)):
            got = result[name]
            msg = f"{name} on {label}"
            np.testing.assert_allclose(got["forward"], ref["forward"], atol=1e-5, rtol=0, err_msg=msg)
            np.testing.assert_allclose(got["loss"], ref["loss"], atol=1e-3, rtol=0, err_msg=msg)
            np.testing.assert_allclose(got["val_loss"], ref["val_loss"], atol=1e-3, rtol=0, err_msg=msg)
