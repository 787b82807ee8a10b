"""Pose-net: two-stage confidence-map regression of the lumbar centres (paper 2.2).

Stage 1, ``fL5(I)``, maps the image ``I`` to the confidence map ``yL5`` of the L5 centre
(Eq. 1); stage 2, ``fL1-5(I*, yL5)``, maps an intermediate feature map ``I*`` of stage 1
together with ``yL5`` to the confidence map ``yL1-5`` of all five centres. Both stages
are trained together on the sum of their squared errors (Eq. 2, 3; see
:func:`posenet_loss`).

Decision (docs/method.md section 2; Fig. 3 is illegible): a convolutional pose machine [1]_. Each stage
is an encoder-decoder of conv(3x3)-BN-ReLU blocks (two per level) with 2x2 max pooling,
decoded back to the input size by 2x2 transposed convolutions with skip connections
(as in the U-net [2]_); ``I*`` is the last decoder feature map of stage 1, and each
stage ends in a linear 1x1 convolution. Batch normalisation follows paper 3.2.

Receptive field: one stage of depth ``D`` sees ``13 * 2**D - 8`` pixels (408 for the
default ``D = 5``), so stage 2 alone spans more than the lumbar spine of a 512 x 256
image (L1 to S1 is roughly 240 rows) and can count the levels up from L5 instead of
mistaking T12 for L1; through both stages ``yL1-5`` sees ``26 * 2**D - 17`` pixels.

References
----------
.. [1] S.-E. Wei, V. Ramakrishna, T. Kanade, Y. Sheikh, "Convolutional pose machines",
       CVPR 2016, :doi:`10.1109/CVPR.2016.511`.
.. [2] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional networks for
       biomedical image segmentation", MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`.
"""

from __future__ import annotations

import keras

from .losses import heatmap_sse
from .unet import conv_block, up_block, validate_input_shape

__all__ = ["build_posenet", "posenet_loss"]

_MAX_DEPTH = 8


def _receptive_field(depth):
    """Receptive field (pixels, one side to the other) of one stage of ``depth`` levels.

    Encoder level ``l`` (two 3x3 convolutions, then a 2x2 pool) adds ``5 * 2**l``, the
    bottleneck ``4 * 2**depth``, decoder level ``l`` ``4 * 2**l``; transposed 2x2
    convolutions with stride 2 add nothing. In all ``13 * 2**depth - 8``.
    """
    return 13 * 2**depth - 8


def _encoder_decoder(x, *, width, depth, name):
    """One stage: encoder-decoder; returns the full-resolution decoder features."""
    channels = [min(width * 2**level, 16 * width) for level in range(depth + 1)]
    skips = []
    for level in range(depth):
        x = conv_block(x, channels[level], batch_norm=True, name=f"{name}_enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"{name}_enc{level}_pool")(x)
    x = conv_block(x, channels[depth], batch_norm=True, name=f"{name}_bottleneck")
    for level in reversed(range(depth)):
        x = up_block(x, skips[level], channels[level], batch_norm=True, name=f"{name}_dec{level}")
    return x


def build_posenet(
    input_shape: tuple[int, int, int] = (512, 256, 1),
    *,
    width: int = 8,
    depth: int = 5,
    downsample: int = 1,
    name: str = "posenet",
) -> keras.Model:
    """Build the two-stage Pose-net (paper 2.2, Eq. 1-3).

    Parameters
    ----------
    input_shape : tuple of 3 int, optional
        ``(height, width, channels)`` of ``I``; height and width must be multiples of
        ``2**depth``. Default ``(512, 256, 1)``.
    width : int, optional
        Channels of the first level; they double per level up to ``16 * width``.
        Default 8 (trains on a CPU); the paper configuration uses 32.
    depth : int, optional
        Number of 2x2 poolings per stage, 1 to 8. Default 5 (512 x 256 -> 16 x 8 at the
        bottleneck, receptive field 408 pixels per stage). Smaller values shrink the
        receptive field to ``13 * 2**depth - 8``: keep it above the height of the spine.
    downsample : int, optional
        Both stages work on ``I`` average-pooled by this factor, and the two maps are
        upsampled bilinearly back to the input size, so the outputs are still
        ``H x W``. 1 (default, the paper's reading) keeps full resolution; 4 makes the
        network about 16 times cheaper, which is what lets the default configuration
        train on a CPU. The receptive field then counts in pooled pixels:
        ``downsample * (13 * 2**depth - 8)`` input pixels.
    name : str, optional
        Model name. Default ``"posenet"``.

    Returns
    -------
    model : keras.Model
        Input ``(N, H, W, C)`` float32 in [0, 1] (``I``). Output dict ``{"y_l5": (N, H, W,
        1), "y_l15": (N, H, W, 1)}`` float32, the linear (unbounded) confidence maps
        ``yL5 = fL5(I)`` and ``yL1-5 = fL1-5(I*, yL5)``.

    Notes
    -----
    The kernels of the two 1x1 output convolutions start at zero, so an untrained
    model outputs zero maps and the first loss is the energy of the targets (about
    ``pi * sigma^2 / 2`` per centre) rather than a sum of random values over every
    pixel. Batch normalisation uses momentum 0.9 (see the U-net module).

    Parameters at 512 x 256 x 1: 2,586,322 for ``width=8`` (2,581,330 trainable) and
    41,253,442 for ``width=32`` (41,233,474 trainable).
    """
    builder = "build_posenet"
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= _MAX_DEPTH:
        raise ValueError(f"{builder}: depth must be an int from 1 to {_MAX_DEPTH}. Received: depth={depth!r}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"{builder}: width must be a positive int. Received: width={width!r}")
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise ValueError(f"{builder}: downsample must be a positive int. "
                         f"Received: downsample={downsample!r}")
    input_shape = validate_input_shape(input_shape, multiple=downsample * 2**depth,
                                        builder=builder)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if downsample > 1:
        x = keras.layers.AveragePooling2D(downsample, name="stem_pool")(x)
    # Decision (docs/method.md section 2): convolutional pose machine, stage 1 = encoder-decoder.
    features = _encoder_decoder(x, width=width, depth=depth, name="s1")
    y_l5 = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="y_l5_map")(features)
    # Stage 2 input I*: the last decoder features of stage 1 with yL5 appended.
    stage2_in = keras.layers.Concatenate(axis=-1, name="s2_input")([features, y_l5])
    features2 = _encoder_decoder(stage2_in, width=width, depth=depth, name="s2")
    y_l15 = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="y_l15_map")(features2)
    if downsample > 1:
        up = {"size": downsample, "interpolation": "bilinear"}
        y_l5 = keras.layers.UpSampling2D(**up, name="y_l5")(y_l5)
        y_l15 = keras.layers.UpSampling2D(**up, name="y_l15")(y_l15)
    else:
        y_l5 = keras.layers.Identity(name="y_l5")(y_l5)
        y_l15 = keras.layers.Identity(name="y_l15")(y_l15)
    return keras.Model(inputs, {"y_l5": y_l5, "y_l15": y_l15}, name=name)


def posenet_loss() -> dict:
    """The Pose-net loss, Eq. 2 + Eq. 3, as a dict for ``model.compile(loss=...)``.

    Returns
    -------
    loss : dict
        ``{"y_l5": heatmap_sse, "y_l15": heatmap_sse}``: per image the sum of squared
        errors of each map, averaged over the batch; both outputs weigh 1.
    """
    return {"y_l5": heatmap_sse, "y_l15": heatmap_sse}
