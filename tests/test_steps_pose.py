"""lumbar_core.steps.pose: Pose-net inference on a shard with a tiny saved model."""

import io as stdio

import numpy as np
import pytest

from lumbar_core import io
from lumbar_core.models import build_posenet, predict_heatmaps, save_model, zoom_about_centre
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


def _identity_posenet(shape):
    """A Pose-net stand-in whose maps are its input: what the scales do, seen exactly."""
    import keras

    x = keras.Input((*shape, 1))
    return keras.Model(x, {"y_l5": keras.layers.Identity(name="y_l5")(x),
                           "y_l15": keras.layers.Identity(name="y_l15")(x)})


def _blob(shape, centre, sigma=3.0):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
                  / (2 * sigma ** 2)).astype(np.float32)


def test_zoom_about_centre_moves_a_feature_away_from_the_centre_and_back():
    shape, centre = (64, 32), (31.5, 15.5)
    image = _blob(shape, (20.0, 10.0))
    zoomed = zoom_about_centre(image, 1.15)
    peak = np.unravel_index(np.argmax(zoomed), shape)
    # (20, 10) moves to c + 1.15 (p - c): (18.3, 9.2).
    assert np.allclose(peak, (centre[0] + 1.15 * (20 - centre[0]),
                              centre[1] + 1.15 * (10 - centre[1])), atol=1.0)
    back = zoom_about_centre(zoomed, 1 / 1.15)
    assert np.unravel_index(np.argmax(back), shape) == (20, 10)
    assert np.abs(back - image).max() < 0.05
    np.testing.assert_array_equal(zoom_about_centre(image, 1.0), image)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="factor must be a positive number"):
            zoom_about_centre(image, bad)


def test_test_time_scales_keep_every_peak_in_place_and_one_scale_is_the_paper():
    shape = (64, 32)
    net = _identity_posenet(shape)
    # Two "vertebrae", one away from the centre, where a zoom moves it most.
    image = np.maximum(_blob(shape, (12.0, 8.0)), 0.6 * _blob(shape, (40.0, 20.0)))

    single = predict_heatmaps(net, image[None])
    np.testing.assert_array_equal(single[1][0], image)
    np.testing.assert_array_equal(predict_heatmaps(net, image[None], scales=[1.0])[1], single[1])

    y_l5, y_l15 = predict_heatmaps(net, image[None], scales=[0.85, 1.0, 1.15])
    np.testing.assert_array_equal(y_l5, y_l15)
    # The maximum over the scales: never below the single pass, both peaks where they were.
    assert (y_l15[0] >= image - 1e-6).all()
    for centre in ((12, 8), (40, 20)):
        window = y_l15[0][centre[0] - 4:centre[0] + 5, centre[1] - 4:centre[1] + 5]
        assert np.unravel_index(np.argmax(window), window.shape) == (4, 4)
    assert abs(float(y_l15.max()) - 1.0) < 0.02
    for bad in ([], [0.0], [1.0, -1.0]):
        with pytest.raises(ValueError, match="scales must be one or more positive numbers"):
            predict_heatmaps(net, image[None], scales=bad)


def test_pose_inference_at_several_scales_writes_the_combined_maps(tmp_path):
    model = tmp_path / "posenet.keras"
    net = build_posenet((*I_SHAPE, 1), width=2, depth=2, downsample=4)
    rng = np.random.default_rng(4)  # random kernels: maps that are not zero everywhere
    for weight in net.weights:
        if weight.path.endswith("kernel"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
    save_model(net, model)
    image = np.random.default_rng(3).random(I_SHAPE).astype(np.float32)
    io.save_npz(tmp_path / "a.npz", i=image, status="ok", message="")

    pose_infer(model=model, images=[tmp_path / "a.npz"], out_dir=tmp_path / "out",
               scales=[0.85, 1.0, 1.15], log=stdio.StringIO())

    got = io.load_npz(tmp_path / "out/a.npz")
    _, y_l15 = predict_heatmaps(net, image[None], scales=[0.85, 1.0, 1.15])
    _, single = predict_heatmaps(net, image[None])
    np.testing.assert_array_equal(got["y_l15"], y_l15[0].astype(np.float16))
    assert np.abs(y_l15 - single).max() > 0.01 and (y_l15 >= single).all()


def _scaled_posenet(shape, factor):
    """A Pose-net stand-in whose maps are its input times ``factor``."""
    import keras

    x = keras.Input((*shape, 1))
    scaled = keras.layers.Rescaling(factor)(x)
    return keras.Model(x, {"y_l5": keras.layers.Identity(name="y_l5")(scaled),
                           "y_l15": keras.layers.Identity(name="y_l15")(scaled)})


def test_an_ensemble_averages_its_members_maps_and_one_member_is_the_single_network():
    shape = (64, 32)
    image = np.maximum(_blob(shape, (12.0, 8.0)), 0.6 * _blob(shape, (40.0, 20.0)))
    one, three = _scaled_posenet(shape, 1.0), _scaled_posenet(shape, 3.0)

    y_l5, y_l15 = predict_heatmaps([one, three], image[None])
    np.testing.assert_allclose(y_l15[0], 2.0 * image, rtol=1e-6)
    np.testing.assert_array_equal(y_l5, y_l15)
    np.testing.assert_array_equal(predict_heatmaps([three], image[None])[1],
                                  predict_heatmaps(three, image[None])[1])
    # Scales apply to each member before the average.
    scaled = predict_heatmaps([one, three], image[None], scales=[0.85, 1.0, 1.15])[1]
    expected = 2.0 * predict_heatmaps(one, image[None], scales=[0.85, 1.0, 1.15])[1]
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="non-empty sequence"):
        predict_heatmaps([], image[None])
    with pytest.raises(ValueError, match="the model takes"):
        predict_heatmaps([one, _scaled_posenet((32, 16), 1.0)], image[None])


def test_pose_inference_with_an_ensemble_writes_the_averaged_maps(tmp_path):
    nets = []
    for seed in (5, 6):
        net = build_posenet((*I_SHAPE, 1), width=2, depth=2, downsample=4)
        rng = np.random.default_rng(seed)
        for weight in net.weights:
            if weight.path.endswith("kernel"):
                weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
        save_model(net, tmp_path / f"posenet{seed}.keras")
        nets.append(net)
    image = np.random.default_rng(3).random(I_SHAPE).astype(np.float32)
    io.save_npz(tmp_path / "a.npz", i=image, status="ok", message="")

    pose_infer(model=[tmp_path / "posenet5.keras", tmp_path / "posenet6.keras"],
               images=[tmp_path / "a.npz"], out_dir=tmp_path / "out", log=stdio.StringIO())

    got = io.load_npz(tmp_path / "out/a.npz")
    first, second = (predict_heatmaps(net, image[None])[1][0] for net in nets)
    assert np.abs(first - second).max() > 0.01
    np.testing.assert_array_equal(got["y_l15"], ((first + second) / 2).astype(np.float16))
