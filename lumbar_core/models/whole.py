"""Table 2's "Original" baselines: an M-net or U-net on the whole image ``I``.

The paper's rows "Orig UNet" and "Orig MNet" segment L1..L5 (6 classes, background
included) on the whole 512 x 256 image instead of on per-vertebra patches. At full
resolution one training step costs about as much as a whole Pose-net epoch on two CPU
cores, so the default configuration, like the Pose-net's (``build_posenet(...,
downsample=4)``), lets the baseline work on ``I`` average-pooled by ``downsample`` and
upsamples its class probabilities bilinearly back to ``I``: a convex combination of
probability vectors is still one, so the outputs stay distributions and the losses of
Eq. 8 apply unchanged. The ``paper`` configuration keeps ``downsample=1``.
"""

from __future__ import annotations

import keras

from .mnet import build_mnet, mnet_loss
from .unet import build_unet, unet_loss

__all__ = ["build_whole_image", "segmentation_network", "whole_image_loss"]

_ARCHS = {"mnet": (build_mnet, mnet_loss), "unet": (build_unet, unet_loss)}


def segmentation_network(arch: str, caller: str = "segmentation_network"):
    """``(builder, loss factory)`` of a segmentation network by name.

    ``"mnet"``: :func:`build_mnet` and :func:`mnet_loss`; ``"unet"``: :func:`build_unet`
    and :func:`unet_loss`. Anything else is a ValueError naming ``caller``.
    """
    if arch not in _ARCHS:
        raise ValueError(f"{caller}: arch must be 'mnet' or 'unet'. Received: arch={arch!r}")
    return _ARCHS[arch]


def build_whole_image(
    arch: str,
    input_shape: tuple[int, int, int] = (512, 256, 1),
    *,
    num_classes: int = 6,
    filters=(32, 64, 128, 256, 512),
    downsample: int = 1,
    name: str | None = None,
) -> keras.Model:
    """Build a whole-image M-net or U-net, optionally on a pooled copy of the input.

    Parameters
    ----------
    arch : {"mnet", "unet"}
        Which network (:func:`lumbar_core.models.build_mnet` or
        :func:`lumbar_core.models.build_unet`).
    input_shape : tuple of 3 int, optional
        ``(height, width, channels)`` of ``I``. Default ``(512, 256, 1)``.
    num_classes : int, optional
        Classes of the softmax outputs, background included. Default 6 (L1..L5).
    filters : sequence of 5 int, optional
        Channels per level, as for the builders.
    downsample : int, optional
        1 (default): the network itself, on ``I``. ``k > 1``: the network runs on ``I``
        average-pooled by ``k`` and every output is upsampled bilinearly by ``k``, so
        inputs and outputs keep the shape of ``I`` and about ``k**2`` times less work
        is done. ``height / k`` and ``width / k`` must suit the network's poolings.
    name : str, optional
        Model name; default ``"<arch>_whole"``.

    Returns
    -------
    model : keras.Model
        Input ``(N, H, W, C)``; outputs named as those of the network (``fused`` and,
        for the M-net, its side outputs), each ``(N, H, W, num_classes)``.
    """
    builder = "build_whole_image"
    build = segmentation_network(arch, builder)[0]
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise ValueError(f"{builder}: downsample must be a positive int. Received: downsample={downsample!r}")
    height, width, channels = input_shape
    if height % downsample or width % downsample:
        raise ValueError(f"{builder}: input height and width must be multiples of downsample="
                         f"{downsample}. Received: input_shape={tuple(input_shape)!r}")
    name = name or f"{arch}_whole"
    if downsample == 1:
        return build(tuple(input_shape), num_classes=num_classes, filters=tuple(filters), name=name)
    inner = build((height // downsample, width // downsample, channels), num_classes=num_classes,
                  filters=tuple(filters), name=f"{name}_core")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    pooled = keras.layers.AveragePooling2D(downsample, name="stem_pool")(inputs)
    outputs = inner(pooled)
    up = {"size": downsample, "interpolation": "bilinear"}
    return keras.Model(inputs, {key: keras.layers.UpSampling2D(**up, name=key)(value)
                                for key, value in outputs.items()}, name=name)


def whole_image_loss(arch: str):
    """The loss of :func:`build_whole_image`'s model: that of the network (Eq. 8)."""
    return segmentation_network(arch, "whole_image_loss")[1]()
