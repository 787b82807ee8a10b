"""M-net: U-net with multi-scale input and deep side outputs (paper 2.3, Eq. 7, 8).

The topology follows Fu et al. [1]_ and their reference implementation
(``Model_MNet.py`` of MNet_DeepCDR, Keras): the input is average-pooled to 1/2, 1/4 and
1/8; each scaled copy goes through one 3x3 convolution (64, 128, 256 channels) and is
concatenated with the max-pooled encoder features of the same level; encoder 32, 64,
128, 256 (two 3x3 convolutions per level), bottleneck 512, decoder 256, 128, 64, 32
(2x2 transposed convolution, skip concatenation, two 3x3 convolutions); a 1x1
convolution at each of the four decoder levels is upsampled to the input size (a side
output) and the final map is the mean of the four (Eq. 7).

Differences from the reference, all without effect on the parameter count when
``batch_norm=False``: one input channel (a radiograph) instead of three; softmax side
outputs (paper 2.3, Eq. 8) instead of per-channel sigmoids; the side outputs are
upsampled bilinearly instead of by nearest neighbour, and the 1x1 convolution comes
before the upsampling instead of after it (both are linear and commute; the former is
cheaper). Bilinear because TensorFlow has no deterministic GPU gradient for
nearest-neighbour resizing: with ``tf.config.experimental.enable_op_determinism`` (see
:func:`lumbar_core.training.set_seed`) training would fail on a GPU. Batch
normalisation (paper 3.2) is optional; the reference does not have it.

References
----------
.. [1] H. Fu, J. Cheng, Y. Xu, D. W. K. Wong, J. Liu, X. Cao, "Joint optic disc and cup
       segmentation based on multi-label deep network and polar transformation",
       IEEE Trans. Med. Imaging 37(7), 2018, :doi:`10.1109/TMI.2018.2791488`.
"""

from __future__ import annotations

import keras

from .losses import WeightedCategoricalCrossentropy
from .unet import (
    conv_block,
    up_block,
    validate_filters,
    validate_input_shape,
    validate_num_classes,
)

__all__ = ["SIDE_OUTPUTS", "build_mnet", "mnet_loss"]

#: Names of the side outputs, coarsest (1/8 of the input, decoder level 4) first.
SIDE_OUTPUTS = ("side_1", "side_2", "side_3", "side_4")


def build_mnet(
    input_shape: tuple[int, int, int] = (224, 224, 1),
    *,
    num_classes: int = 2,
    filters: tuple[int, ...] = (32, 64, 128, 256, 512),
    batch_norm: bool = True,
    name: str = "mnet",
) -> keras.Model:
    """Build the M-net of Fu et al. [1]_ (paper 2.3, Fig. 5, 6, Eq. 7).

    Parameters
    ----------
    input_shape : tuple of 3 int, optional
        ``(height, width, channels)``; height and width must be multiples of 16 (four
        poolings). Default ``(224, 224, 1)``, the patch ``Ip``; the whole-image
        "Original M-net" baseline uses ``(512, 256, 1)``.
    num_classes : int, optional
        Classes of each softmax, background included. Default 2 (background, the centre
        vertebra); the whole-image baseline uses 6 (background, L1..L5).
    filters : tuple of 5 int, optional
        Channels of the four encoder levels and of the bottleneck. The scaled-input
        convolutions use ``filters[1:4]`` and the decoder mirrors the encoder. Default
        ``(32, 64, 128, 256, 512)`` (Fig. 6); ``(8, 16, 32, 64, 128)`` trains on a CPU.
    batch_norm : bool, optional
        Batch normalisation after every 3x3 convolution, which then has no bias
        (paper 3.2). Default True. With ``batch_norm=False`` the model has exactly the
        parameters of the reference implementation.
    name : str, optional
        Model name. Default ``"mnet"``.

    Returns
    -------
    model : keras.Model
        Input ``(N, H, W, C)`` float32 in [0, 1]. Output dict with keys ``"side_1"``
        (from the 1/8-scale decoder level) .. ``"side_4"`` (full scale) and ``"fused"``,
        each ``(N, H, W, num_classes)`` float32 softmax probabilities; ``fused`` is the
        mean of the four side outputs (Eq. 7).

    Notes
    -----
    The loss of Eq. 8 (mean over the four sides of the pixel-averaged cross-entropy,
    nothing on ``fused``) is :func:`mnet_loss`.
    Parameters at full width, 224 x 224 x 1 input, 2 classes: 8,539,080 without batch
    normalisation (the reference topology), 8,549,256 with it (of which 8,542,472
    trainable).

    References
    ----------
    .. [1] See the module docstring.
    """
    builder = "build_mnet"
    input_shape = validate_input_shape(input_shape, multiple=16, builder=builder)
    num_classes = validate_num_classes(num_classes, builder=builder)
    filters = validate_filters(filters, builder=builder)

    inputs = keras.Input(shape=input_shape, name="image")
    # Multi-scale input: average pooling to 1/2, 1/4, 1/8 of the input.
    scaled = [inputs]
    for level in range(2, 5):
        scaled.append(keras.layers.AveragePooling2D(2, name=f"scale{level}_avgpool")(scaled[-1]))

    x = inputs
    skips = []
    for level in range(1, 5):
        if level > 1:
            side_in = conv_block(
                scaled[level - 1],
                filters[level - 1],
                batch_norm=batch_norm,
                name=f"enc{level}_input",
                n_convs=1,
            )
            x = keras.layers.Concatenate(axis=-1, name=f"enc{level}_concat")([side_in, x])
        x = conv_block(x, filters[level - 1], batch_norm=batch_norm, name=f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, filters[4], batch_norm=batch_norm, name="bottleneck")

    sides = {}
    for i, level in enumerate(reversed(range(1, 5))):
        x = up_block(x, skips[level - 1], filters[level - 1], batch_norm=batch_norm, name=f"dec{level}")
        side_name = SIDE_OUTPUTS[i]
        logits = keras.layers.Conv2D(num_classes, 1, name=f"{side_name}_logits")(x)
        factor = 2 ** (level - 1)
        if factor > 1:
            logits = keras.layers.UpSampling2D(factor, interpolation="bilinear", name=f"{side_name}_up")(
                logits
            )
        sides[side_name] = keras.layers.Softmax(axis=-1, name=side_name)(logits)
    # Eq. 7: the final map is the mean of the four side outputs.
    fused = keras.layers.Average(name="fused")([sides[k] for k in SIDE_OUTPUTS])
    return keras.Model(inputs, {**sides, "fused": fused}, name=name)


def mnet_loss() -> dict:
    """The M-net loss, Eq. 8, as a dict for ``model.compile(loss=...)``.

    Returns
    -------
    loss : dict
        ``side_1`` .. ``side_4``: pixel-averaged categorical cross-entropy with weight
        0.25 each (the mean over the four sides); ``fused``: weight 0, so that the fused
        map (Eq. 7) is logged but trained only through the sides.
    """
    loss = {k: WeightedCategoricalCrossentropy(1.0 / len(SIDE_OUTPUTS)) for k in SIDE_OUTPUTS}
    loss["fused"] = WeightedCategoricalCrossentropy(0.0)
    return loss
