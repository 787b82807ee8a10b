"""Image writers for the synthetic demo cohort and the tests: PNG, TIFF and DICOM.

The workflow only reads radiographs (:func:`lumbar_core.io.read_image`); writing them is
what the phantom (:mod:`lumbar_core.phantom`) does when it makes the demo cohort, and
what the tests do to build bad and edge-case inputs. Every writer is atomic
(:func:`lumbar_core.io.atomic_path`) and writes what :func:`lumbar_core.io.read_image`
reads back unchanged.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import uuid

import imageio.v3 as iio
import numpy as np

from .io import atomic_path

__all__ = ["dicom_stored_values", "write_dicom", "write_png16", "write_tiff"]

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "lumbar-xray-seg")


def write_png16(path, array) -> None:
    """Write a 2-D uint16 (or uint8) array as a lossless greyscale PNG, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG file to write.
    array : (M, N) uint16 or uint8 ndarray
        The samples; uint16 gives a 16-bit PNG, uint8 an 8-bit one. Read back
        unchanged with :func:`lumbar_core.io.read_png`.

    Raises
    ------
    ValueError
        ``array`` is not 2-D, is empty, or is not uint8/uint16.
    """
    array = np.asarray(array)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"array must be a non-empty 2-D array; got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"array must be uint8 or uint16; got dtype {array.dtype}")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.ascontiguousarray(array), plugin="pillow", extension=".png")


def write_tiff(path, array) -> None:
    """Write a 2-D array as a zlib-compressed (lossless) TIFF, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF file to write.
    array : (M, N) ndarray
        Any integer, boolean or floating dtype; stored as is (greyscale,
        BlackIsZero), so :func:`lumbar_core.io.read_image` gives back the same values.

    Raises
    ------
    ValueError
        ``array`` is not 2-D, is empty, is not numeric, or holds NaN or inf.
    """
    import tifffile

    array = np.asarray(array)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"array must be a non-empty 2-D array; got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"array must be numeric; got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("array holds non-finite values (NaN or inf), which read_image rejects")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack", compression="zlib", metadata=None)


def dicom_stored_values(values, *, photometric: str = "MONOCHROME2", rescale_slope: float = 1.0,
                        rescale_intercept: float = 0.0, bits_stored: int = 16) -> np.ndarray:
    """Stored DICOM pixel values that :func:`lumbar_core.io.read_image` turns back into ``values``.

    The exact inverse of the reader's DICOM rule (see :func:`lumbar_core.io.read_image`):
    ``stored = (values - intercept) / slope`` for ``MONOCHROME2`` and
    ``stored = (max_possible - values - intercept) / slope`` for ``MONOCHROME1``,
    with ``max_possible = slope * (2**bits_stored - 1) + intercept`` (unsigned
    pixels, positive slope), rounded to the nearest integer.

    Parameters
    ----------
    values : (M, N) array_like
        The wanted image values (bone bright).
    photometric : {"MONOCHROME2", "MONOCHROME1"}, optional
        Default ``"MONOCHROME2"``.
    rescale_slope : float, optional
        Positive slope, default 1.0.
    rescale_intercept : float, optional
        Default 0.0.
    bits_stored : int, optional
        1 to 16, default 16.

    Returns
    -------
    stored : (M, N) uint16 ndarray
        Pass it to :func:`write_dicom` with the same options.

    Raises
    ------
    ValueError
        An option is invalid, ``values`` is not finite, or a value maps outside
        ``[0, 2**bits_stored - 1]``.
    """
    _check_dicom_options(photometric, rescale_slope, rescale_intercept, bits_stored)
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("values hold non-finite entries (NaN or inf)")
    top = 2 ** bits_stored - 1
    if photometric == "MONOCHROME1":
        stored = top - values / rescale_slope
    else:
        stored = (values - rescale_intercept) / rescale_slope
    stored = np.rint(stored)
    if stored.size and (stored.min() < 0 or stored.max() > top):
        raise ValueError(f"values map to stored values in [{stored.min():g}, {stored.max():g}], "
                         f"outside [0, {top}] for bits_stored={bits_stored}, "
                         f"rescale_slope={rescale_slope}, rescale_intercept={rescale_intercept}")
    return stored.astype(np.uint16)


def _check_dicom_options(photometric, slope, intercept, bits_stored) -> None:
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'MONOCHROME1' or 'MONOCHROME2'; got {photometric!r}")
    if not isinstance(slope, numbers.Real) or not math.isfinite(slope) or slope <= 0:
        raise ValueError(f"rescale_slope must be a positive finite number; got {slope!r}")
    if not isinstance(intercept, numbers.Real) or not math.isfinite(intercept):
        raise ValueError(f"rescale_intercept must be a finite number; got {intercept!r}")
    if (isinstance(bits_stored, bool) or not isinstance(bits_stored, numbers.Integral)
            or not 1 <= bits_stored <= 16):
        raise ValueError(f"bits_stored must be an integer in 1..16; got {bits_stored!r}")


def write_dicom(path, array, *, photometric: str = "MONOCHROME2", rescale_slope: float = 1.0,
                rescale_intercept: float = 0.0, pixel_spacing_mm=None,
                bits_stored: int = 16) -> None:
    """Write a minimal valid Secondary Capture DICOM file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The DICOM file to write.
    array : (M, N) integer ndarray
        The stored pixel values, written verbatim (unsigned, before the modality
        LUT); every value must lie in ``[0, 2**bits_stored - 1]``. To write an image
        so that :func:`lumbar_core.io.read_image` returns given values, convert them with
        :func:`dicom_stored_values` first.
    photometric : {"MONOCHROME2", "MONOCHROME1"}, optional
        Photometric interpretation tag (default ``"MONOCHROME2"``); the values are
        not changed by it.
    rescale_slope, rescale_intercept : float, optional
        ``RescaleSlope`` (positive, default 1.0) and ``RescaleIntercept`` (default 0.0).
    pixel_spacing_mm : (float, float) or None, optional
        ``PixelSpacing`` as (row_mm, col_mm); default None (tag omitted).
    bits_stored : int, optional
        ``BitsStored``, 1 to 16 (default 16). ``BitsAllocated`` is 8 for 8 bits or
        fewer, else 16.

    Raises
    ------
    ValueError
        An option or the array is invalid.

    Notes
    -----
    The file has a 128-byte preamble, the ``DICM`` marker and file meta information,
    explicit VR little endian transfer syntax, SOP class Secondary Capture Image
    Storage and modality ``OT``. The SOP instance, study and series UIDs are
    ``2.25.<UUID>`` UIDs derived (UUID version 5) from a SHA-256 hash of the pixel
    data and the options, so the same input gives the same bytes. No patient data
    is written: ``PatientName`` and ``PatientID`` are present and empty.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    _check_dicom_options(photometric, rescale_slope, rescale_intercept, bits_stored)
    array = np.asarray(array)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"array must be a non-empty 2-D array; got shape {array.shape}")
    if max(array.shape) > 65535:
        raise ValueError(f"array is too large for DICOM Rows/Columns; got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"array must hold integer stored values; got dtype {array.dtype}")
    top = 2 ** bits_stored - 1
    if array.min() < 0 or array.max() > top:
        raise ValueError(f"array values must lie in [0, {top}] for bits_stored={bits_stored}; "
                         f"got [{array.min()}, {array.max()}]")
    spacing = None
    if pixel_spacing_mm is not None:
        try:
            spacing = [float(v) for v in pixel_spacing_mm]
        except (TypeError, ValueError):
            spacing = []
        if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"pixel_spacing_mm must be two positive numbers (row_mm, col_mm) "
                             f"or None; got {pixel_spacing_mm!r}")
    bits_allocated = 8 if bits_stored <= 8 else 16
    pixels = np.ascontiguousarray(array.astype("<u1" if bits_allocated == 8 else "<u2"))
    digest = hashlib.sha256(pixels.tobytes())
    digest.update(repr((pixels.shape, photometric, float(rescale_slope), float(rescale_intercept),
                        spacing, bits_stored)).encode())

    def uid(role: str) -> str:
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, digest.hexdigest() + role).int}"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"2.25.{uuid.uuid5(_UID_NAMESPACE, 'implementation').int}"
    meta.ImplementationVersionName = "LUMBARXRAYSEG1"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.SeriesNumber = None
    ds.InstanceNumber = None
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = pydicom.valuerep.format_number_as_ds(float(rescale_intercept))
    ds.RescaleSlope = pydicom.valuerep.format_number_as_ds(float(rescale_slope))
    ds.RescaleType = "US"
    if spacing is not None:
        ds.PixelSpacing = [pydicom.valuerep.format_number_as_ds(v) for v in spacing]
    ds.PixelData = pixels.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True, implicit_vr=False, little_endian=True)
