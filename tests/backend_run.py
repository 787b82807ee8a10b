"""Train the three architectures a few steps on the Keras backend of this process.

Used by ``tests/test_training.py`` to compare TensorFlow (oneDNN off and on) and JAX: it
runs in the test process and, with another ``KERAS_BACKEND`` or ``TF_ENABLE_ONEDNN_OPTS``,
as ``python -c "import backend_run; backend_run.main(folder, out)"``. The first run writes
each network's initial weights to ``folder`` (``<name>.npz``); later runs load them, so every
backend starts from the same weights.
"""

import json
from pathlib import Path

import keras
import numpy as np

from lumbar_core.models import (
    build_mnet,
    build_posenet,
    build_unet,
    mnet_loss,
    posenet_loss,
    unet_loss,
)
from lumbar_core.training import HeatmapSequence, SegmentationSequence, train_model

#: Two epochs of two steps each (4 training images, batches of 2), at the warm-up rate.
EPOCHS = 2


def _networks():
    return {
        "mnet": (lambda: build_mnet((32, 32, 1), num_classes=2, filters=(4, 4, 4, 4, 4)), mnet_loss),
        "unet": (lambda: build_unet((32, 32, 1), num_classes=2, filters=(4, 4, 4, 4, 4)), unet_loss),
        "posenet": (lambda: build_posenet((64, 32, 1), width=4, depth=2), posenet_loss),
    }


def _eager():
    """Run TensorFlow eagerly (tracing these tiny graphs costs more than running them).
    JAX stays compiled: op by op it took longer. Returns a function that restores the
    setting."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        before = tf.config.functions_run_eagerly()
        tf.config.run_functions_eagerly(True)
        return lambda: tf.config.run_functions_eagerly(before)
    return lambda: None


def train_networks(folder):
    """Forward pass and short training of the M-net, U-net and Pose-net.

    Parameters
    ----------
    folder : str or os.PathLike
        Holds (or receives, on the first run) the initial weights ``<name>.npz``.

    Returns
    -------
    result : dict
        ``backend``, and per network ``forward`` (the inference-mode output on the first
        validation batch, flattened) and ``loss`` / ``val_loss`` (one value per epoch).
    """
    folder = Path(folder)
    rng = np.random.default_rng(0)
    images = rng.random((6, 32, 32)).astype("float32")
    labels = (images > 0.5).astype("uint8")
    spine = rng.random((6, 64, 32)).astype("float32")
    centres = np.stack([np.c_[np.full(5, 16.0), 10.0 + 10.0 * np.arange(5)]] * 6)
    result = {"backend": keras.backend.backend()}
    restore = _eager()
    try:
        for name, (build, loss) in _networks().items():
            keras.utils.set_random_seed(0)
            model = build()
            path = folder / f"{name}.npz"
            if not path.exists():
                np.savez(path, *model.get_weights())
            with np.load(path) as saved:
                model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
            if name == "posenet":
                train = HeatmapSequence(spine[:4], centres[:4], 4.0, batch_size=2, augment=True)
                val = HeatmapSequence(spine[4:], centres[4:], 4.0, batch_size=2)
                key = "y_l15"
            else:
                kw = {"batch_size": 2, "output_names": list(model.output_names)}
                train = SegmentationSequence(images[:4], labels[:4], 2, augment=True, **kw)
                val = SegmentationSequence(images[4:], labels[4:], 2, **kw)
                key = "fused"
            forward = model(val[0][0], training=False)[key]
            history = train_model(model, train, val, loss=loss(), epochs=EPOCHS,
                                  warmup_epochs=EPOCHS, warmup_lr=1e-4, patience=5)
            result[name] = {
                "forward": keras.ops.convert_to_numpy(forward).ravel().tolist(),
                "loss": history["loss"].tolist(),
                "val_loss": history["val_loss"].tolist(),
            }
    finally:
        restore()
    return result


def main(folder, out):
    """Write :func:`train_networks` of ``folder`` to the JSON file ``out``."""
    Path(out).write_text(json.dumps(train_networks(folder)))
