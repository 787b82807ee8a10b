"""Tests of lumbar_core.levelset (paper section 2.4, Eq. 9 and 10).

The module also holds ``reference_drlse_edge``, a plain transcription of the update of
Li's published DRLSE demo (``drlse_edge``), used to check ``drlse_evolve`` and by the
benchmark script.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

from lumbar_core.levelset import LevelSetParams, drlse_evolve, edge_indicator, refine_mask


# Reference: Li et al. 2010, the published drlse_edge demo, written plainly.
def _ref_neumann_bound_cond(f):
    """Copy the second pixel from each border onto the border pixel."""
    g = f.copy()
    g[0, 0], g[0, -1], g[-1, 0], g[-1, -1] = g[2, 2], g[2, -3], g[-3, 2], g[-3, -3]
    g[0, 1:-1] = g[2, 1:-1]
    g[-1, 1:-1] = g[-3, 1:-1]
    g[1:-1, 0] = g[1:-1, 2]
    g[1:-1, -1] = g[1:-1, -3]
    return g


def _ref_div(nx, ny):
    """Divergence of (nx, ny) with np.gradient."""
    _, nxx = np.gradient(nx)
    nyy, _ = np.gradient(ny)
    return nxx + nyy


def _ref_dirac(x, epsilon):
    """Regularised Dirac delta (1 + cos(pi x / eps)) / (2 eps) on |x| <= eps."""
    f = (1.0 / (2.0 * epsilon)) * (1.0 + np.cos(np.pi * x / epsilon))
    return f * ((x <= epsilon) & (x >= -epsilon))


def _ref_dist_reg_p2(phi):
    """div(d_p(|grad phi|) grad phi) for the double-well potential p2."""
    phi_y, phi_x = np.gradient(phi)
    s = np.sqrt(phi_x**2 + phi_y**2)
    a = (s >= 0) & (s <= 1)
    b = s > 1
    ps = a * np.sin(2 * np.pi * s) / (2 * np.pi) + b * (s - 1)
    dps = ((ps != 0) * ps + (ps == 0)) / ((s != 0) * s + (s == 0))
    return _ref_div(dps * phi_x - phi_x, dps * phi_y - phi_y) + ndi.laplace(phi, mode="nearest")


def reference_drlse_edge(phi0, g, *, lmda, mu, alfa, epsilon, timestep, iters, potential="double_well"):
    """Li's ``drlse_edge`` demo update, iterated ``iters`` times (float64).

    ``phi = phi + timestep * (mu * distRegTerm + lmda * edgeTerm + alfa * areaTerm)``
    with inside = ``{phi < 0}``, as in the demo.
    """
    phi = np.array(phi0, dtype=np.float64)
    vy, vx = np.gradient(g)
    for _ in range(iters):
        phi = _ref_neumann_bound_cond(phi)
        phi_y, phi_x = np.gradient(phi)
        s = np.sqrt(phi_x**2 + phi_y**2)
        nx = phi_x / (s + 1e-10)
        ny = phi_y / (s + 1e-10)
        curvature = _ref_div(nx, ny)
        if potential == "single_well":
            dist_reg_term = ndi.laplace(phi, mode="nearest") - curvature
        else:
            dist_reg_term = _ref_dist_reg_p2(phi)
        dirac_phi = _ref_dirac(phi, epsilon)
        area_term = dirac_phi * g
        edge_term = dirac_phi * (vx * nx + vy * ny) + dirac_phi * g * curvature
        phi = phi + timestep * (mu * dist_reg_term + lmda * edge_term + alfa * area_term)
    return phi


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _noisy_ellipse(shape=(128, 128), *, seed=0, noise=0.05):
    """A bright ellipse (semi-axes 36 x 24 px) on a darker noisy background."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    truth = ((xx - cols / 2) / 36.0) ** 2 + ((yy - rows / 2) / 24.0) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    image = 0.3 + 0.35 * truth + rng.normal(0.0, noise, shape)
    return np.clip(image, 0.0, 1.0), truth


# edge_indicator
def test_edge_indicator_flat_image_is_one():
    g = edge_indicator(np.full((6, 7), 0.4), sigma=1.0, scale=40.0)
    assert g.shape == (6, 7)
    np.testing.assert_allclose(g, 1.0)


def test_edge_indicator_step_hand_counted():
    # Step between columns 2 and 3: central differences give 0.5 at columns 2 and 3,
    # so g = 1 / (1 + 0.25) = 0.8 there and 1 elsewhere (no smoothing, scale 1).
    image = np.zeros((4, 6))
    image[:, 3:] = 1.0
    g = edge_indicator(image, sigma=0, scale=1.0)
    expected = np.ones((4, 6))
    expected[:, 2:4] = 0.8
    np.testing.assert_allclose(g, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_edge_indicator_dtypes(dtype):
    image = np.zeros((8, 8), dtype=dtype)
    image[:, 4:] = 1
    g = edge_indicator(image, sigma=1.0)
    assert g.dtype == np.float64
    assert np.all((g > 0) & (g <= 1))
    assert g[:, 3:5].max() < g[:, 0].min()


@pytest.mark.parametrize("kwargs", [{"sigma": -1.0}, {"sigma": 1.0, "scale": 0.0}])
def test_edge_indicator_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        edge_indicator(np.zeros((4, 4)), **kwargs)


def test_edge_indicator_rejects_3d():
    with pytest.raises(ValueError, match="2-D"):
        edge_indicator(np.zeros((4, 4, 3)), sigma=1.0)


# LevelSetParams
@pytest.mark.parametrize(
    "kwargs",
    [
        {"mu": -0.1},
        {"dt": 0.0},
        {"epsilon": -1.0},
        {"iterations": -1},
        {"iterations": 2.5},
        {"tol": -1e-3},
        {"potential": "triple_well"},
        {"check_every": 0},
        {"edge_scale": float("nan")},
        {"mu_l": "5"},
        {"alpha": None},
    ],
)
def test_params_reject_bad_values(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        LevelSetParams(**kwargs)


# drlse_evolve
@pytest.mark.parametrize(
    ("potential", "alpha"), [("double_well", 0.0), ("double_well", 1.5), ("double_well", -1.5), ("single_well", 0.0)]
)
def test_drlse_agrees_with_reference(potential, alpha):
    image, truth = _noisy_ellipse((96, 112), seed=1)
    g = edge_indicator(image, sigma=1.5, scale=40.0)
    phi0 = np.where(ndi.binary_erosion(truth, iterations=3), -2.0, 2.0)
    iters = 60
    ref = reference_drlse_edge(
        phi0, g, lmda=5.0, mu=0.2, alfa=alpha, epsilon=1.5, timestep=1.0, iters=iters, potential=potential
    )
    params = LevelSetParams(
        mu=0.2, mu_l=5.0, alpha=alpha, lam=0.0, dt=1.0, epsilon=1.5, iterations=iters,
        potential=potential, check_every=10**6,
    )
    phi, info = drlse_evolve(phi0, g, params=params)
    assert info == {"iterations": iters, "converged": False, "reason": "iteration cap"}
    assert phi.shape == phi0.shape and phi.dtype == np.float64
    assert _dice(phi < 0, ref < 0) >= 0.99
    # The evolution moved the contour, so the agreement is not trivial.
    assert _dice(ref < 0, phi0 < 0) < 0.99
    if potential == "double_well":
        # Same values near the contour (the boundary handling differs at the border).
        near = np.abs(ref) < 1.5
        np.testing.assert_allclose(phi[near], ref[near], atol=1e-3)


def test_drlse_fidelity_sign_pulls_contour_to_target():
    # Only the fidelity and the distance term act (mu_l = alpha = 0): the contour
    # of a 10 x 10 square must grow to the 20 x 20 target, whose F = 1 - 2 y.
    target = np.zeros((40, 40), dtype=bool)
    target[10:30, 10:30] = True
    phi0 = np.full((40, 40), 2.0)
    phi0[15:25, 15:25] = -2.0
    params = LevelSetParams(mu_l=0.0, alpha=0.0, lam=1.0, iterations=300, tol=0)
    phi, info = drlse_evolve(phi0, np.ones((40, 40)), params=params, fidelity=1.0 - 2.0 * target)
    assert info["converged"]
    assert _dice(phi < 0, target) >= 0.95


def test_drlse_stays_signed_distance_near_contour():
    image, truth = _noisy_ellipse(seed=2)
    mask = ndi.binary_dilation(truth, iterations=2)
    g = edge_indicator(image, sigma=2.5, scale=40.0)
    phi0 = np.where(mask, -2.0, 2.0)
    phi, _ = drlse_evolve(phi0, g, params=LevelSetParams(), fidelity=1.0 - 2.0 * mask)
    gy, gx = np.gradient(phi)
    band = np.abs(phi) < 1.5
    assert np.count_nonzero(band) > 100
    assert 0.8 <= np.median(np.hypot(gx, gy)[band]) <= 1.2


def test_drlse_reports_steady_state_and_iteration_cap():
    image, truth = _noisy_ellipse(seed=3)
    g = edge_indicator(image, sigma=2.5, scale=40.0)
    mask = ndi.binary_erosion(truth, iterations=2)
    phi0 = np.where(mask, -2.0, 2.0)
    fidelity = 1.0 - 2.0 * mask
    phi, info = drlse_evolve(phi0, g, params=LevelSetParams(iterations=500, tol=0), fidelity=fidelity)
    assert info["converged"] and info["reason"] == "steady state"
    assert info["iterations"] < 500
    assert info["iterations"] % 10 == 0
    phi, info = drlse_evolve(phi0, g, params=LevelSetParams(iterations=3), fidelity=fidelity)
    assert info == {"iterations": 3, "converged": False, "reason": "iteration cap"}


def test_drlse_flat_function_is_steady_at_once():
    phi, info = drlse_evolve(np.full((16, 16), 2.0), np.ones((16, 16)), params=LevelSetParams())
    assert info == {"iterations": 0, "converged": True, "reason": "steady state"}
    np.testing.assert_array_equal(phi, 2.0)


def test_drlse_callback_sees_every_iteration_read_only():
    phi0 = np.full((24, 24), 2.0)
    phi0[8:16, 8:16] = -2.0
    seen = []

    def callback(iteration, phi):
        seen.append(iteration)
        assert phi.shape == (24, 24)
        assert not phi.flags.writeable

    _, info = drlse_evolve(phi0, np.ones((24, 24)), params=LevelSetParams(iterations=7), callback=callback)
    assert seen == list(range(1, 8))
    assert info["iterations"] == 7


def test_drlse_rejects_bad_inputs():
    phi0 = np.full((8, 8), 2.0)
    with pytest.raises(ValueError, match="g must have the shape"):
        drlse_evolve(phi0, np.ones((8, 9)))
    with pytest.raises(ValueError, match="fidelity"):
        drlse_evolve(phi0, np.ones((8, 8)), fidelity=np.ones((7, 8)))
    with pytest.raises(ValueError, match="finite"):
        drlse_evolve(np.full((8, 8), np.nan), np.ones((8, 8)))
    with pytest.raises(ValueError, match="params"):
        drlse_evolve(phi0, np.ones((8, 8)), params={"mu": 0.2})
    with pytest.raises(ValueError, match="callback"):
        drlse_evolve(phi0, np.ones((8, 8)), callback=3)


# refine_mask
@pytest.mark.parametrize("shift", [-3, 3], ids=["too small", "too large"])
def test_refine_mask_moves_toward_true_edge(shift):
    image, truth = _noisy_ellipse(seed=4)
    if shift < 0:
        mask = ndi.binary_erosion(truth, iterations=-shift)
    else:
        mask = ndi.binary_dilation(truth, iterations=shift)
    refined, info = refine_mask(image, mask)
    assert refined.dtype == bool and refined.shape == mask.shape
    assert info["converged"]
    assert _dice(refined, truth) > _dice(mask, truth) + 0.02


def test_refine_mask_large_lam_keeps_mask():
    image, truth = _noisy_ellipse(seed=5)
    mask = ndi.binary_erosion(truth, iterations=3)
    refined, _ = refine_mask(image, mask, params=LevelSetParams(lam=5.0))
    assert _dice(refined, mask) >= 0.98
    # The default weight does move it: the check above is not vacuous.
    moved, _ = refine_mask(image, mask)
    assert _dice(moved, mask) < 0.98


@pytest.mark.parametrize("fill", [0, 1], ids=["empty", "full"])
def test_refine_mask_empty_or_full_returned_unchanged(fill):
    mask = np.full((32, 32), fill, dtype=np.uint8)
    with pytest.warns(UserWarning, match="empty mask" if fill == 0 else "full mask"):
        refined, info = refine_mask(np.random.default_rng(0).random((32, 32)), mask)
    assert refined.dtype == bool
    np.testing.assert_array_equal(refined, mask.astype(bool))
    assert info["iterations"] == 0 and not info["converged"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_refine_mask_patch_dtypes_agree(dtype):
    image, truth = _noisy_ellipse((64, 96), seed=6)
    mask = ndi.binary_dilation(truth, iterations=2)
    expected, _ = refine_mask(image, mask)
    refined, _ = refine_mask(image.astype(dtype), mask.astype(np.uint8))
    assert _dice(refined, expected) >= 0.999


def test_refine_mask_rejects_bad_inputs():
    patch = np.zeros((16, 16))
    with pytest.raises(ValueError, match="shape"):
        refine_mask(patch, np.zeros((16, 15), dtype=bool))
    with pytest.raises(ValueError, match="0 and 1"):
        refine_mask(patch, np.full((16, 16), 2))
    with pytest.raises(ValueError, match="2-D"):
        refine_mask(np.zeros((16, 16, 3)), np.zeros((16, 16, 3), dtype=bool))


# --------------------------------------------------------------------------- paste-back


def _soft_disc_probs(centres_uv, radius, size):
    """Foreground probabilities of a soft disc (logistic edge, 1.5 px) per patch."""
    vv, uu = np.mgrid[:size, :size]
    return np.stack([1.0 / (1.0 + np.exp(-(radius - np.hypot(uu - cu, vv - cv)) / 1.5))
                     for cu, cv in centres_uv])


@pytest.mark.parametrize("input_shape, size, sides", [
    ((2400, 1200), 128, [300.0, 300.0, 300.0, 300.0, 300.0]),
    ((1750, 1400), 96, [420.0, 380.0, 250.0, 520.0, 610.0]),
    ((3500, 1300), 224, [180.0, 640.0, 300.0, 300.0, 333.3]),
])
def test_unchanged_refinement_pastes_exactly_like_the_network(tmp_path, input_shape, size, sides):
    """Identity: a level set that changes nothing gives the network's pasted masks."""
    from lumbar_core import io
    from lumbar_core.preprocess import Geometry
    from lumbar_core.crop import patch_probabilities_to_masks
    from lumbar_core.steps.levelset import levelset_refine

    geometry = Geometry(input_shape)
    # L1 leaves the top of Io, L5 its left side; neighbouring boxes overlap.
    centres = np.array([[700.0, 40.0], [720.0, 260.0], [760.0, 470.0], [700.0, 700.0],
                        [60.0, 1000.0]])
    boxes = np.column_stack([centres, sides])
    rng = np.random.default_rng(1)
    probs = _soft_disc_probs(rng.uniform(0.4, 0.6, (5, 2)) * size, 0.33 * size, size)
    network = patch_probabilities_to_masks(probs, boxes, geometry)
    patches = rng.uniform(0.0, 1.0, (5, size, size)).astype(np.float16)
    io.save_npz(tmp_path / "crop.npz", patches=patches, boxes=boxes, status="ok", message="")
    io.save_npz(tmp_path / "net.npz", **network, status="ok", message="")
    io.write_json(tmp_path / "geometry.json", {"status": "ok", "geometry": geometry.to_dict()})
    unchanged = LevelSetParams(iterations=0)  # refine_mask returns its input mask
    levelset_refine(patches=tmp_path / "crop.npz",
                    network_masks={"mnet": tmp_path / "net.npz", "unet": tmp_path / "net.npz"},
                    geometry=tmp_path / "geometry.json", out=tmp_path / "refined.npz",
                    params={"mnet": unchanged, "unet": unchanged})
    refined = io.load_npz(tmp_path / "refined.npz")
    for method in ("mnet", "unet"):
        for grid in ("io", "input"):
            assert np.array_equal(refined[f"{method}_labels_{grid}"], network[f"labels_{grid}"])
    # the case is not trivial: the boxes overlap and are cut by the image border
    labels = network["labels_io"]
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    assert labels[0].any() and labels[:, 0].any()


def test_overlap_of_neighbours_resolved_alike_for_network_and_refined_masks():
    """Two overlapping masks: refined masks equal to the network's share the overlap alike,
    and a refined mask that grows into the neighbour takes the pixels where it is deeper."""
    from lumbar_core.crop import paste_masks
    from lumbar_core.preprocess import Geometry
    from lumbar_core.crop import paste_patch_masks, patch_probabilities_to_masks

    geometry = Geometry((2000, 1000))
    boxes = np.array([[760.0, 1000.0, 300.0], [760.0, 1150.0, 300.0]])
    probs = _soft_disc_probs([(63.5, 63.5), (63.5, 63.5)], 45, 128)
    network = patch_probabilities_to_masks(probs, boxes, geometry)
    overlap = (paste_masks(network["masks"][:1], boxes[:1], geometry.io_shape) > 0) & (
        paste_masks(network["masks"][1:], boxes[1:], geometry.io_shape) > 0)
    assert overlap.sum() > 500
    refined = paste_patch_masks(network["masks"].astype(bool), boxes, geometry)
    for grid in ("io", "input"):
        assert np.array_equal(refined[f"labels_{grid}"], network[f"labels_{grid}"])
    # The overlap is split where the two depths meet (equal discs: half way).
    rows = np.nonzero(overlap[:, 760])[0]
    split = network["labels_io"][rows, 760]
    assert split[0] == 1 and split[-1] == 2 and np.all(np.diff(split) >= 0)
    assert abs(rows[np.argmax(split == 2)] - 1075) <= 1


def _tuning_case(rng, shape, centres, radius_io, mask_radius, size, side):
    """A clean bright-disc image, its true labels, patches, boxes and too-small masks."""
    from lumbar_core.crop import extract_patches

    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = np.full(shape, 0.2)
    truth = np.zeros(shape, np.uint8)
    for k, (cx, cy) in enumerate(centres):
        disc = np.hypot(xx - cx, yy - cy) < radius_io
        image[disc] = 0.8
        truth[disc] = k + 1
    image += rng.normal(0.0, 0.02, shape)
    boxes = np.array([[cx, cy, side] for cx, cy in centres])
    patches = extract_patches(image, boxes, patch_size=size)
    vv, uu = np.mgrid[:size, :size]
    c = (size - 1) / 2.0
    masks = np.stack([np.hypot(uu - c, vv - c) < mask_radius for _ in centres])
    return patches, masks, boxes, truth


def test_tuning_picks_an_expanding_setting_when_masks_are_too_small():
    """Network masks 5 patch px too small on clean discs: the search scores the pasted
    masks, picks alpha < 0 (expansion), and its Dice is the best of the grid."""
    from dataclasses import replace

    from lumbar_core.crop import paste_masks
    from lumbar_core.levelset import refine_patch_masks, search_parameters
    from lumbar_core.metrics import region_metrics

    rng = np.random.default_rng(0)
    shape, size, side = (300, 260), 64, 128.0  # 2 Io px per patch px
    cases = [_tuning_case(rng, shape, centres, 36.0, 13.0, size, side)
             for centres in ([(80, 80), (180, 90)], [(90, 150), (170, 200)])]
    patches, masks, boxes, truths = (np.stack(x) if i < 3 else list(x)
                                     for i, x in enumerate(zip(*cases)))
    grid = {"alpha": [1.0, 0.0, -1.0], "lam": [0.2, 0.5]}
    base = LevelSetParams(iterations=200)
    rows = search_parameters(patches, masks, boxes, truths, grid, base=base)
    assert len(rows) == 1 + 6 and not rows[0]["refined"] and not rows[0]["chosen"]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["alpha"] < 0
    assert chosen[0]["dice_mean"] == max(r["dice_mean"] for r in rows)
    assert chosen[0]["dice_mean"] > rows[0]["dice_mean"] + 0.1
    # the score is the Dice of the pasted masks in Io, recomputed here independently
    params = replace(base, alpha=chosen[0]["alpha"], lam=chosen[0]["lam"])
    dice = [region_metrics(t, paste_masks(refine_patch_masks(p, m, params=params)[0], b, t.shape))["dice"]
            for p, m, b, t in zip(patches, masks, boxes, truths)]
    assert chosen[0]["dice_mean"] == pytest.approx(np.mean(dice), abs=1e-12)
    # the same search again gives the same table (determinism)
    assert search_parameters(patches, masks, boxes, truths, grid, base=base) == rows


def test_search_parameters_rejects_bad_inputs():
    from lumbar_core.levelset import search_parameters

    p = np.zeros((1, 2, 8, 8))
    with pytest.raises(ValueError, match="boxes"):
        search_parameters(p, p > 0, np.zeros((1, 3, 3)), [np.zeros((20, 20))], {"lam": [0.2]})
    with pytest.raises(ValueError, match="unknown"):
        search_parameters(p, p > 0, np.zeros((1, 2, 3)), [np.zeros((20, 20))], {"nope": [1]})
    with pytest.raises(ValueError, match="at least one"):
        search_parameters(p, p > 0, np.zeros((1, 2, 3)), [np.zeros((20, 20))], {})
