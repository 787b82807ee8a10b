"""Tests of lumbar_core.models: Pose-net, M-net, U-net, losses, save/load, prediction."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from lumbar_core.models import (
    SIDE_OUTPUTS,
    WeightedCategoricalCrossentropy,
    build_mnet,
    build_posenet,
    build_unet,
    build_whole_image,
    heatmap_sse,
    load_model,
    mnet_loss,
    posenet_loss,
    predict_heatmaps,
    predict_segmentation,
    save_model,
    unet_loss,
)

REPO = Path(__file__).resolve().parents[1]
TINY_FILTERS = (4, 4, 4, 4, 4)  # equal widths: few distinct shapes, fast JAX start


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def _onehot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


# ---------------------------------------------------------------- Pose-net


@pytest.fixture(scope="module")
def trained_posenet():
    """A tiny Pose-net after one training step (so its output heads are not zero)."""
    keras.utils.set_random_seed(0)
    model = build_posenet((64, 32, 1), width=2, depth=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=posenet_loss(), run_eagerly=True)
    x = _images(2, (64, 32, 1))
    targets = {"y_l5": np.zeros((2, 64, 32, 1), np.float32), "y_l15": np.ones((2, 64, 32, 1), np.float32)}
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, targets, return_dict=True)
    return model, before, loss


def test_posenet_outputs_have_input_size(trained_posenet):
    model, _, _ = trained_posenet
    print(f"Pose-net (64, 32, 1), width 2, depth 3: {model.count_params()} parameters")
    assert set(model.output_names) == {"y_l5", "y_l15"}
    out = model(_images(3, (64, 32, 1)), training=False)
    assert out["y_l5"].shape == (3, 64, 32, 1)
    assert out["y_l15"].shape == (3, 64, 32, 1)
    assert model.get_layer("s1_enc0_conv1") is not None
    assert model.name == "posenet"


def test_posenet_one_train_step_changes_weights(trained_posenet):
    model, before, loss = trained_posenet
    # At initialisation both heads output 0, so the loss is the sum of squares of the
    # targets: 0 for y_l5 and 64 * 32 = 2048 for y_l15 (Eq. 2, 3).
    assert loss["loss"] == pytest.approx(2048.0, rel=1e-5)
    changed = [not np.array_equal(b, a) for b, a in zip(before, model.get_weights())]
    assert any(changed)


def test_posenet_parameter_counts():
    default = build_posenet()
    paper = build_posenet(width=32)
    print(f"Pose-net 512 x 256: width 8 {default.count_params()}, width 32 {paper.count_params()}")
    assert default.count_params() == 2_586_322
    assert paper.count_params() == 41_253_442


def test_posenet_save_load_identical(trained_posenet, tmp_path):
    model, _, _ = trained_posenet
    path = tmp_path / "posenet.keras"
    save_model(model, path)
    loaded = load_model(path)
    x = _images(3, (64, 32))
    a5, a15 = predict_heatmaps(model, x, batch_size=2)
    b5, b15 = predict_heatmaps(loaded, x, batch_size=2)
    assert a5.shape == (3, 64, 32) and a5.dtype == np.float32
    assert np.abs(a15).max() > 0
    np.testing.assert_array_equal(a5, b5)
    np.testing.assert_array_equal(a15, b15)


def test_posenet_receptive_field():
    """One stage of depth 3 sees 13 * 8 - 8 = 96 px: a pixel 40 rows below the centre
    changes the stage-1 features there, one 50 rows below (beyond 96 / 2) does not,
    while stage 2, stacked on stage 1, still sees it."""
    keras.utils.set_random_seed(1)
    model = build_posenet((128, 64, 1), width=4, depth=3)
    x = np.zeros((3, 128, 64, 1), np.float32)
    x[1, 64 + 40, 32, 0] = 1.0
    x[2, 64 + 50, 32, 0] = 1.0

    def features_at_centre(layer):
        sub = keras.Model(model.input, model.get_layer(layer).output)
        return keras.ops.convert_to_numpy(sub(x, training=False))[:, 64, 32]

    stage1 = features_at_centre("s1_dec0_conv2")
    assert not np.array_equal(stage1[1], stage1[0])
    np.testing.assert_array_equal(stage1[2], stage1[0])
    stage2 = features_at_centre("s2_dec0_conv2")
    assert not np.array_equal(stage2[2], stage2[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (60, 32, 1), "depth": 3}, r"multiples of 8.*\(60, 32, 1\)"),
        ({"input_shape": (64, 32), "depth": 3}, "input_shape"),
        ({"input_shape": (64, 32, 1), "width": 0}, "width=0"),
        ({"input_shape": (64, 32, 1), "depth": 0}, "depth=0"),
    ],
)
def test_posenet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_posenet(**kwargs)


# ---------------------------------------------------------------- M-net


def _reference_mnet_count(in_channels=1, num_classes=2):
    """Parameters of Fu's Model_MNet.py topology, counted from its layer list."""
    conv3 = [  # (C_in, C_out) of every 3x3 convolution with bias
        (in_channels, 32),
        (32, 32),
        (in_channels, 64),
        (64 + 32, 64),
        (64, 64),
        (in_channels, 128),
        (128 + 64, 128),
        (128, 128),
        (in_channels, 256),
        (256 + 128, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (256 + 256, 256),
        (256, 256),
        (128 + 128, 128),
        (128, 128),
        (64 + 64, 64),
        (64, 64),
        (32 + 32, 32),
        (32, 32),
    ]
    deconv2 = [(512, 256), (256, 128), (128, 64), (64, 32)]  # 2x2 transposed, with bias
    side1 = [256, 128, 64, 32]  # 1x1 side-output convolutions, with bias
    total = sum(9 * i * o + o for i, o in conv3)
    total += sum(4 * i * o + o for i, o in deconv2)
    total += sum(c * num_classes + num_classes for c in side1)
    bn_total = total - sum(o for _, o in conv3) + sum(4 * o for _, o in conv3)
    return total, bn_total


def test_mnet_parameter_count_matches_reference():
    reference, reference_bn = _reference_mnet_count()
    assert reference == 8_539_080
    assert reference_bn == 8_549_256
    plain = build_mnet((224, 224, 1), num_classes=2, batch_norm=False)
    with_bn = build_mnet((224, 224, 1), num_classes=2, batch_norm=True)
    print(
        f"M-net 224 x 224 x 1, 2 classes: {plain.count_params()} without BN, "
        f"{with_bn.count_params()} with BN"
    )
    assert plain.count_params() == 8_539_080
    assert with_bn.count_params() == 8_549_256
    trainable = sum(int(np.prod(w.shape)) for w in with_bn.trainable_weights)
    assert trainable == 8_542_472


@pytest.fixture(scope="module")
def tiny_mnet():
    keras.utils.set_random_seed(0)
    model = build_mnet((32, 32, 1), num_classes=3, filters=TINY_FILTERS)
    model.compile(optimizer="adam", loss=mnet_loss(), run_eagerly=True)
    labels = np.random.default_rng(0).integers(0, 3, (2, 32, 32))
    model.train_on_batch(_images(2, (32, 32, 1)), {k: _onehot(labels, 3) for k in model.output_names})
    return model


def test_mnet_outputs_and_fused_is_mean_of_sides(tiny_mnet):
    out = tiny_mnet(_images(2, (32, 32, 1), seed=1), training=False)
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    assert sorted(out) == ["fused", *SIDE_OUTPUTS]
    for value in out.values():
        assert value.shape == (2, 32, 32, 3)
        np.testing.assert_allclose(value.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["fused"], np.mean([out[k] for k in SIDE_OUTPUTS], axis=0), atol=1e-6)
    # Nearest-neighbour resizing has no deterministic GPU gradient in TensorFlow.
    upsampling = [layer for layer in tiny_mnet.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert len(upsampling) == 3 and all(layer.interpolation == "bilinear" for layer in upsampling)


def test_mnet_loss_is_mean_of_side_crossentropies(tiny_mnet):
    """Eq. 8: the loss is the mean over the four sides of the pixel-averaged CE."""
    x = _images(2, (32, 32, 1), seed=2)
    labels = np.random.default_rng(2).integers(0, 3, (2, 32, 32))
    y = _onehot(labels, 3)
    loss = tiny_mnet.evaluate(x, {k: y for k in tiny_mnet.output_names}, verbose=0, return_dict=True)
    out = tiny_mnet.predict(x, verbose=0)
    ce = [np.mean(-np.log(np.clip(np.sum(out[k] * y, axis=-1), 1e-7, 1.0))) for k in SIDE_OUTPUTS]
    assert loss["loss"] == pytest.approx(np.mean(ce), rel=1e-4)


def test_mnet_save_load_identical(tiny_mnet, tmp_path):
    path = tmp_path / "models" / "mnet.keras"
    save_model(tiny_mnet, path)
    assert sorted(os.listdir(path.parent)) == ["mnet.keras"]
    loaded = load_model(path)
    x = _images(3, (32, 32))
    a = predict_segmentation(tiny_mnet, x, batch_size=2)
    b = predict_segmentation(loaded, x, batch_size=2)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.loss["side_1"], WeightedCategoricalCrossentropy)


def test_predictions_are_the_models_own_in_batches(tiny_mnet, trained_posenet):
    # The inference helpers run batch by batch; the outputs must be what Model.predict
    # gives with the same batch size, the last batch short, and nothing for no images.
    x = _images(5, (32, 32))
    expected = tiny_mnet.predict(x[..., None], batch_size=2, verbose=0)["fused"]
    np.testing.assert_array_equal(predict_segmentation(tiny_mnet, x, batch_size=2), expected)
    assert predict_segmentation(tiny_mnet, x[:0]).shape == (0, 32, 32, 3)
    posenet = trained_posenet[0]
    images = _images(3, (64, 32), seed=4)
    y5, y15 = predict_heatmaps(posenet, images, batch_size=2)
    out = posenet.predict(images[..., None], batch_size=2, verbose=0)
    np.testing.assert_array_equal(y5, out["y_l5"][..., 0])
    np.testing.assert_array_equal(y15, out["y_l15"][..., 0])


def test_mnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"multiples of 16.*\(40, 32, 1\)"):
        build_mnet((40, 32, 1))
    with pytest.raises(ValueError, match="filters"):
        build_mnet((32, 32, 1), filters=(8, 16, 32))
    with pytest.raises(ValueError, match="num_classes=1"):
        build_mnet((32, 32, 1), num_classes=1)


_JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    from lumbar_core.models import build_mnet, load_model, mnet_loss, predict_segmentation
    assert keras.backend.backend() == "jax", keras.backend.backend()
    model = build_mnet((32, 32, 1), num_classes=2, filters=(4, 4, 4, 4, 4))
    model.compile(optimizer="adam", loss=mnet_loss())
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    y = np.eye(2, dtype="float32")[np.random.default_rng(1).integers(0, 2, (2, 32, 32))]
    loss = model.train_on_batch(x, {k: y for k in model.output_names}, return_dict=True)["loss"]
    assert np.isfinite(loss), loss
    saved = load_model(sys.argv[1])
    np.save(sys.argv[2], keras.ops.convert_to_numpy(saved(x, training=False)["fused"]))
    np.testing.assert_array_equal(predict_segmentation(saved, x[..., 0], batch_size=1),
                                  saved.predict(x, batch_size=1, verbose=0)["fused"])
    print("jax ok", loss)
    """)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_mnet_trains_and_loads_under_jax(tiny_mnet, tmp_path):
    """Builds and trains one step under KERAS_BACKEND=jax and loads a model saved by
    TensorFlow with the same predictions."""
    path = tmp_path / "mnet_tf.keras"
    save_model(tiny_mnet, path)
    expected_x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    expected = predict_segmentation(tiny_mnet, expected_x[..., 0])
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(path), str(tmp_path / "jax.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "jax ok" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), expected, atol=1e-5)


# ---------------------------------------------------------------- U-net


def test_unet_basics_and_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_unet((32, 32, 1), num_classes=2, filters=TINY_FILTERS)
    assert model.output_names == ["fused"]
    model.compile(optimizer="adam", loss=unet_loss(), run_eagerly=True)
    labels = np.random.default_rng(0).integers(0, 2, (2, 32, 32))
    model.train_on_batch(_images(2, (32, 32, 1)), {"fused": _onehot(labels, 2)})
    x = _images(2, (32, 32), seed=3)
    probs = predict_segmentation(model, x)
    assert probs.shape == (2, 32, 32, 2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    save_model(model, tmp_path / "unet.keras")
    np.testing.assert_array_equal(predict_segmentation(load_model(tmp_path / "unet.keras"), x), probs)


def test_unet_whole_image_variant_and_counts():
    model = build_unet((64, 32, 1), num_classes=6, filters=TINY_FILTERS)
    assert model.outputs[0].shape == (None, 64, 32, 6)
    full = build_unet((224, 224, 1), num_classes=2, batch_norm=False)
    print(
        f"U-net 224 x 224 x 1, 2 classes: {full.count_params()} without BN, "
        f"{build_unet().count_params()} with BN"
    )
    assert full.count_params() == 7_759_554
    with pytest.raises(ValueError, match="multiples of 16"):
        build_unet((64, 40, 1))


@pytest.mark.parametrize("arch", ["mnet", "unet"])
def test_whole_image_baseline_on_pooled_input(arch, tmp_path):
    plain = build_whole_image(arch, (64, 32, 1), num_classes=6, filters=TINY_FILTERS)
    pooled = build_whole_image(arch, (64, 32, 1), num_classes=6, filters=TINY_FILTERS, downsample=2)
    # Same output names (the losses of Eq. 8 are keyed by them), same full-size shapes.
    assert sorted(pooled.output_names) == sorted(plain.output_names)
    for output in pooled.outputs:
        assert tuple(output.shape) == (None, 64, 32, 6)
    x = np.random.default_rng(0).random((2, 64, 32), np.float32)
    probs = predict_segmentation(pooled, x)
    # Bilinear upsampling mixes probability vectors: they still sum to one.
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    # About downsample**2 fewer pixels: the core network runs on 32 x 16.
    assert pooled.get_layer(f"{arch}_whole_core").inputs[0].shape[1:3] == (32, 16)
    save_model(pooled, tmp_path / "whole.keras")
    np.testing.assert_allclose(predict_segmentation(load_model(tmp_path / "whole.keras"), x), probs,
                               atol=1e-6)


def test_whole_image_baseline_rejects_bad_settings():
    with pytest.raises(ValueError, match="arch must be 'mnet' or 'unet'"):
        build_whole_image("fcn")
    with pytest.raises(ValueError, match="downsample must be a positive int"):
        build_whole_image("unet", (64, 32, 1), downsample=0)
    with pytest.raises(ValueError, match="multiples of downsample=3"):
        build_whole_image("unet", (64, 32, 1), filters=TINY_FILTERS, downsample=3)


# ---------------------------------------------------------------- losses


def test_heatmap_sse_sums_pixels_per_image():
    y_true = np.zeros((2, 2, 2, 1), np.float32)
    y_pred = np.ones((2, 2, 2, 1), np.float32)
    y_pred[1] = 2.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(heatmap_sse(y_true, y_pred)), [4.0, 16.0])


def test_weighted_crossentropy_value_and_config():
    loss = WeightedCategoricalCrossentropy(0.25)
    y_true = np.array([[[[1.0, 0.0]]]], np.float32)
    y_pred = np.array([[[[0.5, 0.5]]]], np.float32)
    assert float(loss(y_true, y_pred)) == pytest.approx(0.25 * np.log(2.0), rel=1e-5)
    assert WeightedCategoricalCrossentropy.from_config(loss.get_config()).weight == 0.25
    with pytest.raises(ValueError, match="weight"):
        WeightedCategoricalCrossentropy(-1.0)
    weights = {k: v.weight for k, v in mnet_loss().items()}
    assert weights == {"side_1": 0.25, "side_2": 0.25, "side_3": 0.25, "side_4": 0.25, "fused": 0.0}


# ---------------------------------------------------------------- load / save / predict


def test_load_model_refuses_lambda_layer(tmp_path):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match=r"(?s)evil\.keras.*unsafe code.*Lambda.*saved by this workflow"):
        load_model(path)


def test_load_model_missing_or_corrupt(tmp_path):
    with pytest.raises(ValueError, match=r"nothere\.keras.*does not exist"):
        load_model(tmp_path / "nothere.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match=r"bad\.keras"):
        load_model(bad)
    empty_zip = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(ValueError, match=r"empty\.keras"):
        load_model(empty_zip)
    with pytest.raises(ValueError, match="end in '.keras'"):
        load_model(tmp_path / "model.h5")


def test_save_model_overwrites_and_leaves_no_temporary(tmp_path):
    model = build_unet((16, 16, 1), filters=TINY_FILTERS)
    path = tmp_path / "m.keras"
    path.write_text("old")
    save_model(model, path)
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]
    assert zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        save_model("not a model", tmp_path / "x.keras")


def test_predict_rejects_bad_images(trained_posenet):
    model, _, _ = trained_posenet
    with pytest.raises(ValueError, match=r"\(64, 32\)"):
        predict_heatmaps(model, np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_heatmaps(model, np.full((1, 64, 32), 2.0, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        predict_heatmaps(model, np.zeros((1, 64, 32), np.float32), batch_size=0)
    with pytest.raises(ValueError, match="fused"):
        predict_segmentation(model, np.zeros((1, 64, 32), np.float32))
    y_l5, y_l15 = predict_heatmaps(model, np.zeros((0, 64, 32), np.float32))
    assert y_l5.shape == (0, 64, 32) and y_l15.shape == (0, 64, 32)
