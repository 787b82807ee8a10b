"""Speed of the level-set refinement (paper section 2.4) against Li's DRLSE demo.

Runs ``lumbar_core.levelset.drlse_evolve`` and the plain reference update of Li's
published ``drlse_edge`` demo (``reference_drlse_edge`` in ``tests/test_levelset.py``)
on the same synthetic 224 x 224 vertebra-like patch, edge map, coefficients and
iteration count (no fidelity term, no early stop), and prints the median time per
patch of each, their ratio and the Dice agreement of the two ``{phi < 0}`` regions.
It then times ``refine_mask`` with its default parameters (fidelity on, stopping at
the steady state).

Usage: ``python benchmarks/levelset.py [--repeats N] [--iterations N] [--seed S]``
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

_ROOT = Path(__file__).resolve().parents[1]


def _load_modules():
    """Import lumbar_core.levelset and the reference of the test module."""
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    from lumbar_core import levelset

    spec = importlib.util.spec_from_file_location("_levelset_reference", _ROOT / "tests" / "test_levelset.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    return levelset, reference.reference_drlse_edge


def vertebra_patch(seed=0, size=224):
    """A noisy vertebra-like patch, its true body mask and an imperfect network mask.

    A rounded rectangle of 72 x 56 px (a lumbar body in a patch three spacings
    high), brighter cortical rim, a vertical background ramp, Gaussian noise and a
    slight blur; the "network" mask is the body grown by 2 px with a smooth random
    boundary error of about 2.5 px.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2.0
    r = ((np.abs(xx - c) / 36.0) ** 6 + (np.abs(yy - c) / 28.0) ** 6) ** (1 / 6)
    body = r <= 1.0
    rim = body & (r > 0.88)
    image = 0.25 + 0.1 * yy / size + 0.25 * body + 0.15 * rim + rng.normal(0.0, 0.06, body.shape)
    image = np.clip(ndi.gaussian_filter(image, 0.7), 0.0, 1.0)
    error = ndi.gaussian_filter(rng.normal(size=body.shape), 6.0)
    error *= 2.5 / error.std()
    signed = ndi.distance_transform_edt(body) - ndi.distance_transform_edt(~body)
    mask = signed + 2.0 + error > 0
    return image, body, mask


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _median_ms(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median reported)")
    parser.add_argument("--iterations", type=int, default=100, help="iterations of both evolutions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic patch")
    args = parser.parse_args(argv)

    levelset, reference_drlse_edge = _load_modules()
    image, truth, mask = vertebra_patch(args.seed)
    defaults = levelset.LevelSetParams()
    g = levelset.edge_indicator(image, sigma=defaults.sigma, scale=defaults.edge_scale)
    phi0 = np.where(mask, -defaults.c0, defaults.c0)
    params = levelset.LevelSetParams(lam=0.0, alpha=0.0, iterations=args.iterations, check_every=10**9)

    ref_ms, ref_phi = _median_ms(
        lambda: reference_drlse_edge(
            phi0, g, lmda=params.mu_l, mu=params.mu, alfa=params.alpha, epsilon=params.epsilon,
            timestep=params.dt, iters=params.iterations,
        ),
        args.repeats,
    )
    ours_ms, (phi, _) = _median_ms(lambda: levelset.drlse_evolve(phi0, g, params=params), args.repeats)
    refine_ms, (refined, info) = _median_ms(lambda: levelset.refine_mask(image, mask), args.repeats)

    print(f"patch {image.shape[0]} x {image.shape[1]}, {args.iterations} iterations, median of {args.repeats}")
    print(f"reference drlse_edge (float64, full image): {ref_ms:8.1f} ms per patch")
    print(f"lumbar_core drlse_evolve:                   {ours_ms:8.1f} ms per patch")
    print(f"speed-up:                                   {ref_ms / ours_ms:8.1f} x")
    print(f"Dice of {{phi < 0}}, ours vs reference:       {_dice(phi < 0, ref_phi < 0):8.4f}")
    print(
        f"refine_mask, defaults: {refine_ms:.1f} ms per patch, {info['iterations']} iterations "
        f"({info['reason']}); Dice vs truth {_dice(mask, truth):.4f} -> {_dice(refined, truth):.4f}"
    )


if __name__ == "__main__":
    main()
