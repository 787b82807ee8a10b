"""Tests of lumbar_core.plots: files written, inputs checked, coordinates kept."""

import imageio.v3 as imageio
import numpy as np
import pandas as pd
import pytest

from lumbar_core import plots
from lumbar_core.metrics import LEVELS


def _check_files(paths, suffixes=(".png", ".pdf")):
    assert [p.suffix for p in paths] == list(suffixes)
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")
        assert p.stat().st_size > 500


def _outlines(n=5, x0=10.0, y0=8.0, step=12.0):
    box = np.array([[0, 0], [5, 0], [10, 0], [10, 4], [10, 8], [5, 8], [0, 8], [0, 4]], float)
    return np.stack([box + [x0, y0 + k * step] for k in range(n)])


def test_loss_curves(tmp_path):
    epochs = np.arange(8)
    lr = np.where(epochs < 3, 1e-5, 1e-3)
    hist = pd.DataFrame({"epoch": epochs, "loss": 1.0 / (epochs + 1),
                         "val_loss": [1.0, 0.6, 0.5, 0.4, 0.3, 0.35, 0.4, 0.5],
                         "learning_rate": lr})
    paths = plots.plot_loss_curves({"Pose-net": hist, "M-net": hist[["loss"]]},
                                   tmp_path / "fig9", warmup_epochs={"M-net": 2})
    _check_files(paths)


def test_loss_curves_draw_the_two_pose_net_maps(tmp_path):
    epochs = np.arange(1, 9)
    hist = pd.DataFrame({"epoch": epochs, "loss": 30.0 / epochs, "val_loss": 40.0 / epochs})
    parts = hist.assign(val_y_l5_loss=13.3, val_y_l15_loss=40.0 / epochs - 13.3)
    plain = plots.plot_loss_curves({"Pose-net": hist}, tmp_path / "plain")[0]
    split = plots.plot_loss_curves({"Pose-net": parts}, tmp_path / "split")[0]
    # The yL5 plateau at 13.3 must be visible: the figure changes when the parts are given.
    assert not np.array_equal(imageio.imread(plain), imageio.imread(split))


def test_warmup_found_from_learning_rate():
    hist = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "loss": 1.0,
                         "lr": [1e-5, 1e-5, 1e-5, 1e-3, 1e-3]})
    assert plots._warmup_rows(hist) == 3
    assert plots._warmup_rows(hist.assign(lr=1e-3)) is None
    assert plots._warmup_rows(hist.drop(columns="lr")) is None


def test_loss_curves_need_loss(tmp_path):
    with pytest.raises(ValueError, match="loss"):
        plots.plot_loss_curves({"M-net": pd.DataFrame({"val_loss": [1.0]})}, tmp_path / "x")
    with pytest.raises(ValueError):
        plots.plot_loss_curves({}, tmp_path / "x")
    with pytest.raises(ValueError, match="warmup_epochs"):
        plots.plot_loss_curves({"M-net": pd.DataFrame({"loss": [1.0]})}, tmp_path / "x",
                               warmup_epochs=-1)


def test_centre_errors(tmp_path):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"image_id": np.repeat(["a", "b", "c"], 5),
                         "level": list(LEVELS) * 3,
                         "error_px": rng.gamma(3.0, 8.0, 15),
                         "success": np.repeat([True, True, False], 5)})
    _check_files(plots.plot_centre_errors(rows, tmp_path / "fig10"))
    none_ok = rows.assign(success=False)
    _check_files(plots.plot_centre_errors(none_ok, tmp_path / "empty"))
    with pytest.raises(ValueError, match="error_px"):
        plots.plot_centre_errors(rows.drop(columns="error_px"), tmp_path / "x")


def test_overlay(tmp_path):
    image = np.linspace(0, 1, 72 * 30).reshape(72, 30)
    gt = np.zeros((72, 30), dtype=np.uint8)
    outlines = _outlines()
    for k, poly in enumerate(outlines):
        gt[int(poly[0, 1]):int(poly[4, 1]) + 1, int(poly[0, 0]):int(poly[2, 0]) + 1] = k + 1
    pred = np.roll(gt, 1, axis=1)
    centres = outlines[:, ::2].mean(axis=1)
    paths = plots.plot_overlay(image, tmp_path / "overlay", gt_outlines=outlines,
                               gt_centres=centres, pred_centres=centres + 1,
                               pred_masks={"PN+MNet+LS": pred, "my method": gt},
                               title="case 1", max_side=32)
    _check_files(paths)


def test_overlay_labels_candidates_and_formats(tmp_path):
    image = np.linspace(0, 1, 72 * 30).reshape(72, 30)
    centres = _outlines()[:, ::2].mean(axis=1)
    paths = plots.plot_overlay(image, tmp_path / "found", pred_centres=centres,
                               pred_labels=["L1", "L2", "L3", "L4", "L5"][:len(centres)],
                               candidates=centres[:2] + 3, title="failed: 2 kept",
                               formats=("png",))
    assert paths == [tmp_path / "found.png"] and not (tmp_path / "found.pdf").exists()
    _check_files(paths, suffixes=(".png",))
    with pytest.raises(ValueError, match="pred_labels"):
        plots.plot_overlay(image, tmp_path / "x", pred_centres=centres, pred_labels=["L1"])


@pytest.mark.parametrize("case", ["range", "mask_shape", "outline_shape", "ndim"])
def test_overlay_bad_input(tmp_path, case):
    image, kwargs = np.zeros((20, 10)), {}
    if case == "range":
        image = image + 2.0
    elif case == "mask_shape":
        kwargs["pred_masks"] = {"PN+MNet": np.zeros((10, 10), dtype=int)}
    elif case == "outline_shape":
        kwargs["gt_outlines"] = np.zeros((5, 4, 2))
    else:
        image = np.zeros((2, 20, 10))
    with pytest.raises(ValueError):
        plots.plot_overlay(image, tmp_path / "x", **kwargs)


def test_downsampled_image_keeps_coordinates():
    image = np.zeros((8, 6))
    image[4:6, 2:4] = 1.0  # one 2 x 2 block, centred at (x, y) = (2.5, 4.5)
    small, f, extent = plots._display_image(image, 4)
    assert f == 2 and small.shape == (4, 3)
    left, right, bottom, top = extent
    row, col = np.argwhere(small == 1.0)[0]
    x = left + (col + 0.5) * (right - left) / small.shape[1]
    y = top + (row + 0.5) * (bottom - top) / small.shape[0]
    assert (x, y) == (2.5, 4.5)


def test_contours_in_full_resolution_pixels():
    labels = np.zeros((40, 20), dtype=np.uint8)
    labels[8:25, 4:13] = 3  # rows 8..24, cols 4..12
    (x, y), = list(plots._label_contours(labels, 4))
    # Traced on every 4th pixel, the outline lies within one sampling step of the region.
    assert 4 - 4 <= x.min() and x.max() <= 12 + 4
    assert 8 - 4 <= y.min() and y.max() <= 24 + 4
    assert x.min() >= 0 and y.min() >= 0
    (xf, yf), = list(plots._label_contours(labels, 1))
    assert (xf.min(), xf.max(), yf.min(), yf.max()) == (3.5, 12.5, 7.5, 24.5)


def _annotation(outlines):
    verts = {lev: {"centre": poly[::2].mean(axis=0).tolist(), "outline": poly.tolist()}
             for lev, poly in zip(LEVELS, outlines)}
    verts["S1"] = {"upper_endplate": [[10, 70], [20, 70]]}
    return {"format": "lumbar-xray-seg/annotation", "version": 1, "vertebrae": verts}


def test_contact_sheet(tmp_path):
    images = [np.random.default_rng(i).integers(0, 4096, (80, 40), dtype=np.uint16)
              for i in range(3)]
    annotations = [_annotation(_outlines())] * 3
    paths = plots.contact_sheet(images, annotations, tmp_path / "sheet.png",
                                titles=["a", "b", "c"], ncols=2)
    _check_files(paths, (".png",))
    with pytest.raises(ValueError):
        plots.contact_sheet(images, annotations[:2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="vertebrae"):
        plots.contact_sheet(images[:1], [{}], tmp_path / "bad.png")


def test_fracture_examples_draw_measured_heights(tmp_path):
    from skimage.draw import polygon

    from lumbar_core.morphometry import measure_spine
    from lumbar_core.plots import plot_fracture_examples

    labels = np.zeros((400, 200), np.uint8)
    for k in range(5):
        top = 20 + 75 * k
        front = 0.7 if k == 2 else 1.0  # L3 a wedge: anterior height 30 % lower
        rr, cc = polygon([top + 60 * (1 - front), top, top + 60, top + 60],
                         [60, 140, 140, 60], labels.shape)
        labels[rr, cc] = k + 1
    rows = measure_spine(labels, spacing_mm=(0.5, 0.5), anterior="left")
    row = rows[rows["level"] == "L3"].iloc[0]
    assert row["grade"] == 2 and row["type"] == "wedge"
    image = (labels > 0).astype(float) * 0.6 + 0.2
    paths = plot_fracture_examples([{"image": image, "mask": labels == 3, "row": row,
                                     "title": "L3"}], tmp_path / "frac")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    empty = plot_fracture_examples([], tmp_path / "none")
    assert empty[0].stat().st_size > 1000
