import numpy as np
import pytest

from lumbar_core.crop import (
    crop_boxes,
    eq6_sides,
    extract_patch,
    io_to_patch,
    keep_centre_component,
    paste_patches,
    patch_to_io,
)
from lumbar_core.preprocess import Geometry

CENTRES = np.array([[700, 1000], [710, 1200], [720, 1420], [715, 1650], [700, 1900]], float)


def test_eq6_sides_by_hand():
    # spacings 200, 220, 230, 250
    assert eq6_sides(CENTRES).tolist() == [600.0, 630.0, 675.0, 720.0, 750.0]
    # j = 1 uses only its lower gap, j = 5 only its upper gap
    assert eq6_sides([[0, 0], [0, 10], [0, 110], [0, 210], [0, 230]])[[0, 4]].tolist() == [30.0, 60.0]


def test_eq6_rejects_bad_centres():
    with pytest.raises(ValueError, match="five finite"):
        eq6_sides(np.zeros((4, 2)))
    assert crop_boxes(np.array([[0, 5]] * 5, float))[:, 2].min() == 32.0


def test_patch_io_input_round_trip_of_a_pixel():
    box = (700.0, 1000.0, 600.0)
    g = Geometry((2500, 1800))
    uv = np.array([[17.0, 203.0]])
    io_pt = patch_to_io(uv, box)
    assert np.allclose(io_to_patch(io_pt, box), uv)
    inp = g.to_input("io", io_pt)
    assert np.allclose(io_to_patch(g.input_to("io", inp), box), uv)
    # the patch centre is the box centre
    assert np.allclose(patch_to_io([[111.5, 111.5]], box), [[700.0, 1000.0]])


def test_extract_patch_samples_the_right_place_and_pads_outside():
    image = np.zeros((3072, 1536), np.float32)
    image[990:1011, 690:711] = 1.0  # a square at (700, 1000)
    patch = extract_patch(image, (700.0, 1000.0, 224.0))
    rows, cols = np.nonzero(patch > 0.5)
    assert abs(rows.mean() - 111.5) < 0.6 and abs(cols.mean() - 111.5) < 0.6
    # a box leaving the image at the top left: padded, not shifted
    image[:] = 1.0
    patch = extract_patch(image, (50.0, 40.0, 224.0))
    assert patch[:40, :].max() < 0.5 and patch[120:, 120:].min() > 0.99
    labels = np.zeros((3072, 1536), np.uint8)
    labels[900:1100, 600:800] = 3
    lab = extract_patch(labels, (700.0, 1000.0, 448.0), order=0)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 3}


def test_keep_centre_component_drops_the_neighbour():
    mask = np.zeros((224, 224), bool)
    mask[80:150, 60:170] = True  # centre body
    mask[0:40, 60:170] = True  # the neighbour above
    kept = keep_centre_component(mask)
    assert kept[112, 112] and not kept[20, 100]
    assert kept.sum() == 70 * 110
    # centre pixel in a hole: the nearest component is kept
    ring = np.zeros((224, 224), bool)
    ring[100:125, 100:125] = True
    ring[108:117, 108:117] = False
    ring[0:10, 0:10] = True
    assert keep_centre_component(ring).sum() == 25 * 25 - 81
    assert not keep_centre_component(np.zeros((8, 8), bool)).any()


def test_paste_back_overlap_goes_to_higher_probability_in_any_order():
    p = np.zeros((2, 224, 224), np.float32)
    p[0, :, :] = 0.7
    p[1, :, :] = 0.9
    boxes = np.array([[100.0, 100.0, 224.0], [100.0, 200.0, 224.0]])  # overlap rows 88..211
    lab_a, _ = paste_patches(p, boxes, (400, 300))
    lab_b, _ = paste_patches(p[::-1], boxes[::-1], (400, 300))
    assert lab_a[150, 100] == 2 and lab_b[150, 100] == 1  # same vertebra wins either way
    assert lab_a[20, 100] == 1 and lab_a[300, 100] == 2
    assert lab_a[150, 250] == 0  # outside both boxes


def test_paste_back_into_input_grid_is_consistent_with_io():
    g = Geometry((2000, 3000))
    p = np.zeros((1, 224, 224), np.float32)
    p[0, 56:168, 56:168] = 1.0
    box = np.array([[800.0, 1500.0, 448.0]])
    lab_io, _ = paste_patches(p, box, g.io_shape)
    # A 3:2 landscape film is letterboxed in Io: the boxes are shifted by its padding.
    lab_in, _ = paste_patches(p, g.paste_boxes(box, "input"), g.input_shape,
                              scale=g.scale("io", "input"))
    rows, cols = np.nonzero(lab_io)
    rin, cin = np.nonzero(lab_in)
    centre_in = g.to_input("io", [[cols.mean(), rows.mean()]])[0]
    assert abs(cin.mean() - centre_in[0]) < 1.0 and abs(rin.mean() - centre_in[1]) < 1.0
    ratio = lab_in.sum() / lab_io.sum()
    assert ratio == pytest.approx(np.prod(g.scale("io", "input")), rel=0.05)
