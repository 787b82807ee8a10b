"""Pre-processing of a lateral lumbar radiograph (paper section 2.1).

The radiograph is resized to the original-space grid ``Io`` (3072 x 1536), contrast-enhanced
with CLAHE [1]_ and smoothed with a Gaussian filter; ``Io`` resized to 512 x 256 is ``I``,
the Pose-net input. :class:`Geometry` maps any point between the input image, ``Io`` and
``I`` exactly, so that every coordinate the workflow reports can be traced back to the
input pixels.

References
----------
.. [1] S. M. Pizer et al., "Adaptive histogram equalization and its variations",
       Computer Vision, Graphics, and Image Processing 39 (1987) 355-368.
       :DOI:`10.1016/S0734-189X(87)80186-X`
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from skimage import exposure, transform

__all__ = [
    "IO_SHAPE",
    "I_SHAPE",
    "Geometry",
    "normalise_intensity",
    "preprocess_image",
    "resize_to_i",
    "resize_image",
]

#: Shape (rows, cols) of the original-space image ``Io`` (docs/method.md section 1).
IO_SHAPE = (3072, 1536)
#: Shape (rows, cols) of the Pose-net input ``I``.
I_SHAPE = (512, 256)


@dataclass(frozen=True)
class Geometry:
    """Exact point mapping between the input image, ``Io`` and ``I``.

    Each resize scales rows and columns independently (the input's aspect ratio is
    not kept, as in the paper). Points are ``(x, y)`` = (column, row) with pixel
    centres at integer coordinates, so a resize by factor ``s`` maps
    ``x -> (x + 0.5) * s - 0.5``; the inverse is exact up to floating point.

    Parameters
    ----------
    input_shape : tuple of int
        ``(rows, cols)`` of the input image.
    io_shape, i_shape : tuple of int
        Shapes of ``Io`` and ``I``; default ``IO_SHAPE`` and ``I_SHAPE``.

    Examples
    --------
    >>> g = Geometry((2400, 1900))
    >>> p = g.input_to("i", [[950.0, 1200.0]])
    >>> np.allclose(g.to_input("i", p), [[950.0, 1200.0]])
    True
    """

    input_shape: tuple[int, int]
    io_shape: tuple[int, int] = IO_SHAPE
    i_shape: tuple[int, int] = I_SHAPE

    def __post_init__(self):
        for name in ("input_shape", "io_shape", "i_shape"):
            shape = tuple(int(v) for v in getattr(self, name))
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"{name} must be two positive ints (rows, cols); got {shape}")
            object.__setattr__(self, name, shape)

    def _shape(self, space: str) -> tuple[int, int]:
        shapes = {"input": self.input_shape, "io": self.io_shape, "i": self.i_shape}
        if space not in shapes:
            raise ValueError(f"space must be one of {sorted(shapes)}; got {space!r}")
        return shapes[space]

    def scale(self, src: str, dst: str) -> np.ndarray:
        """Per-axis factors ``(sx, sy)`` from space ``src`` to space ``dst``."""
        (rs, cs), (rd, cd) = self._shape(src), self._shape(dst)
        return np.array([cd / cs, rd / rs], dtype=np.float64)

    def map(self, points, src: str, dst: str) -> np.ndarray:
        """Map ``(..., 2)`` points ``(x, y)`` from space ``src`` to space ``dst``.

        ``src`` and ``dst`` are ``"input"``, ``"io"`` or ``"i"``.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1:] != (2,):
            raise ValueError(f"points must have shape (..., 2); got {pts.shape}")
        return (pts + 0.5) * self.scale(src, dst) - 0.5

    def input_to(self, space: str, points) -> np.ndarray:
        """Map input-image points to ``space``."""
        return self.map(points, "input", space)

    def to_input(self, space: str, points) -> np.ndarray:
        """Map points of ``space`` back to input-image pixels."""
        return self.map(points, space, "input")

    def to_dict(self) -> dict:
        """JSON-serialisable form (inverse: ``Geometry(**d)``)."""
        return {k: list(v) for k, v in asdict(self).items()}


def normalise_intensity(image, *, low_percentile: float = 0.5,
                        high_percentile: float = 99.5) -> np.ndarray:
    """Scale a raw radiograph to ``[0, 1]`` between two intensity percentiles.

    Percentiles rather than the minimum and maximum, so that collimation borders, text
    markers and hot pixels do not set the range.

    Parameters
    ----------
    image : (M, N) ndarray
        Raw values (any dtype, full bit depth; bone bright).
    low_percentile, high_percentile : float
        Percentiles mapped to 0 and 1; default 0.5 and 99.5.

    Returns
    -------
    (M, N) float32 ndarray in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the image is not 2-D, holds non-finite values or has no contrast.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D; got shape {image.shape}")
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds non-finite values (NaN or inf)")
    lo, hi = np.percentile(image, [low_percentile, high_percentile])
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        raise ValueError(f"image has no contrast: every pixel is {lo:g}")
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resize_image(image, shape, *, order: int = 1) -> np.ndarray:
    """Resize a 2-D image to ``shape`` with anti-aliasing when shrinking.

    Pixel-centre aligned like :class:`Geometry` (``skimage.transform.resize``).
    ``order=0`` (nearest) for label images, which are never anti-aliased.
    """
    image = np.asarray(image)
    labels = order == 0
    out = transform.resize(image, shape, order=order, mode="edge",
                           anti_aliasing=not labels and any(s < t for s, t in zip(shape, image.shape)),
                           preserve_range=True)
    return out.astype(image.dtype if labels else np.float32, copy=False)


def preprocess_image(raw, *, io_shape=IO_SHAPE, clahe_kernel_size=None,
                     clahe_clip_limit: float = 0.01, gaussian_sigma: float = 2.0,
                     min_size: int = 64) -> np.ndarray:
    """Paper 2.1: resize to ``Io``, CLAHE, Gaussian filter.

    Parameters
    ----------
    raw : (M, N) ndarray
        The radiograph as read (bone bright, full bit depth).
    io_shape : tuple of int
        Target grid, default ``(3072, 1536)``.
    clahe_kernel_size : int or None
        CLAHE tile size in ``Io`` pixels; None is scikit-image's default (1/8 of each side).
    clahe_clip_limit : float
        CLAHE clip limit in ``[0, 1]``; larger is more contrast. Default 0.01.
    gaussian_sigma : float
        Gaussian smoothing in ``Io`` pixels against background noise; default 2.0.
    min_size : int
        Smallest accepted input side in pixels; default 64. Smaller images cannot hold five
        vertebrae at any useful resolution.

    Returns
    -------
    io : (3072, 1536) float32 ndarray in ``[0, 1]``
    """
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"image must be 2-D; got shape {raw.shape}")
    if min(raw.shape) < min_size:
        raise ValueError(f"image is too small: {raw.shape[0]} x {raw.shape[1]} px "
                         f"(each side must be at least {min_size} px)")
    if gaussian_sigma < 0:
        raise ValueError(f"gaussian_sigma must be >= 0; got {gaussian_sigma}")
    image = normalise_intensity(raw)
    io = resize_image(image, io_shape, order=1)
    io = exposure.equalize_adapthist(io, kernel_size=clahe_kernel_size,
                                     clip_limit=clahe_clip_limit).astype(np.float32)
    if gaussian_sigma > 0:
        io = ndimage.gaussian_filter(io, gaussian_sigma)
    return np.clip(io, 0.0, 1.0, out=io)


def resize_to_i(io, *, i_shape=I_SHAPE) -> np.ndarray:
    """Resize ``Io`` to ``I`` (512 x 256 by default), float32 in ``[0, 1]``."""
    io = np.asarray(io, dtype=np.float32)
    if io.ndim != 2:
        raise ValueError(f"io must be 2-D; got shape {io.shape}")
    return np.clip(resize_image(io, i_shape, order=1), 0.0, 1.0)
