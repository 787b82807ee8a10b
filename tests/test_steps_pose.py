"""lumbar_core.steps.pose: Pose-net inference on a shard with a tiny saved model."""

import io as stdio

import numpy as np

from lumbar_core import io
from lumbar_core.models import build_posenet, predict_heatmaps, save_model
from lumbar_core.preprocess import I_SHAPE
from lumbar_core.steps.pose import pose_infer


def test_pose_inference_writes_the_maps_of_each_image_and_carries_exclusions(tmp_path):
    model = tmp_path / "posenet.keras"
    net = build_posenet((*I_SHAPE, 1), width=2, depth=2, downsample=4)
    save_model(net, model)
    image = np.random.default_rng(2).random(I_SHAPE).astype(np.float32)
    io.save_npz(tmp_path / "a.npz", i=image, status="ok", message="")
    io.save_npz(tmp_path / "b.npz", status="excluded", message="no contrast")
    log = stdio.StringIO()

    pose_infer(model=model, images=[tmp_path / "a.npz", tmp_path / "b.npz"],
               out_dir=tmp_path / "out", log=log)

    got = io.load_npz(tmp_path / "out/a.npz")
    y_l5, y_l15 = predict_heatmaps(net, image[None])
    assert str(got["status"]) == "ok" and got["y_l5"].dtype == np.float16
    np.testing.assert_array_equal(got["y_l5"], y_l5[0].astype(np.float16))
    np.testing.assert_array_equal(got["y_l15"], y_l15[0].astype(np.float16))
    skipped = io.load_npz(tmp_path / "out/b.npz")
    assert (str(skipped["status"]), str(skipped["message"])) == ("excluded", "no contrast")
    assert "y_l5" not in skipped
    assert log.getvalue() == f"a: max yL1-5 {float(y_l15.max()):.3f}\n"
