"""Training losses of the Pose-net (Eq. 2, 3) and the M-net / U-net (Eq. 8).

Both are registered with Keras (package ``lumbar_core``), so that a compiled model
saved as ``.keras`` loads without ``custom_objects``. The per-model loss dicts are
:func:`lumbar_core.models.posenet.posenet_loss`, :func:`lumbar_core.models.mnet.mnet_loss`
and :func:`lumbar_core.models.unet.unet_loss`.
"""

from __future__ import annotations

import keras

__all__ = ["WeightedCategoricalCrossentropy", "heatmap_sse"]


@keras.saving.register_keras_serializable(package="lumbar_core")
def heatmap_sse(y_true, y_pred):
    """Sum of squared errors of a confidence map, per image (Eq. 2, 3).

    Parameters
    ----------
    y_true, y_pred : (N, H, W, 1) tensor
        Target and predicted confidence maps.

    Returns
    -------
    loss : (N,) tensor
        ``||y_pred - y_true||^2`` summed over the pixels of each image. Keras then
        averages over the batch, giving Eq. 2 / Eq. 3 exactly.

    Notes
    -----
    The sum (not the mean) over pixels makes the loss value scale with the target
    area: a map of zeros against one centre costs ``pi * sigma^2 / 2`` (about 16 for
    ``sigma^2 = 10``). Adam normalises the gradient scale, so the raw sum trains
    stably with the paper's learning rates.
    """
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    return keras.ops.sum(keras.ops.square(y_pred - y_true), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="lumbar_core")
class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """Pixel-averaged categorical cross-entropy times a fixed weight (Eq. 8).

    Parameters
    ----------
    weight : float, optional
        Factor applied to the loss; 0.25 for each of the four M-net side outputs,
        0 for the fused output (so its value is logged but not trained). Default 1.
    name : str, optional
        Loss name. Default ``"weighted_categorical_crossentropy"``.

    Notes
    -----
    ``y_true`` is one-hot ``(N, H, W, C)``, ``y_pred`` softmax probabilities of the
    same shape. The per-pixel values ``-<y_true, log y_pred>`` are averaged over
    pixels and batch (Keras' ``sum_over_batch_size`` reduction), i.e. the
    ``-(1/N_pixels) <y_seg, log f_seg,i>`` of Eq. 8.
    """

    def __init__(self, weight: float = 1.0, name: str = "weighted_categorical_crossentropy", **kwargs):
        weight = float(weight)
        if not weight >= 0:
            raise ValueError(f"weight must be a number >= 0. Received: weight={weight!r}")
        super().__init__(name=name, **kwargs)
        self.weight = weight

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        return self.weight * keras.losses.categorical_crossentropy(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}
