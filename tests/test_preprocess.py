import numpy as np
import pytest

from lumbar_core.preprocess import (
    IO_SHAPE,
    I_SHAPE,
    Geometry,
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
    g = Geometry((3072 * 2, 1536 * 3))
    # The image's outer edges map to the outer edges of Io and I.
    assert np.allclose(g.input_to("io", [[-0.5, -0.5]]), [[-0.5, -0.5]])
    assert np.allclose(g.input_to("io", [[1536 * 3 - 0.5, 3072 * 2 - 0.5]]), [[1535.5, 3071.5]])
    # Io -> I is a factor-6 shrink on both axes.
    assert np.allclose(g.scale("io", "i"), [1 / 6, 1 / 6])
    assert Geometry(**{k: tuple(v) for k, v in g.to_dict().items()}) == g


def test_geometry_matches_resize_of_a_bright_pixel():
    image = np.zeros((600, 500), np.float32)
    image[200:203, 300:303] = 1.0  # centre (301, 201)
    g = Geometry(image.shape, io_shape=(1200, 750))
    big = resize_image(image, (1200, 750), order=1)
    rows, cols = np.nonzero(big > 0.5 * big.max())
    centre = g.input_to("io", [[301.0, 201.0]])[0]
    assert abs(cols.mean() - centre[0]) < 0.6 and abs(rows.mean() - centre[1]) < 0.6


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
