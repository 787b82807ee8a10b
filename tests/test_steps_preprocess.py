"""lumbar_core.steps.preprocess: rule resize (I from the stored Io), on tiny grids."""

import numpy as np
import pytest

from lumbar_core import io, phantom_io
from lumbar_core.preprocess import Geometry, preprocess_image, resize_to_i
from lumbar_core.steps.preprocess import preprocess, resize

#: A tiny grid: Io 12 x 6, I 4 x 2 (a factor-3 shrink, as 3072 x 1536 -> 512 x 256 is 6).
TINY = Geometry((24, 12), io_shape=(12, 6), i_shape=(4, 2))

SETTINGS = {"clahe_clip_limit": 0.01, "clahe_kernel_size": None, "gaussian_sigma": 2.0,
            "min_size": 64}


def _write(tmp_path, stored, grid=TINY):
    io.save_npz(tmp_path / "x.npz", io=stored, status="ok", message="")
    io.write_json(tmp_path / "x.geometry.json",
                  {"image_id": "x", "status": "ok", "message": "", "geometry": grid.to_dict()})
    return {"io_image": tmp_path / "x.npz", "geometry": tmp_path / "x.geometry.json"}


@pytest.mark.parametrize("value", [0, 1, 32768, 65535])
def test_resize_of_a_flat_io_is_flat_at_the_same_grey(tmp_path, value):
    inputs = _write(tmp_path, np.full((12, 6), value, np.uint16))

    assert resize(**inputs, out=tmp_path / "i.npz") == {"status": "ok", "message": ""}

    got = io.load_npz(tmp_path / "i.npz")
    assert got["i"].shape == (4, 2) and got["i"].dtype == np.float16
    np.testing.assert_array_equal(got["i"], np.float16(value / 65535))


def test_resize_shrinks_on_the_geometry_grid_keeping_the_bright_half(tmp_path):
    stored = np.zeros((12, 6), np.uint16)
    stored[:6] = 65535  # upper half white
    inputs = _write(tmp_path, stored)

    resize(**inputs, out=tmp_path / "i.npz")

    i = io.load_npz(tmp_path / "i.npz")["i"].astype(np.float32)
    assert i.shape == (4, 2)
    # Rows 0-1 of I cover Io rows 0-5 (white), rows 2-3 cover rows 6-11 (black); the
    # anti-aliasing blurs only across the edge between them.
    assert (i[0] > 0.99).all() and (i[3] < 0.01).all()
    assert (i[1] > 0.5).all() and (i[2] < 0.5).all()


def test_resize_carries_an_excluded_image_on(tmp_path):
    message = "x.png: truncated PNG file (image data ends early)"
    io.save_npz(tmp_path / "x.npz", io=np.zeros((0, 0), np.uint16), status="excluded",
                message=message)
    io.write_json(tmp_path / "x.geometry.json",
                  {"image_id": "x", "status": "excluded", "message": message})

    record = resize(io_image=tmp_path / "x.npz", geometry=tmp_path / "x.geometry.json",
                    out=tmp_path / "i.npz")

    assert record == {"status": "excluded", "message": message}
    got = io.load_npz(tmp_path / "i.npz")
    assert sorted(got) == ["message", "status"]
    assert (str(got["status"]), str(got["message"])) == ("excluded", message)


def test_resize_refuses_an_io_that_does_not_match_its_geometry(tmp_path):
    inputs = _write(tmp_path, np.zeros((10, 6), np.uint16))
    with pytest.raises(ValueError, match=r"x\.npz: Io has shape \(10, 6\)"):
        resize(**inputs, out=tmp_path / "i.npz")


def test_resize_gives_i_of_the_stored_io_bit_for_bit(tmp_path):
    """I is the pre-processed film as preprocess stored it (uint16), fitted into the I grid."""
    rng = np.random.default_rng(0)
    film = np.clip(rng.normal(2000, 300, (300, 150)), 0, 65535).astype(np.uint16)
    film[100:200, 50:100] += 1500
    phantom_io.write_png16(tmp_path / "film.png", film)
    outputs = {"out_io": tmp_path / "film.npz", "out_geometry": tmp_path / "film.geometry.json"}
    preprocess(image=tmp_path / "film.png", **outputs, image_id="film", settings=SETTINGS)

    resize(io_image=outputs["out_io"], geometry=outputs["out_geometry"],
           out=tmp_path / "resized.npz")

    raw = io.read_image(tmp_path / "film.png")[0]
    stored = np.round(preprocess_image(raw, **SETTINGS) * 65535).astype(np.uint16)
    expected = resize_to_i(stored.astype(np.float32) / 65535).astype(np.float16)
    resized = io.load_npz(tmp_path / "resized.npz")["i"]
    assert resized.shape == (512, 256) and resized.dtype == np.float16
    assert resized.tobytes() == expected.tobytes()
