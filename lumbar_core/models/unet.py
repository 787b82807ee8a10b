"""The plain U-net baseline (paper 3.3, Table 2) and the convolution blocks shared
by all networks of the package.

The U-net of Ronneberger et al. [1]_ with the channel widths of the M-net (paper 2.3,
Fig. 6): encoder 32, 64, 128, 256, bottleneck 512, decoder 256, 128, 64, 32, each level
two 3x3 convolutions, 2x2 max pooling down and 2x2 transposed convolutions up. It is the
"U-net" of Table 2, both per vertebra patch (224 x 224, 2 classes) and on the whole
512 x 256 image (the "Original U-net" row, 6 classes: background + L1..L5).

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional networks for
       biomedical image segmentation", MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from .losses import WeightedCategoricalCrossentropy

__all__ = ["build_unet", "unet_loss", "conv_block", "up_block", "validate_filters",
           "validate_input_shape", "validate_num_classes"]


def conv_block(x, filters, *, batch_norm, name, n_convs=2):
    """Apply ``n_convs`` times conv(3x3, 'same') [-> BN] -> ReLU.

    With batch normalisation the convolutions carry no bias (BN's beta replaces it).
    BN momentum 0.9 (Keras' default is 0.99): with small cohorts an epoch is a few
    steps, and the moving statistics, which the validation loss of early stopping
    uses, must settle within tens of steps, not hundreds.
    Layers are named ``{name}_conv{i}``, ``{name}_bn{i}``, ``{name}_relu{i}``.
    """
    for i in range(1, n_convs + 1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def up_block(x, skip, filters, *, batch_norm, name):
    """2x2 transposed convolution (stride 2), concatenation with ``skip``, two convs."""
    x = keras.layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_upconv")(x)
    x = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, batch_norm=batch_norm, name=name)


def validate_input_shape(input_shape, *, multiple, builder):
    """Check ``input_shape`` is (H, W, C) with H, W multiples of ``multiple``."""
    if (
        not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in input_shape)
        or min(input_shape) < 1
    ):
        raise ValueError(
            f"{builder}: input_shape must be a tuple of three positive ints "
            f"(height, width, channels). Received: input_shape={input_shape!r}"
        )
    height, width, _ = input_shape
    if height % multiple or width % multiple:
        raise ValueError(
            f"{builder}: input height and width must be multiples of {multiple} "
            f"(one halving per pooling level); e.g. (224, 224, 1) or (512, 256, 1) work. "
            f"Received: input_shape={tuple(input_shape)!r}"
        )
    return tuple(input_shape)


def validate_filters(filters, *, builder):
    """Check ``filters`` is five positive ints (four encoder levels + bottleneck)."""
    if (
        not isinstance(filters, Sequence)
        or len(filters) != 5
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in filters)
    ):
        raise ValueError(
            f"{builder}: filters must be five positive ints (four encoder levels and "
            f"the bottleneck, e.g. (32, 64, 128, 256, 512)). Received: filters={filters!r}"
        )
    return tuple(filters)


def validate_num_classes(num_classes, *, builder):
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(
            f"{builder}: num_classes must be an int >= 2 (background included). "
            f"Received: num_classes={num_classes!r}"
        )
    return num_classes


def build_unet(
    input_shape: tuple[int, int, int] = (224, 224, 1),
    *,
    num_classes: int = 2,
    filters: tuple[int, ...] = (32, 64, 128, 256, 512),
    batch_norm: bool = True,
    name: str = "unet",
) -> keras.Model:
    """Build the plain U-net [1]_ of Table 2.

    Parameters
    ----------
    input_shape : tuple of 3 int, optional
        ``(height, width, channels)``; height and width must be multiples of 16 (four
        poolings). Default ``(224, 224, 1)`` (a vertebra patch ``Ip``); the whole-image
        baseline uses ``(512, 256, 1)``.
    num_classes : int, optional
        Number of classes of the softmax, background included. Default 2 (patch:
        background / vertebra); the whole-image baseline uses 6 (background, L1..L5).
    filters : tuple of 5 int, optional
        Channels of the four encoder levels and of the bottleneck; the decoder mirrors
        them. Default ``(32, 64, 128, 256, 512)`` (paper width); ``(8, 16, 32, 64, 128)``
        is a quarter-width model that trains on a CPU.
    batch_norm : bool, optional
        Batch normalisation after every 3x3 convolution (paper 3.2). Default True.
    name : str, optional
        Model name. Default ``"unet"``.

    Returns
    -------
    model : keras.Model
        Input ``(N, H, W, C)`` float32 in [0, 1]; output dict ``{"fused": (N, H, W,
        num_classes)}`` of softmax class probabilities. The key is "fused" so that the
        U-net and the M-net are used alike.
    """
    builder = "build_unet"
    input_shape = validate_input_shape(input_shape, multiple=16, builder=builder)
    num_classes = validate_num_classes(num_classes, builder=builder)
    filters = validate_filters(filters, builder=builder)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(4):
        x = conv_block(x, filters[level], batch_norm=batch_norm, name=f"enc{level + 1}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = conv_block(x, filters[4], batch_norm=batch_norm, name="bottleneck")
    for level in reversed(range(4)):
        x = up_block(x, skips[level], filters[level], batch_norm=batch_norm, name=f"dec{level + 1}")
    logits = keras.layers.Conv2D(num_classes, 1, name="fused_logits")(x)
    fused = keras.layers.Softmax(axis=-1, name="fused")(logits)
    return keras.Model(inputs, {"fused": fused}, name=name)


def unet_loss() -> dict:
    """The U-net loss for ``model.compile(loss=...)``.

    Returns
    -------
    loss : dict
        ``{"fused": ...}``: the pixel-averaged categorical cross-entropy (Eq. 8 with a
        single output).
    """
    return {"fused": WeightedCategoricalCrossentropy(1.0)}
