"""How much the demo phantoms look like real lateral lumbar films, on what needs no labels.

Renders ``N`` phantoms (film style by default) and reads a folder of real films, then
measures both the same way and prints them side by side with the real films' range
(min-max over the folder). The real films may be figures (a film with coloured marks,
white lines and a title drawn over it, as published figures are): each is cropped to
the film area and coloured or near-white pixels (the marks) are left out of every
measure; plain grey films need no crop.

Measures (each image normalised to its 1st-99th grey-level percentiles inside the
film, and resampled to 1024 rows, so that films of any size and bit depth compare):

- ``io_p5 .. io_p95``: grey-level percentiles after the workflow's pre-processing
  (``lumbar_core.preprocess.preprocess_image``: resize, CLAHE, Gaussian);
- ``grad_p50/p90/p99``: gradient magnitude (Sobel after a 1.5 px Gaussian) in the
  central band (rows 20-80 %, columns 30-80 %), i.e. contrast across vertebral and
  other edges;
- ``noise_x1000``: high-pass residual (image minus a 1 px Gaussian) std in flat
  16 x 16 blocks (the quarter of blocks with the weakest gradient), x 1000;
- ``psd_slope``: slope of the radially averaged power spectrum (log-log, 0.06-0.4
  cycles/px), averaged over the 64 x 64 tiles of the central band that hold no marks:
  steeper is blurrier or less textured;
- ``edge_10_90_px``: median 10-90 % rise distance across the strongest edges of the
  central band, in pixels of the 1024-row image.

Usage: ``python benchmarks/phantom_realism.py REAL_DIR [--n 12] [--seed 0]
[--style film] [--save DIR]`` (``--save`` writes the phantoms as 8-bit PNGs for a look).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

ROWS = 1024
MEASURES = ("io_p5", "io_p25", "io_p50", "io_p75", "io_p95", "grad_p50", "grad_p90",
            "grad_p99", "noise_x1000", "psd_slope", "edge_10_90_px")


def load_real(path):
    """A real film (grey or a figure with marks) -> (grey image in [0, 1], valid mask)."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    grey = rgb.mean(axis=2)
    if chroma.max() < 0.02 and grey.min() < 0.9:  # a plain grey film
        return grey, np.ones(grey.shape, dtype=bool)
    # Figure: the film is the large region that is not the white page.
    not_page = rgb.min(axis=2) < 0.98
    rows = np.flatnonzero(not_page.mean(axis=1) > 0.5)
    cols = np.flatnonzero(not_page.mean(axis=0) > 0.5)
    r0, r1, c0, c1 = rows[0] + 4, rows[-1] - 3, cols[0] + 4, cols[-1] - 3
    grey, chroma, rgb = grey[r0:r1, c0:c1], chroma[r0:r1, c0:c1], rgb[r0:r1, c0:c1]
    marks = (chroma > 0.06) | (rgb.min(axis=2) > 0.9)
    valid = ~ndimage.binary_dilation(marks, iterations=5)
    return grey, valid


def fill(image, valid):
    """Invalid pixels take the value of the nearest valid one."""
    if valid.all():
        return image
    index = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return image[tuple(index)]


def measure(image, valid):
    """The measures of one image (float array, any range) and its valid mask."""
    from lumbar_core.preprocess import preprocess_image

    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image[valid], [1, 99])
    g = np.clip((fill(image, valid) - lo) / max(hi - lo, 1e-6), 0, 1)
    out = {}
    io = preprocess_image(g)
    io_valid = ndimage.zoom(valid.astype(np.float32), np.array(io.shape) / valid.shape,
                            order=0) > 0.5
    for q in (5, 25, 50, 75, 95):
        out[f"io_p{q}"] = float(np.percentile(io[io_valid], q))
    zoom = ROWS / g.shape[0]
    small = ndimage.zoom(ndimage.gaussian_filter(g, 0.5 / zoom), zoom, order=1)
    ok = ndimage.zoom(valid.astype(np.float32), zoom, order=0) > 0.5
    ok = ndimage.binary_erosion(ok, iterations=4)
    H, W = small.shape
    band = np.zeros_like(ok)
    band[int(0.2 * H):int(0.8 * H), int(0.3 * W):int(0.8 * W)] = True
    smooth = ndimage.gaussian_filter(small, 1.5)
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8.0
    sel = grad[band & ok]
    for q in (50, 90, 99):
        out[f"grad_p{q}"] = float(np.percentile(sel, q)) * 1000.0
    residual = small - ndimage.gaussian_filter(small, 1.0)
    b = 16
    h, w = H // b * b, W // b * b

    def blocks(a):
        return a[:h, :w].reshape(h // b, b, w // b, b)

    res_std = blocks(residual).std(axis=(1, 3))
    grad_mean = blocks(ndimage.gaussian_filter(grad, 2.0)).mean(axis=(1, 3))
    level = blocks(small).mean(axis=(1, 3))
    good = blocks(ok).all(axis=(1, 3)) & (level > 0.05) & (level < 0.95)
    flat = good & (grad_mean <= np.percentile(grad_mean[good], 25))
    out["noise_x1000"] = float(np.median(res_std[flat])) * 1000.0
    # Power spectrum: mean over 64 x 64 tiles of the central band that are fully valid
    # (no filled-in marks) and neither black nor white.
    t = 64
    window = np.outer(np.hanning(t), np.hanning(t))
    spectra = []
    for r in range(int(0.2 * H), int(0.8 * H) - t + 1, t // 2):
        for c in range(int(0.3 * W), int(0.8 * W) - t + 1, t // 2):
            tile = small[r:r + t, c:c + t]
            if ok[r:r + t, c:c + t].all() and 0.05 < tile.mean() < 0.95:
                spectra.append(np.abs(np.fft.fft2((tile - tile.mean()) * window)) ** 2)
    power = np.fft.fftshift(np.mean(spectra, axis=0))
    f = np.fft.fftshift(np.fft.fftfreq(t))
    radius = np.hypot(f[:, None], f[None, :])
    edges = np.geomspace(0.06, 0.4, 9)
    centres, values = [], []
    for k in range(1, len(edges)):
        sel = (radius >= edges[k - 1]) & (radius < edges[k])
        centres.append(np.sqrt(edges[k - 1] * edges[k]))
        values.append(power[sel].mean())
    out["psd_slope"] = float(np.polyfit(np.log(centres), np.log(values), 1)[0])
    out["edge_10_90_px"] = edge_width(small, grad, band & ok)
    return out


def edge_width(small, grad, mask, n=200):
    """Median 10-90 % rise distance along the gradient at the strongest edge points."""
    g = np.where(mask, grad, 0)
    peaks = (g == ndimage.maximum_filter(g, 9)) & (g > 0)
    rr, cc = np.nonzero(peaks)
    if rr.size == 0:
        return float("nan")
    order = np.argsort(g[rr, cc])[::-1][:n]
    gy = ndimage.sobel(ndimage.gaussian_filter(small, 1.5), 0)
    gx = ndimage.sobel(ndimage.gaussian_filter(small, 1.5), 1)
    t = np.linspace(-8, 8, 65)
    widths = []
    for r, c in zip(rr[order], cc[order]):
        norm = np.hypot(gy[r, c], gx[r, c])
        if norm == 0:
            continue
        dy, dx = gy[r, c] / norm, gx[r, c] / norm
        prof = ndimage.map_coordinates(small, [r + t * dy, c + t * dx], order=1)
        a, z = prof[:8].mean(), prof[-8:].mean()
        if z - a < 0.05:
            continue
        f = (prof - a) / (z - a)
        i10 = np.argmax(f >= 0.1)
        i90 = np.argmax(f >= 0.9)
        if i90 > i10:
            widths.append(t[i90] - t[i10])
    return float(np.median(widths)) if widths else float("nan")


def phantoms(n, seed, style, save=None):
    """Render n phantoms as the demo cohort mixes them; yields (image, valid, CPU s)."""
    from lumbar_core.phantom import render_phantom

    for k in range(n):
        s = int(np.random.SeedSequence(seed, spawn_key=(9, k)).generate_state(1)[0])
        start = time.process_time()
        image, _, meta = render_phantom(s, modality=("DR", "CR")[k % 2],
                                        abnormal=bool(k // 2 % 2), style=style)
        seconds = time.process_time() - start
        if save is not None:
            from PIL import Image

            top = 2 ** meta["bits_stored"] - 1
            Path(save).mkdir(parents=True, exist_ok=True)
            Image.fromarray((image / top * 255).astype(np.uint8)).save(
                Path(save) / f"phantom_{style}_{k:02d}.png")
        yield image.astype(np.float32), np.ones(image.shape, dtype=bool), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("real_dir", help="folder of real lateral films (PNG/JPEG)")
    parser.add_argument("--n", type=int, default=12, help="phantoms to render (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", default="film", choices=("film", "classic"))
    parser.add_argument("--save", default=None, help="folder for 8-bit PNGs of the phantoms")
    args = parser.parse_args(argv)
    files = sorted(p for p in Path(args.real_dir).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not files:
        raise SystemExit(f"no images in {args.real_dir}")
    real = [measure(*load_real(f)) for f in files]
    fake, seconds = [], []
    for image, valid, s in phantoms(args.n, args.seed, args.style, args.save):
        fake.append(measure(image, valid))
        seconds.append(s)
    print(f"{len(real)} real films, {len(fake)} {args.style} phantoms "
          f"(render: CPU time {np.median(seconds):.2f} s median, {max(seconds):.2f} s max a "
          f"phantom)")
    print(f"{'measure':15s} {'real min':>9s} {'real max':>9s} {'ph. min':>9s} "
          f"{'ph. median':>10s} {'ph. max':>9s}  median inside / phantoms inside")
    for key in MEASURES:
        r = np.array([m[key] for m in real])
        f = np.array([m[key] for m in fake])
        inside = (f >= r.min()) & (f <= r.max())
        med = float(np.median(f))
        print(f"{key:15s} {r.min():9.3f} {r.max():9.3f} {f.min():9.3f} {med:10.3f} "
              f"{f.max():9.3f}  {'yes' if r.min() <= med <= r.max() else 'NO ':3s} "
              f"{inside.sum()}/{len(f)}")


if __name__ == "__main__":
    main()
