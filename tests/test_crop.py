import numpy as np
import pytest
from scipy import ndimage

from lumbar_core.crop import (
    jittered_patches,
    outlines_to_labels,
    stable_seed,
    whole_probabilities_to_masks,
    crop_boxes,
    eq6_sides,
    extract_patch,
    io_to_patch,
    keep_centre_component,
    mask_signed_distance,
    paste_masks,
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


def _disc(radius, size=128, centre=None):
    """A pixel disc (centres strictly within ``radius``) in a ``size`` square patch."""
    c = (size - 1) / 2.0 if centre is None else centre
    vv, uu = np.mgrid[:size, :size]
    return np.hypot(uu - c, vv - c) < radius


def test_signed_distance_by_hand():
    sd = mask_signed_distance([[0, 0, 1, 1, 1, 1, 0]])
    assert sd.tolist() == [[-1.5, -0.5, 0.5, 1.5, 1.5, 0.5, -0.5]]
    assert np.all(mask_signed_distance(np.zeros((3, 3))) == -np.inf)
    assert np.all(mask_signed_distance(np.ones((3, 3))) == np.inf)


def test_paste_square_lands_on_its_io_pixels():
    # Box (99.5, 99.5, 128) at scale 1: patch pixel u covers Io column 36 + u exactly.
    mask = np.zeros((1, 128, 128), bool)
    mask[0, 10:30, 40:100] = True
    labels = paste_masks(mask, [[99.5, 99.5, 128.0]], (200, 200))
    rows, cols = np.nonzero(labels)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (46, 65, 76, 135)
    assert labels.sum() == 20 * 60


@pytest.mark.parametrize("side", [128.0, 300.0, 450.0])
@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.61, 0.61), (1.37, 1.37)])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_growth_and_shrinkage_survive_the_paste_in_proportion(side, scale, k):
    """A disc grown or shrunk by k patch px pastes k * side / P * scale larger or smaller."""
    box = np.array([[500.3, 611.7, side]])
    shape = (int(1300 * scale[1]), int(1100 * scale[0]))
    factor = side / 128 * scale[0]

    def radius(mask):  # equivalent radius of the pasted mask, output px
        return np.sqrt(paste_masks(mask[None], box, shape, scale=scale).astype(bool).sum() / np.pi)

    base = radius(_disc(40))
    assert abs(radius(_disc(40 + k)) - base - k * factor) <= 1.0
    assert abs(base - radius(_disc(40 - k)) - k * factor) <= 1.0
    # and the disc itself keeps its size: radius 40 patch px, to within one output pixel
    assert abs(base - 40 * factor) <= 1.0


def test_paste_overlap_goes_to_the_deeper_patch_in_any_order():
    # Discs of radius 50 and 53 patch px, 1.75 Io px each: 87.5 and 92.75 Io px.
    masks = np.stack([_disc(50), _disc(53)])
    boxes = np.array([[100.0, 100.0, 224.0], [100.0, 200.0, 224.0]])  # overlap rows 88..211
    lab_a = paste_masks(masks, boxes, (400, 300))
    lab_b = paste_masks(masks[::-1], boxes[::-1], (400, 300))
    # relabel b (its patch 0 is a's patch 1): the same pixels go to the same box
    assert np.array_equal(lab_a, np.choose(lab_b, [0, 2, 1]))
    # on the column x = 100 the depths 87.5 - (y - 100) and 92.75 - (200 - y) meet at
    # y = 147.4, inside both discs (they overlap on rows 107..187)
    assert lab_a[146, 100] == 1 and lab_a[148, 100] == 2
    assert lab_a[20, 100] == 1 and lab_a[290, 100] == 2
    assert lab_a[150, 250] == 0  # outside both boxes


def test_paste_masks_at_the_image_border_are_cut_not_shifted():
    # A box reaching beyond the top-left corner; its full mask covers only the box there.
    mask = np.ones((1, 64, 64), bool)
    labels = paste_masks(mask, [[10.3, 20.3, 100.0]], (300, 200))
    rows, cols = np.nonzero(labels)
    assert rows.min() == 0 and cols.min() == 0
    assert rows.max() == 70 and cols.max() == 60  # box edges at 70.3 and 60.3


def _paste_every_box_pixel(masks, boxes, shape, scale):
    """paste_masks' rule written plainly: every output pixel of each box sampled."""
    sx, sy = scale
    labels, depth = np.zeros(shape, np.uint8), np.zeros(shape)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    points = np.column_stack([((cols + 0.5) / sx - 0.5).ravel(), ((rows + 0.5) / sy - 0.5).ravel()])
    size = masks.shape[1]
    for k, (mask, box) in enumerate(zip(masks, boxes)):
        cx, cy, side = box
        in_box = ((np.abs(points[:, 0] - cx) <= side / 2) & (np.abs(points[:, 1] - cy) <= side / 2))
        if not (mask.any() and in_box.any()):
            continue
        uv = io_to_patch(points[in_box], box, patch_size=size)
        distance = np.clip(mask_signed_distance(mask), -size, size)
        sampled = np.zeros(shape[0] * shape[1])
        sampled[in_box] = ndimage.map_coordinates(distance, [uv[:, 1], uv[:, 0]], order=1,
                                                  mode="nearest") * (side / size)
        sampled = sampled.reshape(shape)
        wins = (sampled > 0) & ((sampled > depth) | ((sampled == depth) & (labels > k + 1)))
        depth[wins], labels[wins] = sampled[wins], k + 1
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_paste_masks_equals_sampling_every_pixel_of_the_box(seed):
    # paste_masks samples only the pixels near each mask; no pixel may differ from
    # sampling the whole box, wherever the masks lie in their patches (at the edges too),
    # whatever their shape, with overlapping boxes, up- and downscaled.
    rng = np.random.default_rng(seed)
    size = 32
    masks = np.zeros((5, size, size), bool)
    for k in range(5):
        r0, c0 = rng.integers(0, size, 2)
        r1, c1 = rng.integers(1, size + 1, 2)
        masks[k, min(r0, r1 - 1):r1, min(c0, c1 - 1):c1] = True
        masks[k] |= rng.random((size, size)) < 0.01
    masks[0] = True if seed == 0 else masks[0]
    boxes = np.column_stack([rng.uniform(-20, 140, 5), rng.uniform(-20, 140, 5),
                             rng.uniform(10, 90, 5)])
    scale = [(1.0, 1.0), (2.5, 0.7), (0.4, 1.8)][seed % 3]
    shape = (int(130 * scale[1]), int(110 * scale[0]))
    pasted = paste_masks(masks, boxes, shape, scale=scale)
    assert pasted.any()
    assert np.array_equal(pasted, _paste_every_box_pixel(masks, boxes, shape, scale))


def test_paste_masks_rejects_non_binary_and_bad_boxes():
    with pytest.raises(ValueError, match="binary"):
        paste_masks(np.full((1, 8, 8), 0.7), [[4.0, 4.0, 8.0]], (10, 10))
    with pytest.raises(ValueError, match="one box"):
        paste_masks(np.zeros((2, 8, 8), bool), [[4.0, 4.0, 8.0]], (10, 10))
    with pytest.raises(ValueError, match="sides > 0"):
        paste_masks(np.zeros((1, 8, 8), bool), [[4.0, 4.0, 0.0]], (10, 10))


def test_paste_back_into_input_grid_is_consistent_with_io():
    g = Geometry((2000, 3000))
    mask = np.zeros((1, 224, 224), bool)
    mask[0, 56:168, 56:168] = True
    box = np.array([[800.0, 1500.0, 448.0]])
    lab_io = paste_masks(mask, box, g.io_shape)
    # A 3:2 landscape film is letterboxed in Io: the boxes are shifted by its padding.
    lab_in = paste_masks(mask, g.paste_boxes(box, "input"), g.input_shape,
                         scale=g.scale("io", "input"))
    rows, cols = np.nonzero(lab_io)
    rin, cin = np.nonzero(lab_in)
    centre_in = g.to_input("io", [[cols.mean(), rows.mean()]])[0]
    assert abs(cin.mean() - centre_in[0]) < 1.0 and abs(rin.mean() - centre_in[1]) < 1.0
    ratio = lab_in.sum() / lab_io.sum()
    assert ratio == pytest.approx(np.prod(g.scale("io", "input")), rel=0.02)


def test_outlines_to_labels_fills_each_outline_with_its_level():
    square = np.array([[1, 1], [4, 1], [4, 4], [1, 4]], float)  # x, y: a 4 x 4 block
    labels = outlines_to_labels([square, square + [0, 5]], (12, 8))
    assert labels.dtype == np.uint8
    assert (labels == 1).sum() == 16 and (labels == 2).sum() == 16
    assert labels[1:5, 1:5].min() == 1 and labels[6:10, 1:5].min() == 2
    assert labels[0].max() == 0 and labels[:, 5:].max() == 0




def test_whole_probabilities_to_masks_upsamples_to_io_and_input():
    from lumbar_core.preprocess import Geometry

    geometry = Geometry(input_shape=(10, 6), io_shape=(8, 4), i_shape=(4, 2))
    probs = np.zeros((4, 2, 6), np.float32)
    probs[..., 0] = 0.2
    probs[:2, :, 3] = 0.8  # top half: L3
    out = whole_probabilities_to_masks(probs, geometry)
    assert out["labels_io"].shape == (8, 4) and out["labels_input"].shape == (10, 6)
    assert out["labels_io"].dtype == np.uint8
    assert set(np.unique(out["labels_io"])) == {0, 3}
    assert (out["labels_io"][:3] == 3).all() and (out["labels_io"][-3:] == 0).all()


def test_jittered_patches_follow_the_seed_and_target_the_centre_vertebra():
    labels = np.zeros((400, 200), np.uint8)
    for k in range(5):
        labels[40 + 70 * k:90 + 70 * k, 60:140] = k + 1
    image = (labels > 0).astype(np.float32)
    centres = [[100.0, 65.0 + 70 * k] for k in range(5)]

    def draw(seed):
        return jittered_patches(image, labels, centres, rng=np.random.default_rng(seed),
                                patch_size=32, jitter_px=2.0, copies=2)

    patches, masks = draw(stable_seed(0, "img"))
    assert patches.shape == masks.shape == (10, 32, 32)
    assert patches.dtype == np.float16 and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    # Each patch's target is its own vertebra: the patch centre is in it.
    assert masks[:, 16, 16].all()
    again, _ = draw(stable_seed(0, "img"))
    other, _ = draw(stable_seed(0, "img2"))
    assert np.array_equal(patches, again) and not np.array_equal(patches, other)
    assert stable_seed(3, "img") == stable_seed(3, "img") != stable_seed(4, "img")
