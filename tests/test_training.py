"""Tests of lumbar_core.training: seeds, augmentation, sequences, the training loop."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
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
