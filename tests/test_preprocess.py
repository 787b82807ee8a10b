import numpy as np
import pytest

from lumbar_core.preprocess import (
    IO_SHAPE,
    I_SHAPE,
    Geometry,
    fit_shape,
    normalise_intensity,
    preprocess_image,
    resize_image,
    resize_to_i,
)


@pytest.mark.parametrize("shape", [(2400, 1900), (3001, 1499), (1000, 1000), (777, 2003)])
def test_geometry_round_trip_non_2_to_1(shape):
    g = Geometry(shape)
    rng = np.random.default_rng(1)
    pts = rng.uniform([0, 0], [shape[1] - 1, shape[0] - 1], size=(50, 2))
    for space in ("io", "i"):
        back = g.to_input(space, g.input_to(space, pts))
        assert np.max(np.abs(back - pts)) < 1e-6
    # input -> Io -> I -> input
    via = g.to_input("i", g.map(g.input_to("io", pts), "io", "i"))
    assert np.max(np.abs(via - pts)) < 1e-6


def test_geometry_maps_pixel_centres_and_edges():
    g = Geometry((3072 * 2, 1536 * 3))  # 4:3, wider than Io: fitted by its width
    assert g.content("io") == (1024 * 2, 1536) and g.padding("io") == (512, 512, 0, 0)
    # The image's outer edges map to the edges of the content, one scale on both axes.
    assert np.allclose(g.input_to("io", [[-0.5, -0.5]]), [[-0.5, 511.5]])
    assert np.allclose(g.input_to("io", [[1536 * 3 - 0.5, 3072 * 2 - 0.5]]), [[1535.5, 2559.5]])
    assert np.allclose(g.scale("input", "io"), [1 / 3, 1 / 3])
    # Io -> I is a factor-6 shrink on both axes, with no padding of its own.
    assert np.allclose(g.scale("io", "i"), [1 / 6, 1 / 6]) and g.padding("i") == (0, 0, 0, 0)
    assert np.allclose(g.input_to("i", [[-0.5, -0.5]]), [[-0.5, 512 / 6 - 0.5]])
    assert Geometry.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("shape, content, padding", [
    ((2500, 2500), (1536, 1536), (768, 768, 0, 0)),   # 1:1: padded above and below
    ((1000, 200), (3072, 614), (0, 0, 461, 461)),      # 5:1: padded left and right
    ((2400, 1200), (3072, 1536), (0, 0, 0, 0)),        # 2:1 fills Io
    ((2000, 1401), (2193, 1536), (439, 440, 0, 0)),    # odd padding: the extra row below
])
def test_geometry_fits_with_one_scale_and_centres(shape, content, padding):
    g = Geometry(shape)
    assert g.content("io") == content and g.padding("io") == padding
    sx, sy = g.scale("input", "io")
    assert abs(sx * shape[1] - sy * shape[1]) < 1.0  # same scale up to a pixel's rounding
    top, bottom, left, right = padding
    # Corners of the input land on the corners of the content.
    corners = np.array([[-0.5, -0.5], [shape[1] - 0.5, shape[0] - 0.5]])
    assert np.allclose(g.input_to("io", corners),
                       [[left - 0.5, top - 0.5], [1536 - right - 0.5, 3072 - bottom - 0.5]])
    # Padding maps outside the input image; content inside; I agrees with Io.
    pad_pts, film_pts = [], [[768.0, 1535.0]]
    if top:
        pad_pts.append([768.0, top / 2])
    if left:
        pad_pts.append([left / 2, 1535.0])
    if pad_pts:
        assert not g.inside("io", pad_pts).any()
        outside = g.to_input("io", pad_pts)
        assert ((outside < -0.5) | (outside > np.array(shape[::-1]) - 0.5)).any(axis=1).all()
        assert not g.inside("i", g.map(pad_pts, "io", "i")).any()
    assert g.inside("io", film_pts).all()
    # The geometry JSON records scale and padding and reads back.
    d = g.to_dict()
    assert d["io_padding"] == list(padding) and np.allclose(d["io_scale"], [sx, sy])
    assert Geometry.from_dict(d) == g


def test_geometry_from_dict_rejects_a_stretching_record_of_a_non_2_to_1_film():
    old = {"input_shape": [2500, 2500], "io_shape": [3072, 1536], "i_shape": [512, 256]}
    with pytest.raises(ValueError, match="io_scale.*preprocess step again"):
        Geometry.from_dict(old)
    # A 2:1 film was mapped the same way by a plain resize: its old record still reads.
    assert Geometry.from_dict({**old, "input_shape": [2400, 1200]}) == Geometry((2400, 1200))
    with pytest.raises(ValueError, match="io_padding"):
        Geometry.from_dict({**Geometry((2500, 2500)).to_dict(), "io_padding": [0, 0, 0, 0]})


def test_geometry_matches_resize_of_a_bright_pixel():
    image = np.zeros((600, 500), np.float32)
    image[200:203, 300:303] = 1.0  # centre (301, 201)
    g = Geometry(image.shape, io_shape=(1200, 750))
    assert g.content("io") == (900, 750)
    big = np.zeros((1200, 750), np.float32)
    top, _, left, _ = g.padding("io")
    big[top:top + 900, left:left + 750] = resize_image(image, (900, 750), order=1)
    rows, cols = np.nonzero(big > 0.5 * big.max())
    centre = g.input_to("io", [[301.0, 201.0]])[0]
    assert abs(cols.mean() - centre[0]) < 0.6 and abs(rows.mean() - centre[1]) < 0.6


def _old_preprocess(raw):
    """The pre-processing before the aspect ratio was kept: a plain resize to Io."""
    from scipy import ndimage
    from skimage import exposure

    io = resize_image(normalise_intensity(raw), IO_SHAPE, order=1)
    io = exposure.equalize_adapthist(io, kernel_size=None, clip_limit=0.01).astype(np.float32)
    io = ndimage.gaussian_filter(io, 2.0)
    return np.clip(io, 0.0, 1.0, out=io)


def test_a_2_to_1_film_gives_the_same_io_and_i_as_a_plain_resize():
    rng = np.random.default_rng(3)
    raw = rng.normal(2000, 300, (900, 450))
    raw[300:500, 150:300] += 800
    io = preprocess_image(raw)
    assert Geometry(raw.shape).padding("io") == (0, 0, 0, 0)
    old = _old_preprocess(raw)
    assert io.dtype == old.dtype and io.tobytes() == old.tobytes()
    old_i = np.clip(resize_image(old, I_SHAPE, order=1), 0.0, 1.0)
    assert resize_to_i(io).tobytes() == old_i.tobytes()


def test_a_1_to_1_film_is_not_squeezed():
    yy, xx = np.mgrid[:800, :800]
    raw = 1000.0 + 1500.0 * ((xx - 430) ** 2 + (yy - 380) ** 2 <= 200 ** 2)
    io = preprocess_image(raw)
    g = Geometry(raw.shape)
    top, bottom, left, right = g.padding("io")
    assert (top, left) == (768, 0) and top == bottom
    assert not io[:top].any() and not io[3072 - bottom:].any()  # zero padding
    rows, cols = np.nonzero(io > 0.5)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert abs(height - width) <= 1  # a circle stays a circle
    assert abs(width - 400 * g.scale("input", "io")[0]) <= 2
    cx, cy = g.input_to("io", [[430.0, 380.0]])[0]
    assert abs(cols.mean() - cx) < 1.0 and abs(rows.mean() - cy) < 1.0
    # The old plain resize squeezed it to half its width.
    old = _old_preprocess(raw)
    r_old, c_old = np.nonzero(old > 0.5)
    assert (np.ptp(r_old) + 1) / (np.ptp(c_old) + 1) > 1.9


def test_film_pixels_do_not_depend_on_the_padding():
    rng = np.random.default_rng(4)
    raw = rng.normal(2000, 300, (600, 600))
    io = preprocess_image(raw)
    (rows, cols), (top, left) = fit_shape(raw.shape, IO_SHAPE)
    film = io[top:top + rows, left:left + cols]
    # The film alone, processed on its own grid with Io-sized CLAHE tiles.
    alone = preprocess_image(raw, io_shape=(rows, cols), clahe_kernel_size=(384, 192))
    assert np.array_equal(film, alone)


def test_geometry_rejects_bad_input():
    with pytest.raises(ValueError, match="input_shape"):
        Geometry((0, 10))
    with pytest.raises(ValueError, match="space"):
        Geometry((10, 10)).map([[0, 0]], "input", "xyz")


def test_normalise_intensity_ignores_borders_and_rejects_flat_images():
    image = np.full((100, 100), 1000.0)
    image[20:80, 20:80] = np.linspace(1000, 3000, 60)[None, :]
    image[:, :2] = 65535  # a burnt-in marker column
    out = normalise_intensity(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(ValueError, match="no contrast"):
        normalise_intensity(np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match="non-finite"):
        normalise_intensity(np.full((64, 64), np.nan))


def test_preprocess_shapes_range_and_contrast_gain():
    rng = np.random.default_rng(0)
    raw = np.full((700, 500), 2000.0)
    raw[300:400, 200:300] += 150  # a faint body
    raw += rng.normal(0, 20, raw.shape)
    io = preprocess_image(raw)
    assert io.shape == IO_SHAPE and io.dtype == np.float32
    assert 0.0 <= io.min() and io.max() <= 1.0
    i = resize_to_i(io)
    assert i.shape == I_SHAPE
    g = Geometry(raw.shape)
    (x, y), = g.input_to("io", [[250, 350]]).round().astype(int)
    (bx, by), = g.input_to("io", [[100, 100]]).round().astype(int)
    assert io[y, x] - io[by, bx] > 0.1  # CLAHE made the faint body stand out


def test_preprocess_rejects_tiny_images():
    with pytest.raises(ValueError, match="too small: 1 x 1"):
        preprocess_image(np.ones((1, 1)))


@pytest.mark.parametrize("shape", [(1000, 1000), (900, 1400), (2400, 1200)])
def test_masks_pasted_back_land_on_the_input_object(shape):
    from skimage import draw

    from lumbar_core.crop import extract_patch
    from lumbar_core.crop import patch_probabilities_to_masks, whole_probabilities_to_masks

    g = Geometry(shape)
    centre, radius = np.array([0.45 * shape[1], 0.55 * shape[0]]), 0.08 * min(shape)
    truth = np.zeros(shape, bool)
    truth[draw.disk((centre[1], centre[0]), radius, shape=shape)] = True
    # The same disc drawn in Io by the mapping, cut out as a patch and pasted back.
    s = g.scale("input", "io")[0]
    (cx, cy), = g.input_to("io", [centre])
    disc_io = np.zeros(g.io_shape, np.float32)
    disc_io[draw.disk((cy, cx), radius * s, shape=g.io_shape)] = 1.0
    box = np.array([[cx, cy, 3 * radius * s]])
    patch = extract_patch(disc_io, box[0], patch_size=128)[None]
    masks = patch_probabilities_to_masks(patch, box, g)
    pasted = masks["labels_input"] == 1
    assert masks["labels_io"].shape == g.io_shape and pasted.shape == shape
    iou = (pasted & truth).sum() / (pasted | truth).sum()
    assert iou > 0.95
    rows, cols = np.nonzero(pasted)
    assert abs(cols.mean() - centre[0]) < 1.0 and abs(rows.mean() - centre[1]) < 1.0
    # Whole-image probabilities on I come back to the same place.
    (ix, iy), = g.input_to("i", [centre])
    probs = np.zeros(g.i_shape + (6,), np.float32)
    probs[..., 0] = 0.5
    probs[..., 2][draw.disk((iy, ix), radius * g.scale("input", "i")[0], shape=g.i_shape)] = 1.0
    whole = whole_probabilities_to_masks(probs, g)
    labelled = whole["labels_input"] == 2
    assert (labelled & truth).sum() / (labelled | truth).sum() > 0.85
    rows, cols = np.nonzero(labelled)
    assert abs(cols.mean() - centre[0]) < 2.0 and abs(rows.mean() - centre[1]) < 2.0
    rows, cols = np.nonzero(whole["labels_io"] == 2)
    assert abs(cols.mean() - cx) < 2.0 and abs(rows.mean() - cy) < 2.0


def test_film_box_and_pixel_spacing_of_a_letterboxed_film():
    g = Geometry((2500, 2500))
    assert g.film_box("io") == pytest.approx((-0.5, 767.5, 1535.5, 2303.5))
    assert g.film_box("i") == pytest.approx((-0.5, 127.5, 255.5, 383.5))  # 768 / 6 = 128
    assert g.pixel_spacing("io", [0.14, 0.14]) == pytest.approx(0.14 * 2500 / 1536)
    assert g.pixel_spacing("input", (0.1, 0.2)) == pytest.approx(np.sqrt(0.02))
    assert g.pixel_spacing("io", None) is None
    with pytest.raises(ValueError, match="input_spacing_mm"):
        g.pixel_spacing("io", [0.0, 0.1])
