"""All file reading and writing of lumbar-xray-seg.

The rest of the library works on numpy arrays; this module is the only place that
touches files. It offers

- :func:`read_image`, one reader for PNG, TIFF, JPEG and DICOM radiographs that
  returns ``(image, properties)`` in the manner of nnU-Net's image readers: a 2-D
  float32 array with the full bit depth kept (DICOM rescale applied, ``MONOCHROME1``
  inverted so that bone is bright) and a small dictionary of properties that never
  carries patient data;
- atomic writers (:func:`atomic_path`) for JSON, ``.npz`` and TSV files: a reader
  never sees a half-written file (the PNG, TIFF and DICOM writers that only the
  synthetic cohort and the tests need live in :mod:`lumbar_core.phantom_io`);
- the annotation format of the project (one JSON per image, L1-L5 centres and
  8-point outlines, paper section 3.1), defined by ``schemas/annotation.schema.yaml``
  and checked by :func:`validate_annotation`, and an importer for the corner-point CSV
  files of the public BUU-LSPINE lateral set [1]_.

Every problem with a file's content raises a :class:`LumbarIOError` (a
``ValueError``) whose message starts with the file's path and names the problem;
the underlying library error is chained as ``__cause__``. A file that does not
exist raises the usual ``FileNotFoundError``.

References
----------
.. [1] P. Klinwichit, W. Yookwan, S. Limchareon, K. Chinnasarn, J.-S. Jang and
   A. Onuean, "BUU-LSPINE: A Thai Open Lumbar Spine Dataset for Spondylolisthesis
   Detection", Applied Sciences 13(15), 8646, 2023. :DOI:`10.3390/app13158646`
"""

from __future__ import annotations

import contextlib
import csv
import io as _stdio
import json
import math
import numbers
import os
import secrets
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import imageio.v3 as iio
import numpy as np

from . import LEVELS

# pandas, pydicom and tifffile are imported where they are used: together they take
# about 0.3 s to import, and most workflow jobs (one process each) read only npz and
# JSON files.
if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LumbarIOError",
    "ImageReadError",
    "AnnotationError",
    "ANNOTATION_FORMAT",
    "ANNOTATION_VERSION",
    "REQUIRED_LEVELS",
    "OPTIONAL_LEVELS",
    "OUTLINE_NAMES",
    "GENANT_TYPES",
    "read_image",
    "read_png",
    "atomic_path",
    "write_json",
    "read_json",
    "save_npz",
    "load_npz",
    "write_table",
    "read_table",
    "validate_annotation",
    "read_annotation",
    "write_annotation",
    "import_corner_csv",
]


class LumbarIOError(ValueError):
    """A file could not be read or written; the message names the file and the problem."""


class ImageReadError(LumbarIOError):
    """An image file is corrupt, truncated, unsupported or unusable."""


class AnnotationError(LumbarIOError):
    """An annotation is malformed or inconsistent with its image."""


ANNOTATION_FORMAT = "lumbar-xray-seg/annotation"
ANNOTATION_VERSION = 1
REQUIRED_LEVELS = LEVELS
OPTIONAL_LEVELS = ("T12", "S1")
OUTLINE_NAMES = ("upper_anterior", "upper_mid", "upper_posterior", "posterior_mid",
                 "lower_posterior", "lower_mid", "lower_anterior", "anterior_mid")
GENANT_TYPES = ("normal", "wedge", "biconcave", "crush")

_LEVEL_ORDER = ("T12",) + REQUIRED_LEVELS + ("S1",)
# Order of a vertebra's keys in a normalised annotation.
_LEVEL_KEYS_ORDER = ("centre", "outline", "upper_endplate", "genant_grade", "genant_type", "flag")
_ANNOTATION_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "annotation.schema.yaml"
_ANNOTATION_VALIDATOR = None
_BOUNDS_TOLERANCE_PX = 0.5

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_EXTENSION_FORMAT = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg",
                     ".jpeg": "jpeg", ".jpe": "jpeg", ".dcm": "dicom", ".dicom": "dicom"}
_FORMAT_NAME = {"png": "PNG", "tiff": "TIFF", "jpeg": "JPEG", "dicom": "DICOM"}
# ITU-R BT.601 luma weights, the ones Pillow's "L" conversion and JPEG's Y channel use.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_CORNER_CSV_ROWS = 11
_SHAPE_ARGUMENT = "image_shape must be two positive integers (rows, cols)"


# ----------------------------------------------------------------------------- images
def read_image(path, *, min_size: int = 32) -> tuple[np.ndarray, dict]:
    """Read a radiograph (PNG, TIFF, JPEG or DICOM) as a 2-D float32 array.

    Parameters
    ----------
    path : str or os.PathLike
        The image file. Its format is detected from its content (magic bytes), the
        extension only serves as a hint: a DICOM file is recognised by the ``DICM``
        marker after its 128-byte preamble, and a file without that marker is tried
        as DICOM when its extension is ``.dcm``, ``.dicom``, missing, or not an image
        extension (DICOM files are often named by their UID).
    min_size : int, optional
        Smallest accepted number of rows and of columns (default 32).

    Returns
    -------
    image : (M, N) float32 ndarray
        The pixel values at full bit depth (a 16-bit image keeps values up to
        65535; nothing is normalised). Colour images are converted to grey.
    properties : dict
        ``{"source": str(path), "format": "png" | "tiff" | "jpeg" | "dicom",
        "bit_depth": int, "shape": (M, N), "pixel_spacing_mm": (row_mm, col_mm)
        or None, "photometric": "MONOCHROME1" | "MONOCHROME2" | None}``.
        ``bit_depth`` is the number of bits per sample as stored (DICOM
        ``BitsStored``). ``photometric`` is the declared interpretation of a
        greyscale DICOM or TIFF (TIFF WhiteIsZero reads as ``"MONOCHROME1"``) and
        ``None`` for PNG, JPEG and colour images. Pixel spacing is only read from
        DICOM (``PixelSpacing``, else ``ImagerPixelSpacing``); the resolution tags of
        PNG and TIFF are too often placeholders to be trusted. No other tag of the
        file is copied: no patient data leaves this function.

    Raises
    ------
    ImageReadError
        The file is empty, truncated, corrupt, not of the format its extension
        names, of an unsupported kind (multi-frame, volume), holds no pixel data,
        holds NaN or infinite values, or is smaller than ``min_size`` on a side.
    FileNotFoundError
        The file does not exist.
    ValueError
        ``min_size`` is not a positive integer.

    Warns
    -----
    UserWarning
        A colour (RGB, RGBA, palette, grey + alpha) image was converted to grey.

    Notes
    -----
    Colour is converted to grey by luminance with the ITU-R BT.601 weights
    ``0.299 R + 0.587 G + 0.114 B``; an alpha channel is dropped.

    DICOM pixel values go through the modality LUT first (``value = slope * stored +
    intercept`` with ``RescaleSlope``/``RescaleIntercept``, via pydicom's
    ``apply_modality_lut``). A ``MONOCHROME1`` image (bone dark in the stored values)
    is then inverted so that bone is bright::

        value = max_possible - value
        max_possible = max(slope * stored_min + intercept, slope * stored_max + intercept)

    where ``[stored_min, stored_max]`` is the range ``BitsStored`` allows:
    ``[0, 2**BitsStored - 1]`` for unsigned and ``[-2**(BitsStored-1),
    2**(BitsStored-1) - 1]`` for signed pixels. For the usual unsigned pixels with a
    positive slope this is ``value = slope * (2**BitsStored - 1 - stored)``: the
    intercept cancels. :func:`lumbar_core.phantom_io.dicom_stored_values` is the exact inverse. The VOI LUT
    (window centre and width) is a display setting and is not applied.
    """
    min_size = _check_min_size(min_size)
    path_str = str(path)
    data = _read_bytes(path)
    fmt = _detect_format(data, path)
    if fmt == "dicom":
        image, bit_depth, spacing, photometric = _decode_dicom(data, path_str)
    elif fmt == "tiff":
        image, bit_depth, photometric = _decode_tiff(data, path_str)
        spacing = None
    else:
        image, bit_depth = _decode_pillow(data, path_str, fmt)
        image = _to_grey(image, path_str)
        spacing, photometric = None, None
    image = np.asarray(image).astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ImageReadError(f"{path_str}: image holds non-finite values (NaN or inf)")
    if image.ndim != 2:
        raise ImageReadError(f"{path_str}: expected a single 2-D image, got shape {image.shape}")
    rows, cols = image.shape
    if rows < min_size or cols < min_size:
        raise ImageReadError(f"{path_str}: image too small: {rows} x {cols} px "
                             f"(rows x cols; the minimum is {min_size} px per side)")
    properties = {
        "source": path_str,
        "format": fmt,
        "bit_depth": int(bit_depth),
        "shape": (int(rows), int(cols)),
        "pixel_spacing_mm": spacing,
        "photometric": photometric,
    }
    return image, properties


def read_png(path) -> np.ndarray:
    """Read a PNG file with its stored dtype (uint8 or uint16) kept.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG file (checked by its content, not its extension).

    Returns
    -------
    array : (M, N) or (M, N, C) ndarray
        The decoded samples; greyscale files give a 2-D uint8 or uint16 array,
        colour files an ``(M, N, 3)`` or ``(M, N, 4)`` array, palette files their
        colours. Nothing is rescaled.

    Raises
    ------
    ImageReadError
        The file is empty, not a PNG image, truncated or corrupt.
    """
    path_str = str(path)
    data = _read_bytes(path)
    if not data.startswith(_PNG_MAGIC):
        raise ImageReadError(f"{path_str}: not a PNG image (no PNG signature)")
    return _decode_pillow(data, path_str, "png")[0]


def _check_min_size(min_size) -> int:
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer; got {min_size!r}")
    return int(min_size)


def _read_bytes(path) -> bytes:
    data = Path(path).read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return data


def _sniff(data: bytes) -> str | None:
    """The format named by the file's magic bytes, or None."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def _detect_format(data: bytes, path) -> str:
    """Content first, extension as a hint (DICOM without preamble)."""
    fmt = _sniff(data)
    if fmt is not None:
        return fmt
    hinted = _EXTENSION_FORMAT.get(Path(path).suffix.lower())
    if hinted in ("png", "tiff", "jpeg"):
        raise ImageReadError(f"{path}: not a {_FORMAT_NAME[hinted]} image "
                             f"(content starts with {data[:8]!r})")
    # No magic bytes: a DICOM file without the 128-byte preamble is still possible.
    return "dicom"


def _decode_pillow(data: bytes, path_str: str, fmt: str) -> tuple[np.ndarray, int]:
    """Decode PNG or JPEG bytes with imageio's Pillow plugin; returns (array, bit depth)."""
    name = _FORMAT_NAME[fmt]
    if fmt == "png" and data.rfind(_PNG_IEND) < 0:
        raise ImageReadError(f"{path_str}: truncated PNG file (image data ends early)")
    extension = ".png" if fmt == "png" else ".jpg"
    try:
        mode = iio.immeta(data, plugin="pillow", extension=extension)["mode"]
        # Palette and non-RGB colour spaces are expanded to RGB(A) here; grey and RGB
        # are read as stored.
        wanted = {"P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB",
                  "LAB": "RGB", "HSV": "RGB"}.get(mode)
        array = iio.imread(data, plugin="pillow", extension=extension, mode=wanted)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        if "truncated" in str(exc).lower():
            raise ImageReadError(f"{path_str}: truncated {name} file (image data ends early)"
                                 ) from exc
        raise ImageReadError(f"{path_str}: corrupt or unsupported {name} file ({exc})") from exc
    if mode in ("P", "PA") and array.shape[-1] == 4 and np.all(array[..., 3] == 255):
        array = array[..., :3]
    if array.dtype == np.bool_:
        bit_depth = 1
    elif fmt == "png" and mode not in ("P", "PA"):
        bit_depth = int(data[24])  # IHDR bit depth (the IHDR chunk always comes first)
        if bit_depth == 16 and array.dtype.kind in "iu":
            array = array.astype(np.uint16, copy=False)
        bit_depth = min(bit_depth, 8 * array.dtype.itemsize)
    else:
        bit_depth = 8 * array.dtype.itemsize
    return array, bit_depth


def _to_grey(image: np.ndarray, path_str: str, *, samples_last: bool = True,
             stacklevel: int = 3) -> np.ndarray:
    """Luminance of a colour image (alpha dropped); 2-D input is returned unchanged.

    ``stacklevel`` makes the warning point at the caller of :func:`read_image`.
    """
    if image.ndim == 2:
        return image
    channels = image.shape[-1] if samples_last else image.shape[0]
    if image.ndim != 3 or channels not in (2, 3, 4):
        raise ImageReadError(f"{path_str}: expected a 2-D greyscale or colour image, "
                             f"got shape {image.shape}")
    if not samples_last:
        image = np.moveaxis(image, 0, -1)
    if channels == 2:
        warnings.warn(f"{path_str}: grey + alpha image; alpha channel dropped",
                      UserWarning, stacklevel=stacklevel)
        return image[..., 0]
    warnings.warn(f"{path_str}: colour image ({'RGB' if channels == 3 else 'RGBA'}) "
                  f"converted to grey by luminance (ITU-R BT.601 weights)",
                  UserWarning, stacklevel=stacklevel)
    return image[..., :3].astype(np.float64) @ _LUMA_WEIGHTS


def _decode_tiff(data: bytes, path_str: str) -> tuple[np.ndarray, int, str | None]:
    """Decode a TIFF's first series; returns (array, bit depth, photometric)."""
    import tifffile

    try:
        with tifffile.TiffFile(_stdio.BytesIO(data)) as tif:
            series = tif.series[0]
            page = series.pages[0]
            axes = series.axes
            array = series.asarray()
            photometric = int(page.photometric)
            bit_depth = int(page.bitspersample)
            colormap = page.colormap
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise ImageReadError(f"{path_str}: corrupt or unsupported TIFF file ({exc})") from exc
    # Squeeze length-1 axes other than the image plane (e.g. a 1-sample 'S' axis).
    keep = [i for i, ax in enumerate(axes) if ax in "YX" or array.shape[i] != 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if photometric == tifffile.PHOTOMETRIC.PALETTE and colormap is not None and axes == "YX":
        array = np.moveaxis(colormap[:, array], 0, -1)
        axes = "YXS"
    if axes == "YX":
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            if array.dtype.kind not in "iu":
                raise ImageReadError(f"{path_str}: unsupported floating-point WhiteIsZero TIFF")
            # Same rule as DICOM MONOCHROME1: value = max_possible - value.
            array = float(2 ** bit_depth - 1) - array.astype(np.float64)
            return array, bit_depth, "MONOCHROME1"
        return array, bit_depth, "MONOCHROME2"
    if axes in ("YXS", "SYX"):
        grey = _to_grey(array, path_str, samples_last=axes == "YXS", stacklevel=4)
        return grey, bit_depth, None
    raise ImageReadError(f"{path_str}: expected a single 2-D image, got a TIFF of shape "
                         f"{array.shape} (axes {axes!r})")


def _decode_dicom(data: bytes, path_str: str):
    """Decode a DICOM file; returns (array, bit depth, spacing or None, photometric)."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    has_preamble = data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(_stdio.BytesIO(data), force=not has_preamble)
        known = {"PixelData", "FloatPixelData", "DoubleFloatPixelData",
                 "Rows", "Columns", "SOPClassUID"}
        if not has_preamble and not any(k in ds for k in known):
            raise ImageReadError(f"{path_str}: unrecognised image format "
                                 f"(not PNG, TIFF, JPEG or DICOM)")
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise ImageReadError(f"{path_str}: DICOM file has no pixel data "
                                 f"(no PixelData element)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise ImageReadError(f"{path_str}: multi-frame DICOM ({frames} frames); "
                                 f"expected a single image")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        raw = ds.pixel_array
        if photometric.startswith("MONOCHROME"):
            array = np.asarray(apply_modality_lut(raw, ds))
            if photometric == "MONOCHROME1":
                stored_range = (np.array([-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1])
                                if signed else np.array([0, 2 ** bits_stored - 1]))
                max_possible = float(np.max(apply_modality_lut(stored_range, ds)))
                array = max_possible - array.astype(np.float64)
            declared = photometric if photometric in ("MONOCHROME1", "MONOCHROME2") else None
        elif photometric == "PALETTE COLOR":
            array, declared = apply_color_lut(raw, ds), None
        else:
            array, declared = raw, None
        spacing = _dicom_spacing(ds)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises InvalidDicomError, ValueError, EOFError, ...
        if not has_preamble and isinstance(exc, pydicom.errors.InvalidDicomError):
            raise ImageReadError(f"{path_str}: unrecognised image format "
                                 f"(not PNG, TIFF, JPEG or DICOM)") from exc
        raise ImageReadError(f"{path_str}: corrupt or unsupported DICOM file ({exc})") from exc
    if array.ndim == 3:
        array = _to_grey(array, path_str, stacklevel=4)
    return array, bits_stored, spacing, declared


def _dicom_spacing(ds) -> tuple[float, float] | None:
    """(row_mm, col_mm) from PixelSpacing, else ImagerPixelSpacing, else None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            spacing = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if len(spacing) == 2 and all(math.isfinite(v) and v > 0 for v in spacing):
            return spacing
    return None


# ----------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_path(path):
    """Context manager for writing a file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its folder is created if missing.

    Yields
    ------
    tmp : pathlib.Path
        An empty temporary file in the same folder, named like ``.<name>.<random>.tmp<suffix>``
        (the final suffix is kept so that writers choosing a format by extension work).
        Write to it; when the block ends without an exception the file is flushed to
        disk (``fsync``) and renamed onto ``path`` with ``os.replace``, so readers see
        either the old file or the complete new one. On an exception the temporary
        file is removed, ``path`` is left untouched and the exception propagates.

    Notes
    -----
    The file is created with the usual permissions (``0o666`` less the umask).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    for _ in range(100):
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp{final.suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        tmp = candidate
        break
    if tmp is None:
        raise LumbarIOError(f"{final}: could not create a temporary file next to it")
    try:
        yield tmp
        with open(tmp, "r+b") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX only; a no-op elsewhere)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj):
    """JSON conversion of numpy scalars and arrays and of paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json(path, obj) -> None:
    """Write ``obj`` as strict JSON (UTF-8, indented), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file to write.
    obj : object
        Dicts, lists, tuples, strings, numbers, booleans and None; numpy scalars and
        arrays and paths are converted.

    Raises
    ------
    LumbarIOError
        ``obj`` cannot be written as JSON (e.g. it holds NaN or inf, which strict JSON
        has no literal for: use None); nothing is written then.
    """
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise LumbarIOError(f"{path}: cannot write JSON: {exc}") from exc
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def read_json(path):
    """Read a JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file (UTF-8). ``NaN`` and ``Infinity`` literals are accepted
        (Python's reading), so that a validator can name them.

    Returns
    -------
    obj : object
        The decoded value.

    Raises
    ------
    LumbarIOError
        The file is empty, not UTF-8, or not valid JSON; the message gives the line
        and column of the problem.
    """
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise LumbarIOError(f"{path}: empty file, not JSON")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise LumbarIOError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise LumbarIOError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from exc


def save_npz(path, **arrays) -> None:
    """Save arrays to a compressed ``.npz`` archive, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The archive; written under exactly this name (no ``.npz`` is appended).
    **arrays : array_like
        The arrays by name; at least one. Object arrays are refused (they would
        need pickle, which :func:`load_npz` does not allow).

    Raises
    ------
    ValueError
        No arrays were given, or one has object dtype.
    """
    if not arrays:
        raise ValueError("save_npz needs at least one array")
    converted = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in converted.items():
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} has object dtype; store numbers or strings")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **converted)


def load_npz(path) -> dict:
    """Load every array of an ``.npz`` archive (no pickle).

    Parameters
    ----------
    path : str or os.PathLike
        The archive.

    Returns
    -------
    arrays : dict of str to ndarray
        All arrays, loaded into memory; the file is closed on return.

    Raises
    ------
    LumbarIOError
        The file is not a valid ``.npz`` archive or holds pickled objects.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise LumbarIOError(f"{path}: a single .npy array, not an .npz archive")
            return {name: archive[name] for name in archive.files}
    except (LumbarIOError, FileNotFoundError):
        raise
    except Exception as exc:  # BadZipFile, ValueError (pickle, bad header), EOFError, ...
        raise LumbarIOError(f"{path}: not a valid .npz archive ({exc})") from exc


def write_table(path, dataframe) -> None:
    """Write a DataFrame as a tab-separated table with a header row, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV file.
    dataframe : pandas.DataFrame
        Written without its index (call ``reset_index()`` first to keep it); missing
        values become empty cells; floats are written with full precision.

    Raises
    ------
    ValueError
        ``dataframe`` is not a DataFrame.
    """
    import pandas as pd

    if not isinstance(dataframe, pd.DataFrame):
        raise ValueError(f"dataframe must be a pandas.DataFrame; got {type(dataframe).__name__}")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        dataframe.to_csv(fh, sep="\t", index=False, na_rep="", lineterminator="\n")


def read_table(path, *, dtype=None) -> pd.DataFrame:
    """Read a tab-separated table with a header row.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV file (UTF-8).
    dtype : type, str or dict, optional
        Passed to :func:`pandas.read_csv`; e.g. ``{"image_id": str}`` keeps an id
        like ``007`` from being read as the number 7. Default None (inferred).

    Returns
    -------
    table : pandas.DataFrame
        Only empty cells and ``nan``/``NaN`` are missing values; other strings such
        as ``NA`` or ``None`` stay strings.

    Raises
    ------
    LumbarIOError
        The file is empty, not UTF-8 or not a well-formed table.
    """
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False,
                           na_values=["", "nan", "NaN"], encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise LumbarIOError(f"{path}: empty table file (no header row)") from exc
    except UnicodeDecodeError as exc:
        raise LumbarIOError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise LumbarIOError(f"{path}: malformed TSV table ({exc})") from exc


# ----------------------------------------------------------------------------- annotations
def validate_annotation(ann: dict, *, image_shape=None, source: str = "<annotation>") -> dict:
    """Check an annotation against the project format and return a normalised copy.

    Parameters
    ----------
    ann : dict
        An annotation (see Notes).
    image_shape : (int, int) or None, optional
        (rows, cols) of the image the annotation belongs to. Default None: the
        annotation's own ``image_shape`` is used if it has one. When both are given
        they must agree.
    source : str, optional
        Names the annotation in error messages, usually its file (default
        ``"<annotation>"``).

    Returns
    -------
    annotation : dict
        A new dict: ``format``, ``version``, ``image_shape`` (list of two ints or
        None), ``pixel_spacing_mm`` (list or None), ``anterior`` (str or None) and
        ``vertebrae`` with the levels in order T12, L1..L5, S1; coordinates are
        lists of Python floats, grades and flags ints. Optional keys of a vertebra
        are kept only where given.

    Raises
    ------
    AnnotationError
        With ``source``, the field and the problem. The structure is checked against
        ``schemas/annotation.schema.yaml`` (jsonschema): a missing level
        (``"vertebrae: missing level L4"``), an unknown level or key, a point that is
        not two numbers, an outline without exactly 8 points (``"L5 outline: has 7
        points, expected 8"``), an invalid Genant grade or type. Then what no schema
        can express: a coordinate that is NaN or infinite, a point outside the image
        (a tolerance of 0.5 px: ``-0.5 <= x <= cols - 0.5``, i.e. within the image's
        pixel area), or an ``image_shape`` that does not match the image's.
    ValueError
        The ``image_shape`` argument is not two positive integers.

    Notes
    -----
    The format: ``{"format": "lumbar-xray-seg/annotation", "version": 1,
    "image_shape": [rows, cols], "pixel_spacing_mm": [row_mm, col_mm] | null,
    "anterior": "left" | "right" | null, "vertebrae": {"L1": {"centre": [x, y],
    "outline": [[x, y], ... 8 points], "genant_grade": 0..3 | null,
    "genant_type": "normal" | "wedge" | "biconcave" | "crush" | null}, ...}}`` in
    input-image pixels, ``(x, y) = (column, row)``. ``format`` and ``version`` may be
    left out (they are filled in); all other top-level keys but ``vertebrae`` are
    optional. L1..L5 are required; T12 is optional with the same structure; S1 is
    optional with ``upper_endplate`` (two points, anterior first) and/or
    ``centre`` + ``outline``. Any level may carry an integer ``flag`` (see
    :func:`import_corner_csv`). The outline goes round the body in the order
    :data:`OUTLINE_NAMES`.
    """
    if image_shape is not None:
        image_shape = _shape_or_none(image_shape, on_error=ValueError, prefix=_SHAPE_ARGUMENT)
    if not isinstance(ann, dict):
        raise AnnotationError(f"{source}: annotation must be a JSON object; "
                              f"got {type(ann).__name__}")
    # As JSON: numpy arrays and tuples become lists, NaN stays NaN (checked below).
    try:
        ann = json.loads(json.dumps(ann, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{source}: annotation is not JSON data ({exc})") from exc
    error = _first_schema_error(ann)
    if error is not None:
        raise AnnotationError(f"{source}: {_schema_message(error)}")
    # What the schema cannot say: finite coordinates, points inside the image, and an
    # image_shape that agrees with the image's.
    own_shape = (None if ann.get("image_shape") is None
                 else tuple(int(v) for v in ann["image_shape"]))
    if image_shape is not None and own_shape is not None and own_shape != image_shape:
        raise AnnotationError(f"{source}: image_shape {list(own_shape)} in the annotation does not "
                              f"match the image's shape {list(image_shape)}")
    shape = image_shape if image_shape is not None else own_shape
    spacing = ann.get("pixel_spacing_mm")
    if spacing is not None and not all(math.isfinite(v) for v in spacing):
        raise AnnotationError(f"{source}: pixel_spacing_mm: non-finite value in {spacing!r}")
    vertebrae = ann["vertebrae"]
    levels = {}
    for level in _LEVEL_ORDER:
        if level not in vertebrae:
            continue
        entry = dict(vertebrae[level])
        for key, count in (("centre", None), ("outline", len(OUTLINE_NAMES)),
                           ("upper_endplate", 2)):
            if key in entry:
                where = f"{level} {key}"
                entry[key] = (_point(entry[key], where, shape=shape, source=source)
                              if count is None else
                              [_point(q, f"{where} point {i}", shape=shape, source=source)
                               for i, q in enumerate(entry[key])])
        for key in ("genant_grade", "flag"):  # 2.0 is the integer 2 in JSON
            if entry.get(key) is not None:
                entry[key] = int(entry[key])
        levels[level] = {key: entry[key] for key in _LEVEL_KEYS_ORDER if key in entry}
    return {
        "format": ANNOTATION_FORMAT,
        "version": ANNOTATION_VERSION,
        "image_shape": list(shape) if shape is not None else None,
        "pixel_spacing_mm": None if spacing is None else [float(v) for v in spacing],
        "anterior": ann.get("anterior"),
        "vertebrae": levels,
    }


def _annotation_validator():
    """The jsonschema validator of ``schemas/annotation.schema.yaml`` (built once)."""
    global _ANNOTATION_VALIDATOR
    if _ANNOTATION_VALIDATOR is None:
        import jsonschema
        import yaml

        schema = yaml.safe_load(_ANNOTATION_SCHEMA.read_text(encoding="utf-8"))
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _ANNOTATION_VALIDATOR = cls(schema)
    return _ANNOTATION_VALIDATOR


def _first_schema_error(ann):
    """The first schema violation in document order (None when valid)."""
    errors = list(_annotation_validator().iter_errors(ann))
    if not errors:
        return None
    import jsonschema

    # The deepest error of the first field that is wrong: it names the field best.
    errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
    return jsonschema.exceptions.best_match(
        [e for e in errors if list(e.absolute_path) == list(errors[0].absolute_path)])


def _schema_message(error) -> str:
    """``field: problem`` for a schema violation, in the annotation's own words."""
    path = [str(p) for p in error.absolute_path]
    level = path[1] if len(path) > 1 and path[0] == "vertebrae" else None
    # A point of a list is named by its index: "L2 outline point 3".
    where = " ".join([level, *path[2:3]] if level else path[:1]) or "annotation"
    if level and len(path) > 3:
        # centre -> coordinate; outline, upper_endplate -> point, then coordinate.
        indices = path[3:]
        names = ["coordinate"] if path[2] == "centre" else ["point", "coordinate"]
        where += "".join(f" {name} {i}" for name, i in zip(names, indices))
    kind, value = error.validator, error.instance
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        if path == ["vertebrae"]:
            return f"vertebrae: missing level {missing[0]}"
        return f"{where}: has no {missing[0]!r}"
    if kind == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in value if k not in allowed]
        what = "level key" if path == ["vertebrae"] else "key"
        return f"{where}: unknown {what} {unknown[0]!r} (allowed: {', '.join(allowed)})"
    if kind in ("minItems", "maxItems") and isinstance(value, list) and level:
        expected = {"outline": len(OUTLINE_NAMES), "upper_endplate": 2}.get(path[2], 2)
        noun = "points" if len(path) == 3 else "coordinates"
        return f"{where}: has {len(value)} {noun}, expected {expected}"
    if kind in ("const", "enum", "oneOf", "anyOf"):
        return f"{where}: bad value {value!r} ({_expected(error)})"
    return f"{where}: {error.message}"


def _expected(error) -> str:
    """What a const/enum/oneOf/anyOf rule accepts, in words."""
    if error.validator == "const":
        return f"expected {error.validator_value!r}"
    if error.validator == "enum":
        return "expected one of " + ", ".join(
            "null" if v is None else repr(v) for v in error.validator_value)
    return "expected " + " or ".join(_describe(s) for s in error.validator_value)


def _describe(schema: dict) -> str:
    """A subschema in a few words: ``null``, ``integer 0..3``, ``shape``."""
    if "description" in schema:
        return schema["description"]
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    words = str(schema.get("type", "value"))
    if "minimum" in schema and "maximum" in schema:
        words += f" {schema['minimum']}..{schema['maximum']}"
    return words


def _shape_or_none(value, *, on_error, prefix):
    if value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        items = None
    # Whole numbers only; 300.0 (a shape that went through a float) is accepted as 300.
    if (items is None or len(items) != 2
            or not all(_is_number(v) and float(v).is_integer() and v > 0 for v in items)):
        raise on_error(f"{prefix}; got {value!r}")
    return (int(items[0]), int(items[1]))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _point(value, where, *, shape, source) -> list:
    x, y = (float(v) for v in value)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(f"{source}: non-finite value (NaN or inf) in {where}: [{x}, {y}]")
    if shape is not None:
        rows, cols = shape
        tol = _BOUNDS_TOLERANCE_PX
        if not (-tol <= x <= cols - 1 + tol and -tol <= y <= rows - 1 + tol):
            raise AnnotationError(f"{source}: {where} (x={x:g}, y={y:g}) lies outside the image "
                                  f"of {rows} x {cols} px (rows x cols)")
    return [x, y]


def read_annotation(path, *, image_shape=None) -> dict:
    """Read and validate an annotation JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        The annotation file.
    image_shape : (int, int) or None, optional
        (rows, cols) of its image, to check the points against (default None).

    Returns
    -------
    annotation : dict
        The normalised annotation of :func:`validate_annotation`.

    Raises
    ------
    AnnotationError
        The file is not valid JSON or not a valid annotation; the message names the
        file and the problem.
    """
    try:
        ann = read_json(path)
    except AnnotationError:
        raise
    except LumbarIOError as exc:
        raise AnnotationError(str(exc)) from exc
    return validate_annotation(ann, image_shape=image_shape, source=str(path))


def write_annotation(path, ann) -> None:
    """Validate an annotation and write it as JSON, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The annotation file.
    ann : dict
        The annotation; what is written is its normalised form (see
        :func:`validate_annotation`).

    Raises
    ------
    AnnotationError
        The annotation is invalid; nothing is written then.
    """
    write_json(path, validate_annotation(ann, source=str(path)))


def import_corner_csv(path, *, image_shape=None, anterior: str = "auto") -> dict:
    """Convert a BUU-LSPINE lateral corner-point CSV [1]_ into an annotation.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV: 11 rows ``x1,y1,x2,y2,label`` without a header (a header line of
        exactly these names is skipped), one row per end plate from top to bottom:
        L1 upper, L1 lower, L2 upper, ..., L5 lower, S1 upper. Each row holds the
        two corners of one end plate in image pixels, ``(x, y) = (column, row)``.
    image_shape : (int, int) or None, optional
        (rows, cols) of the image, to check the points against and to record in the
        annotation (default None).
    anterior : {"auto", "left", "right"}, optional
        Which side of the image the belly (the anterior side of the bodies) is on.
        ``"auto"`` (default) takes the side the lumbar curve bulges towards, or
        where the spine is nearly straight the side the S1 end plate tilts to
        (:func:`lumbar_core.morphometry.spine_anterior_direction`, the project's
        one rule for it).

    Returns
    -------
    annotation : dict
        A validated annotation (see :func:`validate_annotation`) with
        ``anterior`` resolved. For each of L1..L5, from the four corners of its
        upper and lower end plates: ``centre`` = the mean of the four corners and
        ``outline`` = the corners plus the midpoints of the four edges, in the order
        upper anterior, upper plate midpoint, upper posterior, posterior wall
        midpoint, lower posterior, lower plate midpoint, lower anterior, anterior
        wall midpoint (:data:`OUTLINE_NAMES`). Within a row the corner on the
        anterior side (smaller x when anterior is ``"left"``) is the anterior one.
        S1 gets ``upper_endplate`` = [anterior corner, posterior corner]. Every
        level gets ``flag``: the label of its row (for L1..L5 the first non-zero
        label of its two rows; 0 when normal).

    Raises
    ------
    AnnotationError
        The file does not have 11 rows of 5 numbers (the message names the file and
        the line), the rows are not ordered top to bottom, the anterior side cannot
        be told, or a point lies outside ``image_shape``.
    ValueError
        ``anterior`` is not one of the accepted values.
    """
    if anterior not in ("auto", "left", "right"):
        raise ValueError(f"anterior must be 'auto', 'left' or 'right'; got {anterior!r}")
    image_shape = _shape_or_none(image_shape, on_error=ValueError, prefix=_SHAPE_ARGUMENT)
    source = str(path)
    corners, labels = _parse_corner_csv(path)
    # Per end plate: corners ordered by x, (left, right).
    left_first = np.where((corners[:, 0, 0] <= corners[:, 1, 0])[:, None, None],
                          corners, corners[:, ::-1])
    bodies = left_first[:10].reshape(5, 4, 2)  # per vertebra: UL, UR, LL, LR
    centres = bodies.mean(axis=1)
    if not np.all(np.diff(centres[:, 1]) > 0) or left_first[10, :, 1].mean() <= centres[4, 1]:
        raise AnnotationError(f"{source}: end plates are not ordered top to bottom "
                              f"(L1 upper first, S1 upper last)")
    if anterior == "auto":
        from .morphometry import spine_anterior_direction

        try:
            side = spine_anterior_direction(centres, s1_endplate=left_first[10])
        except ValueError as exc:
            raise AnnotationError(f"{source}: cannot tell the anterior side ({exc}); pass "
                                  f"anterior='left' or 'right'") from exc
    else:
        side = anterior
    ant, post = (0, 1) if side == "left" else (1, 0)
    vertebrae = {}
    for k, level in enumerate(REQUIRED_LEVELS):
        ua, up = left_first[2 * k, ant], left_first[2 * k, post]
        la, lp = left_first[2 * k + 1, ant], left_first[2 * k + 1, post]
        outline = np.array([ua, (ua + up) / 2, up, (up + lp) / 2,
                            lp, (lp + la) / 2, la, (la + ua) / 2])
        upper_label, lower_label = labels[2 * k], labels[2 * k + 1]
        vertebrae[level] = {
            "centre": centres[k].tolist(),
            "outline": outline.tolist(),
            "flag": upper_label if upper_label != 0 else lower_label,
        }
    vertebrae["S1"] = {"upper_endplate": [left_first[10, ant].tolist(),
                                          left_first[10, post].tolist()],
                       "flag": labels[10]}
    ann = {"format": ANNOTATION_FORMAT, "version": ANNOTATION_VERSION,
           "image_shape": None if image_shape is None else list(image_shape),
           "pixel_spacing_mm": None, "anterior": side, "vertebrae": vertebrae}
    return validate_annotation(ann, image_shape=image_shape, source=source)


def _parse_corner_csv(path) -> tuple[np.ndarray, list[int]]:
    """(11, 2, 2) corners [row, corner, xy] and the 11 integer labels."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{source}: not UTF-8 text "
                              f"({exc.reason} at byte {exc.start})") from exc
    rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1)
            if any(field.strip() for field in row)]
    if rows and [f.strip().lower() for f in rows[0][1]] == ["x1", "y1", "x2", "y2", "label"]:
        rows = rows[1:]
    if len(rows) != _CORNER_CSV_ROWS:
        raise AnnotationError(f"{source}: expected {_CORNER_CSV_ROWS} rows (end plates L1 upper "
                              f"... L5 lower, S1 upper), got {len(rows)}")
    corners = np.empty((_CORNER_CSV_ROWS, 4))
    labels = []
    for i, (line, row) in enumerate(rows):
        if len(row) != 5:
            raise AnnotationError(f"{source}: line {line}: expected 5 fields x1,y1,x2,y2,label, "
                                  f"got {len(row)}")
        try:
            values = [float(field) for field in row]
        except ValueError as exc:
            raise AnnotationError(f"{source}: line {line}: non-numeric value ({exc})") from exc
        if not all(math.isfinite(v) for v in values):
            raise AnnotationError(f"{source}: line {line}: non-finite value in {row!r}")
        if values[4] != int(values[4]):
            raise AnnotationError(f"{source}: line {line}: label {row[4].strip()!r} "
                                  f"is not an integer")
        corners[i] = values[:4]
        labels.append(int(values[4]))
    return corners.reshape(_CORNER_CSV_ROWS, 2, 2), labels
