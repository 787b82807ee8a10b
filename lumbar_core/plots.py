"""Figures of the paper's section 3 (Fig. 9, 10, 11) and a contact sheet of a cohort.

All figures are drawn on :class:`matplotlib.figure.Figure` objects without ``pyplot``, so
nothing depends on (or changes) the global backend and nothing is ever shown; the
functions with an ``out_stem`` write ``out_stem.png`` and ``out_stem.pdf``. Coordinates
are ``(x, y) = (column, row)`` in the pixels of the image passed in, pixel centres at
integers; large images are block-averaged for drawing speed, and the drawing is placed
so that every point still lands on its full-resolution pixel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from skimage.measure import find_contours
from skimage.transform import downscale_local_mean

from .io import atomic_path
from .metrics import LEVELS

__all__ = [
    "GT_COLOUR",
    "METHOD_COLOURS",
    "choose_fracture_rows",
    "choose_overlay_images",
    "contact_sheet",
    "plot_fracture_examples",
    "plot_centre_errors",
    "plot_loss_curves",
    "plot_overlay",
]

GT_COLOUR = "yellow"
"""Colour of the ground truth, as in the paper's Fig. 11."""

METHOD_COLOURS = {
    "PN+MNet+LS": "red",
    "PN+MNet": "lime",
    "PN+UNet+LS": "magenta",
    "PN+UNet": "deepskyblue",
    "Orig MNet": "darkorange",
    "Orig UNet": "blueviolet",
}
"""One colour per method, the same in every figure (Fig. 11: M-net green, level set red)."""

_EXTRA_COLOURS = ("white", "cyan", "pink", "chocolate", "gold", "springgreen")
_LEVEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


# ----------------------------------------------------------------------------- helpers
def _savefig_atomic(fig: Figure, path: Path, *, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix) through a temporary file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=dpi)
    return path


def _save(fig: Figure, out_stem, *, dpi: int, formats=("png", "pdf")) -> list[Path]:
    """Write ``out_stem.png`` and ``out_stem.pdf`` (or ``formats``); return the paths."""
    return [_savefig_atomic(fig, Path(f"{out_stem}.{fmt}"), dpi=dpi) for fmt in formats]


def _check_dpi(dpi) -> None:
    if not isinstance(dpi, (int, np.integer)) or dpi < 10:
        raise ValueError(f"dpi must be an integer >= 10; got {dpi!r}")


def _display_image(image, max_side: int) -> tuple[np.ndarray, int, tuple]:
    """Block-average ``image`` by an integer factor ``f`` so that no side exceeds
    ``max_side``; return it, ``f`` and the ``imshow`` extent in full-resolution pixels.

    A block of ``f x f`` pixels starting at full pixel ``k f`` covers
    ``[k f - 0.5, k f + f - 0.5]``, hence the extent ``(-0.5, w f - 0.5, h f - 0.5, -0.5)``.
    """
    img = np.asarray(image, dtype=np.float64)
    f = max(1, math.ceil(max(img.shape) / max_side))
    small = downscale_local_mean(img, (f, f)) if f > 1 else img
    h, w = small.shape
    return small, f, (-0.5, w * f - 0.5, h * f - 0.5, -0.5)


def _image_axes(ax, shape, title: str) -> None:
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _as_outlines(outlines, name: str) -> np.ndarray:
    arr = np.asarray(outlines, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (8, 2):
        raise ValueError(f"{name} must have shape (n, 8, 2) of (x, y) points; got {arr.shape}")
    return arr


def _as_centres(centres, name: str) -> np.ndarray:
    arr = np.asarray(centres, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) of (x, y) points; got {arr.shape}")
    return arr


def _draw_polygon(ax, points, **kwargs) -> None:
    closed = np.vstack([points, points[:1]])
    ax.plot(closed[:, 0], closed[:, 1], **kwargs)


def _label_contours(labels: np.ndarray, f: int):
    """Contours ``(x, y)`` in full-resolution pixels of each label 1..5 of a label image,
    traced on every ``f``-th pixel (pixel ``k`` of the sample is full pixel ``k f``)."""
    sample = np.asarray(labels)[::f, ::f]
    for value in range(1, len(LEVELS) + 1):
        region = np.pad(sample == value, 1)
        if not region.any():
            continue
        for c in find_contours(region.astype(np.float32), 0.5):
            yield (c[:, 1] - 1) * f, (c[:, 0] - 1) * f


# ----------------------------------------------------------------------------- Fig. 9
def _warmup_rows(h: pd.DataFrame):
    """Rows of warm-up: those before the first rise of the learning rate, if any."""
    for col in ("learning_rate", "lr"):
        if col in h.columns:
            lr = h[col].to_numpy(dtype=np.float64)
            up = np.flatnonzero(lr[1:] > lr[:-1])
            return int(up[0]) + 1 if up.size else None
    return None


def plot_loss_curves(histories, out_stem, *, warmup_epochs=None, dpi: int = 150) -> list[Path]:
    """Fig. 9: training and validation loss per epoch, one panel per model.

    Parameters
    ----------
    histories : dict of str to pandas.DataFrame
        Model name (e.g. ``"Pose-net"``, ``"M-net"``) to its training history, one row
        per epoch, as Keras' ``CSVLogger`` writes it: ``loss`` (required), ``val_loss``,
        ``epoch`` (default: the row number) and ``learning_rate`` or ``lr``.
    out_stem : str or path-like
        Output path without suffix.
    warmup_epochs : int, dict of str to int, or None
        Number of warm-up epochs (history rows), for all models or per model; the line
        is drawn between the last warm-up epoch and the next. Default None: the rows
        before the first rise of the learning rate, when the history has a
        learning-rate column; otherwise no warm-up line.
    dpi : int
        Resolution of the PNG; default 150.

    Returns
    -------
    list of pathlib.Path
        ``[out_stem.png, out_stem.pdf]``.

    Raises
    ------
    ValueError
        If ``histories`` is empty, not a dict, or a history lacks ``loss``.

    Notes
    -----
    The y axis is logarithmic when every loss is positive. A model with two outputs
    and their losses in the history (``val_<output>_loss``, as
    :func:`lumbar_core.training.train_model` writes them) also gets each output's
    validation loss as a thin dashed line. A dashed line marks the end
    of the warm-up and a dotted line with a dot the best epoch (lowest validation loss,
    where training stops improving; paper 3.2).
    """
    if not isinstance(histories, dict) or not histories:
        raise ValueError(f"histories must be a non-empty dict of DataFrames; got {histories!r}")
    for name, h in histories.items():
        if not isinstance(h, pd.DataFrame) or "loss" not in h.columns or h.empty:
            raise ValueError(f"history {name!r} must be a non-empty DataFrame with a 'loss' "
                             "column")
    if not (warmup_epochs is None or isinstance(warmup_epochs, dict)
            or (isinstance(warmup_epochs, (int, np.integer)) and warmup_epochs >= 0)):
        raise ValueError("warmup_epochs must be None, a non-negative integer or a dict; "
                         f"got {warmup_epochs!r}")
    _check_dpi(dpi)
    n = len(histories)
    fig = Figure(figsize=(4.2 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, h) in zip(axes, histories.items()):
        epochs = (h["epoch"].to_numpy(dtype=np.float64) if "epoch" in h.columns
                  else np.arange(len(h), dtype=np.float64))
        series = [("training loss", h["loss"].to_numpy(dtype=np.float64), "tab:blue")]
        if "val_loss" in h.columns:
            series.append(("validation loss", h["val_loss"].to_numpy(dtype=np.float64),
                           "tab:orange"))
        for label, y, colour in series:
            ax.plot(epochs, y, color=colour, lw=1.2, label=label)
        # A model of two outputs (the Pose-net: Eq. 2 on yL5, Eq. 3 on yL1-5) also gets
        # each output's validation loss, thin and dashed: a stage that does not learn
        # (yL5 on its plateau) shows there and not in the total.
        parts = [c for c in h.columns if c.startswith("val_") and c.endswith("_loss")
                 and c != "val_loss"]
        names = {"y_l5": "yL5 (Eq. 2)", "y_l15": "yL1-5 (Eq. 3)"}
        if len(parts) == 2:
            for column, colour in zip(sorted(parts), ("tab:green", "tab:red")):
                y = h[column].to_numpy(dtype=np.float64)
                output = column[len("val_"):-len("_loss")]
                ax.plot(epochs, y, color=colour, lw=0.8, ls="--",
                        label=f"validation, {names.get(output, output)}")
                series.append((column, y, colour))
        values = np.concatenate([y for _, y, _ in series])
        values = values[np.isfinite(values)]
        if values.size and np.all(values > 0):
            ax.set_yscale("log")
        warm = (warmup_epochs.get(name) if isinstance(warmup_epochs, dict)
                else warmup_epochs)
        if warm is None:
            warm = _warmup_rows(h)
        if warm is not None and 0 < int(warm) <= len(epochs):
            last = epochs[int(warm) - 1]
            after = epochs[int(warm)] if int(warm) < len(epochs) else last + 1.0
            ax.axvline((last + after) / 2, color="grey", ls="--", lw=1, label="end of warm-up")
        if len(series) > 1 and np.isfinite(series[1][1]).any():
            best = int(np.nanargmin(series[1][1]))
            ax.axvline(epochs[best], color="tab:green", ls=":", lw=1.2,
                       label=f"best epoch ({epochs[best]:g})")
            ax.plot(epochs[best], series[1][1][best], "o", color="tab:green", ms=4)
        ax.set_title(str(name))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _save(fig, out_stem, dpi=dpi)


# ----------------------------------------------------------------------------- Fig. 10
def plot_centre_errors(loc_rows, out_stem, *, only_success: bool = True,
                       dpi: int = 150) -> list[Path]:
    """Fig. 10: (a) cumulative distribution and (b) box plot of the centre errors.

    Parameters
    ----------
    loc_rows : pandas.DataFrame
        Localisation rows (see :func:`lumbar_core.tables.table1`): ``level``
        (``"L1"``..``"L5"``), ``error_px`` and, used when ``only_success``, ``success``.
    out_stem : str or path-like
        Output path without suffix.
    only_success : bool
        Plot only the images whose detection succeeded, as the paper does; default True.
    dpi : int
        Resolution of the PNG; default 150.

    Returns
    -------
    list of pathlib.Path
        ``[out_stem.png, out_stem.pdf]``.

    Raises
    ------
    ValueError
        If a needed column is missing.

    Notes
    -----
    Curves and boxes are drawn for L1..L5 and for all levels pooled; NaN errors are
    left out. With no error to plot the panels say so instead.
    """
    need = ["level", "error_px"] + (["success"] if only_success else [])
    if not isinstance(loc_rows, pd.DataFrame) or any(c not in loc_rows for c in need):
        raise ValueError(f"loc_rows must be a DataFrame with columns {need}")
    _check_dpi(dpi)
    rows = loc_rows
    if only_success:
        ok = rows["success"].astype(str).str.strip().str.lower().isin(("true", "1", "1.0"))
        rows = rows.loc[ok]
    data = {lev: rows.loc[rows["level"] == lev, "error_px"].to_numpy(dtype=np.float64)
            for lev in LEVELS}
    data = {lev: v[np.isfinite(v)] for lev, v in data.items()}
    data["all"] = np.concatenate(list(data.values()))

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_cdf, ax_box = fig.subplots(1, 2)
    colours = dict(zip(LEVELS, _LEVEL_COLOURS), all="black")
    for lev, v in data.items():
        if v.size:
            x = np.sort(v)
            ax_cdf.step(np.concatenate([[0.0], x]), np.arange(x.size + 1) / x.size,
                        where="post", color=colours[lev], lw=2 if lev == "all" else 1.2,
                        label=f"{lev} (n={x.size})")
    ax_cdf.set_xlabel("centre error (pixels)")
    ax_cdf.set_ylabel("fraction of centres with error <= x")
    ax_cdf.set_ylim(0, 1.02)
    ax_cdf.set_title("(a) cumulative distribution")
    present = [lev for lev, v in data.items() if v.size]
    if present:
        ax_cdf.legend(fontsize=8, loc="lower right")
        ax_box.boxplot([data[lev] for lev in present], tick_labels=present)
    else:
        for ax in (ax_cdf, ax_box):
            ax.text(0.5, 0.5, "no centre error to show", ha="center", va="center",
                    transform=ax.transAxes)
    ax_box.set_xlabel("level")
    ax_box.set_ylabel("centre error (pixels)")
    ax_box.set_title("(b) box plot per level")
    return _save(fig, out_stem, dpi=dpi)


# ----------------------------------------------------------------------------- Fig. 11
def plot_overlay(image, out_stem, *, gt_outlines=None, gt_centres=None, pred_centres=None,
                 pred_masks=None, title: str = "", max_side: int = 1024,
                 dpi: int = 150, pred_labels=None, candidates=None,
                 formats=("png", "pdf")) -> list[Path]:
    """Fig. 11-style overlay: an image with ground truth and each method's segmentation.

    Parameters
    ----------
    image : (M, N) float ndarray
        Grey image with values in [0, 1], the grid of every other argument.
    out_stem : str or path-like
        Output path without suffix.
    gt_outlines : (n, 8, 2) array_like or None
        Ground-truth 8-point outlines ``(x, y)``, drawn closed in :data:`GT_COLOUR`.
    gt_centres, pred_centres : (n, 2) array_like or None
        Ground-truth (``+``) and predicted (``x``) centres ``(x, y)``; NaN rows skipped.
    pred_masks : dict of str to (M, N) int ndarray, or None
        Method name to its label image (0 background, 1..5 for L1..L5); the outline of
        each label is drawn in the method's colour (:data:`METHOD_COLOURS`).
    title : str
        Figure title; default none.
    max_side : int
        Images larger than this are block-averaged (and masks sampled) by an integer
        factor for drawing; default 1024. Coordinates stay in full-resolution pixels.
    dpi : int
        Resolution of the PNG; default 150.
    pred_labels : sequence of str or None
        Names written beside the predicted centres, one per row of ``pred_centres``
        (e.g. ``("L1", ..., "L5")``); default none.
    candidates : (k, 2) array_like or None
        Points drawn as hollow circles, e.g. the peaks of a detection that failed;
        default none.
    formats : sequence of str
        File formats written; default ``("png", "pdf")``.

    Returns
    -------
    list of pathlib.Path
        ``out_stem.<format>`` for each of ``formats``.

    Raises
    ------
    ValueError
        If ``image`` is not a finite 2-D array in [0, 1], a mask has another shape, the
        points have the wrong shape, or ``pred_labels`` does not match ``pred_centres``.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image must be a 2-D array; got shape {img.shape}")
    img = img.astype(np.float64, copy=False)
    if not np.all(np.isfinite(img)) or img.min() < 0.0 or img.max() > 1.0:
        raise ValueError("image must be finite with values in [0, 1]; got range "
                         f"[{np.nanmin(img)}, {np.nanmax(img)}]")
    outlines = None if gt_outlines is None else _as_outlines(gt_outlines, "gt_outlines")
    centres = {name: _as_centres(c, name) for name, c in
               (("gt_centres", gt_centres), ("pred_centres", pred_centres),
                ("candidates", candidates)) if c is not None}
    if pred_labels is not None:
        pred_labels = [str(t) for t in pred_labels]
        n_centres = len(centres.get("pred_centres", ()))
        if len(pred_labels) != n_centres:
            raise ValueError(f"pred_labels must name each of the {n_centres} pred_centres; "
                             f"got {len(pred_labels)} labels")
    masks = dict(pred_masks or {})
    for name, m in masks.items():
        if np.shape(m) != img.shape:
            raise ValueError(f"pred_masks[{name!r}] must have the image shape {img.shape}; "
                             f"got {np.shape(m)}")
    if not isinstance(max_side, (int, np.integer)) or max_side < 16:
        raise ValueError(f"max_side must be an integer >= 16; got {max_side!r}")
    _check_dpi(dpi)

    small, f, extent = _display_image(img, max_side)
    height = 8.0
    fig = Figure(figsize=(max(3.0, height * img.shape[1] / img.shape[0]) + 2.2, height),
                 layout="constrained")
    ax = fig.subplots()
    ax.imshow(small, cmap="gray", vmin=0.0, vmax=1.0, extent=extent,
              interpolation="nearest")
    handles = []
    # The ground truth goes underneath, wider, so that a method matching it stays visible.
    if outlines is not None:
        for poly in outlines:
            _draw_polygon(ax, poly, color=GT_COLOUR, lw=2.0)
        handles.append(Line2D([], [], color=GT_COLOUR, lw=2.0, label="ground truth"))
    extra = iter(_EXTRA_COLOURS * (1 + len(masks) // len(_EXTRA_COLOURS)))
    for name, m in masks.items():
        colour = METHOD_COLOURS.get(name) or next(extra)
        for x, y in _label_contours(m, f):
            ax.plot(x, y, color=colour, lw=1.0)
        handles.append(Line2D([], [], color=colour, lw=1.0, label=str(name)))
    markers = {"gt_centres": ("+", GT_COLOUR, "ground-truth centres"),
               "pred_centres": ("x", "cyan", "predicted centres"),
               "candidates": ("o", "yellow", "candidate peaks")}
    for name, pts in centres.items():
        marker, colour, label = markers[name]
        face = "none" if marker == "o" else colour
        ax.plot(pts[:, 0], pts[:, 1], ls="none", marker=marker, color=colour, ms=7, mew=1.5,
                mfc=face)
        handles.append(Line2D([], [], ls="none", marker=marker, color=colour, mfc=face,
                              label=label))
    for text, (x, y) in zip(pred_labels or (), centres.get("pred_centres", ())):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(text, (x, y), xytext=(6, 0), textcoords="offset points",
                        color="cyan", fontsize=8, va="center")
    _image_axes(ax, img.shape, title)
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return _save(fig, out_stem, dpi=dpi, formats=formats)


# ----------------------------------------------------------------------------- cohort
def _draw_annotation(ax, annotation: dict, index: int) -> None:
    if not isinstance(annotation, dict) or not isinstance(annotation.get("vertebrae"), dict):
        raise ValueError(f"annotations[{index}] must be an annotation dict with 'vertebrae'")
    for name, v in annotation["vertebrae"].items():
        colour = GT_COLOUR if name in LEVELS else "orange"
        if "outline" in v:
            _draw_polygon(ax, _as_outlines([v["outline"]], f"{name} outline")[0],
                          color=colour, lw=0.8)
        if "centre" in v:
            x, y = np.asarray(v["centre"], dtype=np.float64)
            ax.plot(x, y, "+", color=colour, ms=4)
            ax.annotate(name, (x, y), xytext=(4, 0), textcoords="offset points",
                        color=colour, fontsize=6, va="center")
        if "upper_endplate" in v:
            p = np.asarray(v["upper_endplate"], dtype=np.float64)
            ax.plot(p[:, 0], p[:, 1], color=colour, lw=0.8)


def contact_sheet(images, annotations, out_path, *, titles=None, ncols: int = 4,
                  max_side: int = 512, dpi: int = 120) -> list[Path]:
    """A grid of images with their ground-truth outlines, e.g. the demo cohort.

    Parameters
    ----------
    images : list of (M, N) ndarray
        Grey images, any real dtype; each is shown from its 0.5th percentile (black) to
        its 99.5th (white).
    annotations : list of dict
        One annotation per image, in the project's annotation format (``"vertebrae"``:
        ``centre`` and 8-point ``outline`` per level, in that image's pixels); L1..L5 in
        :data:`GT_COLOUR`, T12 and S1 in orange.
    out_path : str or path-like
        File to write; its suffix (``.png``, ``.pdf``, ...) picks the format.
    titles : list of str or None
        One title per image; default none.
    ncols : int
        Images per row; default 4.
    max_side : int
        Images are block-averaged to at most this many pixels a side; default 512.
    dpi : int
        Resolution of a raster output; default 120.

    Returns
    -------
    list of pathlib.Path
        ``[out_path]``.

    Raises
    ------
    ValueError
        If the lists are empty or of different lengths, an image is not 2-D, an
        annotation is not a dict with ``"vertebrae"``, or ``ncols`` < 1.
    """
    images, annotations = list(images), list(annotations)
    if not images or len(images) != len(annotations):
        raise ValueError("images and annotations must be non-empty lists of one length; "
                         f"got {len(images)} and {len(annotations)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must have one entry per image; got {len(titles)} for "
                         f"{len(images)} images")
    if not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}")
    if not isinstance(max_side, (int, np.integer)) or max_side < 16:
        raise ValueError(f"max_side must be an integer >= 16; got {max_side!r}")
    _check_dpi(dpi)
    for i, im in enumerate(images):
        if np.ndim(im) != 2 or np.size(im) == 0:
            raise ValueError(f"images[{i}] must be a 2-D array; got shape {np.shape(im)}")
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"out_path must have a suffix naming the format; got {out_path}")

    ncols = min(int(ncols), len(images))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(2.6 * ncols, 4.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        if i >= len(images):
            ax.set_axis_off()
            continue
        small, _, extent = _display_image(images[i], max_side)
        low, high = np.percentile(small, [0.5, 99.5])
        ax.imshow(small, cmap="gray", vmin=low, vmax=max(high, low + 1e-12), extent=extent,
                  interpolation="nearest")
        _draw_annotation(ax, annotations[i], i)
        _image_axes(ax, np.shape(images[i]), "" if titles is None else str(titles[i]))
    return [_savefig_atomic(fig, out_path, dpi=dpi)]


# ----------------------------------------------------------------------------- fractures
_HEIGHT_PAIRS = (("ha", "upper_anterior", "lower_anterior"),
                 ("hm", "upper_mid", "lower_mid"),
                 ("hp", "upper_posterior", "lower_posterior"))


def plot_fracture_examples(examples, out_stem, *, ncols: int = 3, dpi: int = 150) -> list[Path]:
    """Fractured vertebrae with their measured heights drawn on them.

    Parameters
    ----------
    examples : list of dict
        One per vertebra: ``image`` (M, N) float in [0, 1] (the input grid), ``mask``
        (M, N) bool (the measured body), ``row`` (a row of
        :func:`lumbar_core.morphometry.measure_spine`, with the six points ``<name>_x``,
        ``<name>_y``, heights ``ha_px``.. and ``ha_mm``.., ``grade`` and ``type``) and a
        ``title``.
    out_stem : str or path-like
        Output path without suffix; PNG and PDF are written.

    Returns
    -------
    list of Path
    """
    _check_dpi(dpi)
    n = max(len(examples), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not examples:
        axes[0].text(0.5, 0.5, "no fractured vertebra found", ha="center", va="center")
    for ax, ex in zip(axes, examples):
        row, mask = ex["row"], np.asarray(ex["mask"], dtype=bool)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        pad = int(0.6 * max(np.ptp(rows), np.ptp(cols)))
        r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, mask.shape[0])
        c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, mask.shape[1])
        ax.imshow(np.asarray(ex["image"])[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=1,
                  extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5))
        for c in find_contours(np.pad(mask[r0:r1, c0:c1], 1).astype(np.float32), 0.5):
            ax.plot(c[:, 1] - 1 + c0, c[:, 0] - 1 + r0, color="red", lw=0.8)
        for name, top, bottom in _HEIGHT_PAIRS:
            x = [row[f"{top}_x"], row[f"{bottom}_x"]]
            y = [row[f"{top}_y"], row[f"{bottom}_y"]]
            if not np.all(np.isfinite(x + y)):
                continue
            ax.plot(x, y, color="cyan", lw=1.2, marker="o", ms=2.5)
            mm = row.get(f"{name}_mm")
            value = f"{mm:.1f} mm" if mm is not None and np.isfinite(mm) else f"{row[f'{name}_px']:.0f} px"
            ax.text(np.mean(x), np.mean(y), f"{name} {value}", color="yellow", fontsize=6,
                    ha="center", va="center", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        ax.set_xlim(c0 - 0.5, c1 - 0.5)
        ax.set_ylim(r1 - 0.5, r0 - 0.5)
        ax.set_title(ex.get("title", ""), fontsize=8)
    fig.tight_layout()
    return _save(fig, out_stem, dpi=dpi)


def choose_overlay_images(dice: dict, n: int) -> list:
    """The images worth drawing: best, worst and median by Dice, then the rest.

    Parameters
    ----------
    dice : dict of str to float
        Image id to its Dice, in the order to break ties by (ascending Dice first).
    n : int
        Number of images to draw.

    Returns
    -------
    list of str
        At most ``n`` distinct ids: the best, the worst and the median image first, then
        the others from best to worst.

    Examples
    --------
    >>> choose_overlay_images({"a": 0.1, "b": 0.5, "c": 0.9}, 3)
    ['c', 'a', 'b']
    """
    ids = [i for i, _ in sorted(dice.items(), key=lambda kv: kv[1])]
    ids = [ids[-1], ids[0], ids[len(ids) // 2]] + ids[::-1] if ids else []
    return list(dict.fromkeys(ids))[:n]


def choose_fracture_rows(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` most reduced vertebrae that the pipeline graded >= 1.

    Parameters
    ----------
    rows : DataFrame
        Morphometry rows of the pipeline's masks: ``grade``, ``reduction`` and, where the
        images are annotated, ``true_grade``.
    n : int
        Number of vertebrae to show.

    Returns
    -------
    DataFrame
        At most ``n`` rows; vertebrae annotated as fractured first (higher annotated grade
        first), then by height reduction, largest first.
    """
    ours = rows[pd.to_numeric(rows.get("grade"), errors="coerce") >= 1]
    if ours.empty:  # no vertebra graded (e.g. every detection failed): no height columns
        pass
    elif "true_grade" in ours:
        ours = ours.assign(_true=pd.to_numeric(ours["true_grade"], errors="coerce").fillna(0))
        ours = ours.sort_values(["_true", "reduction"], ascending=False)
    else:
        ours = ours.sort_values("reduction", ascending=False)
    return ours.head(n)
