"""Pre-processing of a lateral lumbar radiograph (paper section 2.1).

The radiograph is scaled to fit the original-space grid ``Io`` (3072 x 1536) with one
scale for rows and columns, contrast-enhanced with CLAHE [1]_, smoothed with a Gaussian
filter and padded to ``Io``; ``Io`` resized to 512 x 256 is ``I``, the Pose-net input. The
paper resized its films (about 3000 x 1500) to ``Io`` directly, which kept their
proportions; keeping the aspect ratio explicitly does the same for films of any shape
(a 1:1 film is not squeezed to half its width) and gives the paper's result for 2:1 films.
:class:`Geometry` maps any point between the input image, ``Io`` and ``I`` exactly, so
that every coordinate the workflow reports can be traced back to the input pixels.

References
----------
.. [1] S. M. Pizer et al., "Adaptive histogram equalization and its variations",
       Computer Vision, Graphics, and Image Processing 39 (1987) 355-368.
       :DOI:`10.1016/S0734-189X(87)80186-X`
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import exposure, transform

__all__ = [
    "IO_SHAPE",
    "I_SHAPE",
    "Geometry",
    "fit_shape",
    "normalise_intensity",
    "preprocess_image",
    "resize_to_i",
    "resize_image",
]

#: Shape (rows, cols) of the original-space image ``Io`` (docs/method.md section 1).
IO_SHAPE = (3072, 1536)
#: Shape (rows, cols) of the Pose-net input ``I``.
I_SHAPE = (512, 256)


def fit_shape(src_shape, dst_shape) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``src_shape`` goes when scaled to fit ``dst_shape`` and padded.

    One scale for rows and columns, ``s = min(dst_rows / src_rows, dst_cols / src_cols)``;
    the scaled image, ``round(src * s)`` pixels on each side, is centred and the rest of
    ``dst_shape`` is padding. A source of the target's aspect ratio fills the target
    exactly, with no padding.

    Parameters
    ----------
    src_shape, dst_shape : tuple of int
        ``(rows, cols)``.

    Returns
    -------
    content : tuple of int
        ``(rows, cols)`` of the scaled image inside the target.
    offset : tuple of int
        ``(top, left)``: padding rows above and padding columns left of it.

    Examples
    --------
    >>> fit_shape((2500, 2500), (3072, 1536))
    ((1536, 1536), (768, 0))
    >>> fit_shape((2400, 1200), (3072, 1536))
    ((3072, 1536), (0, 0))
    """
    (rs, cs), (rd, cd) = _check_shape("src_shape", src_shape), _check_shape("dst_shape", dst_shape)
    scale = min(rd / rs, cd / cs)
    rows = min(rd, max(1, int(round(rs * scale))))
    cols = min(cd, max(1, int(round(cs * scale))))
    return (rows, cols), ((rd - rows) // 2, (cd - cols) // 2)


def _check_shape(name, shape) -> tuple[int, int]:
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two positive ints (rows, cols); got {shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{name} must be two positive ints (rows, cols); got {shape}")
    return shape


@dataclass(frozen=True)
class Geometry:
    """Exact point mapping between the input image, ``Io`` and ``I``.

    The input is scaled to fit ``Io`` with one scale for rows and columns, so anatomy
    keeps its proportions, and centred; the rest of ``Io`` is padding (see
    :func:`fit_shape`). ``I`` is ``Io`` fitted the same way into ``i_shape`` (with the
    default shapes, a factor-6 shrink on both axes and no padding). An input of exactly
    the ``Io`` aspect ratio (2:1, like the paper's films) fills ``Io`` with no padding.

    Points are ``(x, y)`` = (column, row) with pixel centres at integer coordinates. Each
    step scales pixel-edge coordinates ``u = x + 0.5`` by the content's size over the
    source's size and adds the padding: ``x_io = (x + 0.5) * sx + left - 0.5``, the same
    sampling as :func:`resize_image`; the inverse is exact up to floating point. The
    scales of rows and columns differ only by the rounding of the content's size to
    whole pixels (less than one pixel over the image).

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
    >>> g.padding("io")  # (top, bottom, left, right) in Io pixels
    (566, 566, 0, 0)
    """

    input_shape: tuple[int, int]
    io_shape: tuple[int, int] = IO_SHAPE
    i_shape: tuple[int, int] = I_SHAPE

    def __post_init__(self):
        for name in ("input_shape", "io_shape", "i_shape"):
            object.__setattr__(self, name, _check_shape(name, getattr(self, name)))

    def _shape(self, space: str) -> tuple[int, int]:
        shapes = {"input": self.input_shape, "io": self.io_shape, "i": self.i_shape}
        if space not in shapes:
            raise ValueError(f"space must be one of {sorted(shapes)}; got {space!r}")
        return shapes[space]

    def content(self, space: str) -> tuple[int, int]:
        """``(rows, cols)`` of the image's content in ``space`` (``"io"`` or ``"i"``)."""
        return self._fit(space)[0]

    def padding(self, space: str) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` padding in pixels of ``space``.

        For ``"i"`` this is the padding added when fitting ``Io`` into ``I``; the padding
        of ``Io`` itself shows in ``I`` scaled by ``scale("io", "i")``.
        """
        (rows, cols), (top, left) = self._fit(space)
        rd, cd = self._shape(space)
        return top, rd - rows - top, left, cd - cols - left

    def _fit(self, space: str):
        if space == "io":
            return fit_shape(self.input_shape, self.io_shape)
        if space == "i":
            return fit_shape(self.io_shape, self.i_shape)
        if space == "input":
            return self.input_shape, (0, 0)
        raise ValueError(f"space must be one of ['i', 'input', 'io']; got {space!r}")

    def _affine(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``, per axis ``(x, y)``: ``u_space = a * u_input + b`` for edge coordinates."""
        a, b = np.ones(2), np.zeros(2)
        steps = {"input": (), "io": ("io",), "i": ("io", "i")}
        if space not in steps:
            raise ValueError(f"space must be one of {sorted(steps)}; got {space!r}")
        src = self.input_shape
        for step in steps[space]:
            (rows, cols), (top, left) = self._fit(step)
            k = np.array([cols / src[1], rows / src[0]])
            a, b = a * k, b * k + np.array([left, top], dtype=np.float64)
            src = self._shape(step)
        return a, b

    def scale(self, src: str, dst: str) -> np.ndarray:
        """Per-axis factors ``(sx, sy)`` from space ``src`` to space ``dst``."""
        (a_src, _), (a_dst, _) = self._affine(src), self._affine(dst)
        return a_dst / a_src

    def offset(self, src: str, dst: str) -> np.ndarray:
        """``(ox, oy)`` in ``dst`` pixels: ``x_dst + 0.5 = (x_src + 0.5) * scale + offset``."""
        (a_src, b_src), (a_dst, b_dst) = self._affine(src), self._affine(dst)
        return b_dst - b_src * (a_dst / a_src)

    def map(self, points, src: str, dst: str) -> np.ndarray:
        """Map ``(..., 2)`` points ``(x, y)`` from space ``src`` to space ``dst``.

        ``src`` and ``dst`` are ``"input"``, ``"io"`` or ``"i"``. Points in the padding
        of ``Io`` or ``I`` map to points outside the input image (see :meth:`inside`).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1:] != (2,):
            raise ValueError(f"points must have shape (..., 2); got {pts.shape}")
        (a_src, b_src), (a_dst, b_dst) = self._affine(src), self._affine(dst)
        return ((pts + 0.5) - b_src) / a_src * a_dst + b_dst - 0.5

    def input_to(self, space: str, points) -> np.ndarray:
        """Map input-image points to ``space``."""
        return self.map(points, "input", space)

    def to_input(self, space: str, points) -> np.ndarray:
        """Map points of ``space`` back to input-image pixels."""
        return self.map(points, space, "input")

    def inside(self, space: str, points) -> np.ndarray:
        """Whether each ``(..., 2)`` point of ``space`` lies on the input image (not padding)."""
        pts = self.to_input(space, points)
        rows, cols = self.input_shape
        return ((pts[..., 0] >= -0.5) & (pts[..., 0] <= cols - 0.5)
                & (pts[..., 1] >= -0.5) & (pts[..., 1] <= rows - 0.5))

    def film_box(self, space: str) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: the outer edges of the input image in pixels of ``space``."""
        rows, cols = self.input_shape
        (x0, y0), (x1, y1) = self.input_to(space, [[-0.5, -0.5], [cols - 0.5, rows - 0.5]])
        return float(x0), float(y0), float(x1), float(y1)

    def pixel_spacing(self, space: str, input_spacing_mm) -> float | None:
        """Millimetres per pixel of ``space`` from the input's ``(row_mm, col_mm)``.

        The geometric mean of the two axes (they differ by the rounding of the content's
        size at most); None when ``input_spacing_mm`` is None or empty.
        """
        if input_spacing_mm is None or len(input_spacing_mm) == 0:
            return None
        row_mm, col_mm = (float(v) for v in input_spacing_mm)
        if not (row_mm > 0 and col_mm > 0):
            raise ValueError(f"input_spacing_mm must be two positive numbers; got "
                             f"{input_spacing_mm!r}")
        sx, sy = self.scale("input", space)
        return float(np.sqrt(row_mm / sy * col_mm / sx))

    def paste_boxes(self, boxes, space: str) -> np.ndarray:
        """Eq. 6 boxes ``(cx, cy, side)`` in ``Io`` as :func:`lumbar_core.crop.paste_masks` needs them.

        ``paste_masks(masks, geometry.paste_boxes(boxes, space), shape,
        scale=geometry.scale("io", space))`` pastes into the grid of ``space``: the paste
        maps output pixels to ``Io`` by the scale alone, so the boxes are shifted by the
        padding of ``Io`` (a no-op for ``"io"`` and for inputs that fill ``Io``).
        """
        boxes = np.array(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 3:
            raise ValueError(f"boxes must have shape (K, 3); got {boxes.shape}")
        shift = self.offset("io", space) / self.scale("io", space)
        boxes[:, :2] += shift
        return boxes

    def resample(self, image, src: str, dst: str, *, order: int = 1) -> np.ndarray:
        """Resample a 2-D image of space ``src`` onto the grid of ``dst`` by the exact mapping.

        Without padding between the two spaces this is :func:`resize_image`. Pixels of
        ``dst`` outside ``src``'s grid take the nearest edge value.
        """
        image = np.asarray(image)
        if image.shape != self._shape(src):
            raise ValueError(f"image must have the {src} shape {self._shape(src)}; "
                             f"got {image.shape}")
        shape = self._shape(dst)
        if not np.any(self.offset(src, dst)):
            return resize_image(image, shape, order=order)
        k = self.scale(dst, src)[::-1]  # (rows, cols)
        c = self.offset(dst, src)[::-1]
        out = ndimage.affine_transform(image.astype(np.float32) if order else image, k,
                                       offset=0.5 * k + c - 0.5, output_shape=shape,
                                       order=order, mode="nearest")
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable form, with the scale and padding of ``Io`` and ``I``.

        :meth:`from_dict` reads it back. ``io_scale`` is ``(sx, sy)`` from the input to
        ``Io``, ``i_scale`` from ``Io`` to ``I``; paddings are ``(top, bottom, left,
        right)`` in pixels of their own space.
        """
        return {"input_shape": list(self.input_shape), "io_shape": list(self.io_shape),
                "i_shape": list(self.i_shape),
                "io_scale": self.scale("input", "io").tolist(),
                "io_padding": list(self.padding("io")),
                "i_scale": self.scale("io", "i").tolist(),
                "i_padding": list(self.padding("i"))}

    @classmethod
    def from_dict(cls, data: dict) -> "Geometry":
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            If the recorded scale or padding differ from the mapping this version
            computes (a geometry written by a version that stretched the input): the
            image must be pre-processed again.
        """
        try:
            geometry = cls(**{k: tuple(data[k]) for k in ("input_shape", "io_shape", "i_shape")
                              if k in data})
        except TypeError as err:
            raise ValueError(f"geometry record lacks a shape: {err}") from None
        current = geometry.to_dict()
        for key in ("io_scale", "io_padding", "i_scale", "i_padding"):
            recorded = data.get(key)
            if recorded is None and geometry._stretch_equivalent():
                continue
            if recorded is None or not np.allclose(recorded, current[key], rtol=1e-12, atol=0):
                raise ValueError(
                    f"geometry record {key} = {recorded} does not match this version's "
                    f"{current[key]} (written by a version that stretched the input?); "
                    "run the preprocess step again")
        return geometry

    def _stretch_equivalent(self) -> bool:
        """Whether the input fills ``Io`` and ``Io`` fills ``I`` (no padding anywhere)."""
        return not any(self.padding("io")) and not any(self.padding("i"))


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
    """Paper 2.1: resize to ``Io``, CLAHE, Gaussian filter; aspect ratio kept.

    The radiograph is scaled to fit ``Io`` with one scale for rows and columns
    (:func:`fit_shape`), enhanced and smoothed, then centred in ``Io`` with zero padding
    around it. Enhancing before padding keeps the padding out of CLAHE's histograms and
    the Gaussian's border, so the film's pixels do not depend on how much padding it
    gets; the zeros are the value :func:`lumbar_core.crop.extract_patch` gives outside
    ``Io``, so a network sees one value wherever there is no film. CLAHE's tiles are
    sized in ``Io`` pixels (1/8 of each side of ``Io`` by default), so a vertebra meets
    tiles of the same size whatever the film's aspect ratio. A film of exactly the ``Io``
    aspect ratio (2:1) fills ``Io``: the result is that of the paper's plain resize.

    Parameters
    ----------
    raw : (M, N) ndarray
        The radiograph as read (bone bright, full bit depth).
    io_shape : tuple of int
        Target grid, default ``(3072, 1536)``.
    clahe_kernel_size : int or None
        CLAHE tile size in ``Io`` pixels; None is 1/8 of each side of ``Io`` (scikit-image's
        default for an image filling ``Io``).
    clahe_clip_limit : float
        CLAHE clip limit in ``[0, 1]``; larger is more contrast. Default 0.01.
    gaussian_sigma : float
        Gaussian smoothing in ``Io`` pixels against background noise; default 2.0.
    min_size : int
        Smallest accepted input side in pixels; default 64. Smaller images cannot hold five
        vertebrae at any useful resolution.

    Returns
    -------
    io : (3072, 1536) float32 ndarray in ``[0, 1]``; where the film lies is given by
    :class:`Geometry` (``content`` and ``padding``).
    """
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"image must be 2-D; got shape {raw.shape}")
    if min(raw.shape) < min_size:
        raise ValueError(f"image is too small: {raw.shape[0]} x {raw.shape[1]} px "
                         f"(each side must be at least {min_size} px)")
    if gaussian_sigma < 0:
        raise ValueError(f"gaussian_sigma must be >= 0; got {gaussian_sigma}")
    io_shape = _check_shape("io_shape", io_shape)
    (rows, cols), (top, left) = fit_shape(raw.shape, io_shape)
    if clahe_kernel_size is None:
        clahe_kernel_size = tuple(max(s // 8, 1) for s in io_shape)
    image = normalise_intensity(raw)
    film = resize_image(image, (rows, cols), order=1)
    film = exposure.equalize_adapthist(film, kernel_size=clahe_kernel_size,
                                       clip_limit=clahe_clip_limit).astype(np.float32)
    if gaussian_sigma > 0:
        film = ndimage.gaussian_filter(film, gaussian_sigma)
    np.clip(film, 0.0, 1.0, out=film)
    if (rows, cols) == io_shape:
        return film
    io = np.zeros(io_shape, dtype=np.float32)
    io[top:top + rows, left:left + cols] = film
    return io


def resize_to_i(io, *, i_shape=I_SHAPE) -> np.ndarray:
    """Fit ``Io`` into ``I`` (512 x 256 by default), float32 in ``[0, 1]``.

    With the default shapes this is a plain factor-6 shrink; other shapes are fitted with
    one scale and zero padding, as :class:`Geometry` maps them.
    """
    io = np.asarray(io, dtype=np.float32)
    if io.ndim != 2:
        raise ValueError(f"io must be 2-D; got shape {io.shape}")
    i_shape = _check_shape("i_shape", i_shape)
    (rows, cols), (top, left) = fit_shape(io.shape, i_shape)
    small = np.clip(resize_image(io, (rows, cols), order=1), 0.0, 1.0)
    if (rows, cols) == i_shape:
        return small
    out = np.zeros(i_shape, dtype=np.float32)
    out[top:top + rows, left:left + cols] = small
    return out
