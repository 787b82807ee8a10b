"""lumbar_core.steps.segment: the inference rules on a shard with a tiny saved model."""

import io as stdio

import numpy as np
import pytest

from lumbar_core import io
from lumbar_core.crop import crop_boxes, patch_probabilities_to_masks, whole_probabilities_to_masks
from lumbar_core.models import build_mnet, build_whole_image, predict_segmentation, save_model
from lumbar_core.preprocess import I_SHAPE, Geometry
from lumbar_core.steps.segment import mnet_infer, mnet_whole_infer

FILTERS = (2, 2, 4, 4, 4)
CENTRES_IO = np.array([[760.0, 700.0 + 300 * k] for k in range(5)])


@pytest.fixture
def shard(tmp_path):
    """A geometry file, an image that went through and an excluded one."""
    geometry = tmp_path / "geometry.json"
    grid = Geometry((1200, 600))
    io.write_json(geometry, {"status": "ok", "message": "", "geometry": grid.to_dict()})
    excluded = {"status": "excluded", "message": "unreadable image"}
    return tmp_path, grid, geometry, excluded


def test_patch_inference_pastes_each_image_back_and_carries_exclusions(shard):
    folder, grid, geometry, excluded = shard
    model = folder / "mnet.keras"
    net = build_mnet((32, 32, 1), filters=FILTERS)
    save_model(net, model)
    boxes = crop_boxes(CENTRES_IO)
    patches = np.random.default_rng(0).random((5, 32, 32)).astype(np.float16)
    io.save_npz(folder / "a.npz", patches=patches, boxes=boxes, status="ok", message="")
    io.save_npz(folder / "b.npz", **excluded)
    log = stdio.StringIO()

    mnet_infer(model=model, patches=[folder / "a.npz", folder / "b.npz"],
               geometry=[geometry, geometry], out_dir=folder / "out", log=log)

    got = io.load_npz(folder / "out/a.npz")
    probs = predict_segmentation(net, patches.astype(np.float32))
    expected = patch_probabilities_to_masks(probs[..., 1], boxes, grid, threshold=0.5)
    assert str(got["status"]) == "ok"
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    skipped = io.load_npz(folder / "out/b.npz")
    assert (str(skipped["status"]), str(skipped["message"])) == ("excluded", "unreadable image")
    assert log.getvalue().startswith("a: ") and "b:" not in log.getvalue()


def test_whole_image_inference_gives_the_labels_of_the_network(shard):
    folder, grid, geometry, excluded = shard
    model = folder / "whole.keras"
    net = build_whole_image("mnet", (*I_SHAPE, 1), filters=FILTERS)
    save_model(net, model)
    image = np.random.default_rng(1).random(I_SHAPE).astype(np.float32)
    io.save_npz(folder / "a.npz", i=image, status="ok", message="")
    io.save_npz(folder / "b.npz", **excluded)

    mnet_whole_infer(model=model, images=[folder / "a.npz", folder / "b.npz"],
                     geometry=[geometry, geometry], out_dir=folder / "out", log=stdio.StringIO())

    got = io.load_npz(folder / "out/a.npz")
    expected = whole_probabilities_to_masks(predict_segmentation(net, image[None])[0], grid)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert str(io.load_npz(folder / "out/b.npz")["status"]) == "excluded"
