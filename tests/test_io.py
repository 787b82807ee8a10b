"""Tests of lumbar_core.io: image readers, atomic writers, annotations, corner CSV import."""

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pydicom
import pytest
import tifffile
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from lumbar_core import io, phantom_io

PROPERTY_KEYS = {"source", "format", "bit_depth", "shape", "pixel_spacing_mm", "photometric"}


# ----------------------------------------------------------------------------- builders
def _pydicom_file(path, stored, *, photometric="MONOCHROME2", slope=None, intercept=None,
                  bits_stored=16, imager_spacing=None, pixel_data=True, patient_name=""):
    """A DICOM file built with pydicom alone (not with phantom_io.write_dicom)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = patient_name
    ds.PatientID = "PID-12345"
    ds.PatientBirthDate = "19700101"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    if pixel_data:
        ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored_12bit():
    """32 x 32 tile of the stored values 0, 1, 100, 4095."""
    return np.tile(np.array([[0, 1], [100, 4095]], dtype=np.uint16), (16, 16))


def _box(x0, y0, x1, y1):
    """Centre and 8-point outline of an axis-aligned body, anterior on the left."""
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    outline = [[x0, y0], [mx, y0], [x1, y0], [x1, my], [x1, y1], [mx, y1], [x0, y1], [x0, my]]
    return {"centre": [mx, my], "outline": outline}


def _annotation():
    """Five 40 x 30 px bodies in a 300 x 200 image."""
    vertebrae = {lvl: _box(80, 20 + 40 * k, 120, 50 + 40 * k)
                 for k, lvl in enumerate(io.REQUIRED_LEVELS)}
    return {"format": io.ANNOTATION_FORMAT, "version": 1, "image_shape": [300, 200],
            "anterior": "left", "vertebrae": vertebrae}


# Lordotic spine facing left: body centres x = 100, 88, 80, 88, 100 (bulge to the left).
_CENTRE_X = (100, 88, 80, 88, 100)


def _corner_rows(width=200, mirror=False, swap_rows=(1, 3)):
    """The 11 BUU-LSPINE rows for the spine above (mirrored: facing right)."""
    rows = []
    for k, cx in enumerate(_CENTRE_X):
        for y in (20 + 40 * k, 50 + 40 * k):
            rows.append([cx - 20, y, cx + 20, y, 0])
    rows.append([80, 230, 120, 215, 0])  # S1 upper: anterior (left) corner lower
    rows[9][4] = 1  # L5 lower end plate flagged
    if mirror:
        rows = [[width - 1 - x1, y1, width - 1 - x2, y2, lab] for x1, y1, x2, y2, lab in rows]
    for i in swap_rows:  # corner order within a row must not matter
        x1, y1, x2, y2, lab = rows[i]
        rows[i] = [x2, y2, x1, y1, lab]
    return rows


def _write_csv(path, rows):
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("dtype, bits", [(np.uint8, 8), (np.uint16, 16)])
def test_png_round_trip_keeps_dtype_values_and_bit_depth(tmp_path, dtype, bits):
    top = np.iinfo(dtype).max
    array = (np.arange(40 * 36).reshape(40, 36) % (top + 1)).astype(dtype)
    array[0, 0] = top
    path = tmp_path / "img.png"
    phantom_io.write_png16(path, array)
    raw = io.read_png(path)
    assert raw.dtype == dtype
    np.testing.assert_array_equal(raw, array)
    image, props = io.read_image(path)
    assert image.dtype == np.float32 and image[0, 0] == top
    np.testing.assert_array_equal(image, array.astype(np.float32))
    assert props == {"source": str(path), "format": "png", "bit_depth": bits, "shape": (40, 36),
                     "pixel_spacing_mm": None, "photometric": None}


def test_write_png16_rejects_float_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8 or uint16; got dtype float64"):
        phantom_io.write_png16(tmp_path / "x.png", np.zeros((4, 4)))
    assert not (tmp_path / "x.png").exists()


def test_rgb_jpeg_is_read_as_luminance_with_a_warning(tmp_path):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :24] = (255, 0, 0)
    rgb[:, 24:] = (0, 0, 255)
    path = tmp_path / "colour.jpg"
    iio.imwrite(path, rgb, extension=".jpg", quality=100)
    with pytest.warns(UserWarning, match=r"colour\.jpg: colour image \(RGB\) converted to grey"):
        image, props = io.read_image(path)
    assert image.shape == (32, 48) and props["format"] == "jpeg" and props["bit_depth"] == 8
    # BT.601 luma: red 0.299 * 255 = 76.2, blue 0.114 * 255 = 29.1 (JPEG allows a few levels).
    assert abs(image[16, 8] - 76.2) < 4
    assert abs(image[16, 40] - 29.1) < 4


def test_16bit_tiff_keeps_full_range(tmp_path):
    array = np.tile(np.array([[0, 1], [40000, 65535]], dtype=np.uint16), (20, 17))
    path = tmp_path / "img.tif"
    phantom_io.write_tiff(path, array)
    image, props = io.read_image(path)
    np.testing.assert_array_equal(image, array.astype(np.float32))
    assert props["format"] == "tiff" and props["bit_depth"] == 16
    assert props["shape"] == (40, 34) and props["photometric"] == "MONOCHROME2"


def test_float_tiff_with_nan_raises(tmp_path):
    array = np.ones((32, 32), dtype=np.float32)
    array[3, 4] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(io.ImageReadError, match=r"nan\.tif: image holds non-finite values"):
        io.read_image(path)


def test_writer_dicom_monochrome2_rescale_and_spacing(tmp_path):
    stored = _stored_12bit()
    path = tmp_path / "mono2.dcm"
    phantom_io.write_dicom(path, stored, rescale_slope=2.0, rescale_intercept=-1024.0,
                   pixel_spacing_mm=(0.15, 0.2), bits_stored=12)
    image, props = io.read_image(path)
    # value = 2 * stored - 1024
    np.testing.assert_array_equal(image[:2, :2], [[-1024, -1022], [-824, 7166]])
    assert props["pixel_spacing_mm"] == (0.15, 0.2)
    assert props["photometric"] == "MONOCHROME2" and props["bit_depth"] == 12


def test_writer_dicom_monochrome1_is_inverted_after_rescale(tmp_path):
    stored = _stored_12bit()
    path = tmp_path / "mono1.dcm"
    phantom_io.write_dicom(path, stored, photometric="MONOCHROME1", rescale_slope=2.0,
                   rescale_intercept=-1024.0, bits_stored=12)
    image, props = io.read_image(path)
    # max_possible = 2 * 4095 - 1024 = 7166; value = 7166 - (2 * stored - 1024)
    np.testing.assert_array_equal(image[:2, :2], [[8190, 8188], [7990, 0]])
    assert props["photometric"] == "MONOCHROME1" and props["pixel_spacing_mm"] is None
    back = phantom_io.dicom_stored_values(image, photometric="MONOCHROME1", rescale_slope=2.0,
                                  rescale_intercept=-1024.0, bits_stored=12)
    np.testing.assert_array_equal(back, stored)


@pytest.mark.parametrize("photometric, expected", [
    ("MONOCHROME2", [[-5, -4.5], [45, 2042.5]]),   # 0.5 * stored - 5
    ("MONOCHROME1", [[2047.5, 2047], [1997.5, 0]]),  # (0.5 * 4095 - 5) - (0.5 * stored - 5)
])
def test_pydicom_built_file_rescale_inversion_and_imager_spacing(tmp_path, photometric, expected):
    path = _pydicom_file(tmp_path / "built.dcm", _stored_12bit(), photometric=photometric,
                         slope=0.5, intercept=-5, bits_stored=12, imager_spacing=(0.1, 0.12))
    image, props = io.read_image(path)
    np.testing.assert_allclose(image[:2, :2], expected)
    assert props["pixel_spacing_mm"] == (0.1, 0.12)
    assert props["format"] == "dicom" and props["photometric"] == photometric


def test_dicom_is_detected_without_extension_and_without_preamble(tmp_path):
    stored = _stored_12bit()
    phantom_io.write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "IM0001").write_bytes(data)
    (tmp_path / "IM0002").write_bytes(data[132:])  # no preamble, no DICM marker
    for name in ("IM0001", "IM0002"):
        image, props = io.read_image(tmp_path / name)
        assert props["format"] == "dicom"
        np.testing.assert_array_equal(image, stored)


def test_write_dicom_is_deterministic_and_minimal(tmp_path):
    stored = _stored_12bit()
    phantom_io.write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    phantom_io.write_dicom(tmp_path / "b.dcm", stored, bits_stored=12)
    phantom_io.write_dicom(tmp_path / "c.dcm", stored // 2, bits_stored=12)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    a, c = (pydicom.dcmread(tmp_path / n) for n in ("a.dcm", "c.dcm"))
    assert a.SOPInstanceUID != c.SOPInstanceUID
    assert a.SOPClassUID == SecondaryCaptureImageStorage
    assert a.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert str(a.PatientName) == "" and a.PatientID == ""


def test_write_dicom_rejects_values_beyond_bits_stored(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 4095\] for bits_stored=12"):
        phantom_io.write_dicom(tmp_path / "x.dcm", np.full((4, 4), 5000, dtype=np.uint16), bits_stored=12)


def test_dicom_without_pixel_data_raises(tmp_path):
    path = _pydicom_file(tmp_path / "empty.dcm", _stored_12bit(), pixel_data=False)
    with pytest.raises(io.ImageReadError, match=r"empty\.dcm: DICOM file has no pixel data"):
        io.read_image(path)


def test_patient_name_never_reaches_the_properties(tmp_path):
    path = _pydicom_file(tmp_path / "patient.dcm", _stored_12bit(), bits_stored=12,
                         patient_name="Doe^Jane")
    assert "Doe^Jane" in str(pydicom.dcmread(path).PatientName)  # the input does carry it
    _, props = io.read_image(path)
    assert set(props) == PROPERTY_KEYS
    text = repr(props)
    assert "Doe" not in text and "Jane" not in text and "PID-12345" not in text


def test_zero_byte_png_raises(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(b"")
    with pytest.raises(io.ImageReadError, match=r"zero\.png: empty file \(0 bytes\)"):
        io.read_image(path)


def test_truncated_png_raises(tmp_path):
    noise = np.random.default_rng(0).integers(0, 65535, (64, 64)).astype(np.uint16)
    path = tmp_path / "cut.png"
    phantom_io.write_png16(path, noise)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ImageReadError, match=r"cut\.png: truncated PNG file") as info:
        io.read_image(path)
    with pytest.raises(io.ImageReadError, match=r"cut\.png: truncated PNG file"):
        io.read_png(path)
    assert str(path) in str(info.value)


def test_text_file_named_png_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(io.ImageReadError, match=r"notes\.png: not a PNG image"):
        io.read_image(path)


def test_tiny_image_raises_unless_min_size_allows_it(tmp_path):
    path = tmp_path / "dot.png"
    phantom_io.write_png16(path, np.array([[7]], dtype=np.uint8))
    with pytest.raises(io.ImageReadError,
                       match=r"dot\.png: image too small: 1 x 1 px .*minimum is 32 px"):
        io.read_image(path)
    image, props = io.read_image(path, min_size=1)
    assert image.shape == (1, 1) and image[0, 0] == 7
    with pytest.raises(ValueError, match="min_size must be a positive integer; got 0"):
        io.read_image(path, min_size=0)


def test_all_zero_image_is_readable(tmp_path):
    path = tmp_path / "black.png"
    phantom_io.write_png16(path, np.zeros((32, 32), dtype=np.uint16))
    image, _ = io.read_image(path)
    assert image.max() == 0


# ----------------------------------------------------------------------------- writers
def test_atomic_write_leaves_no_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt"
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(io.LumbarIOError, match=r"out\.json: cannot write JSON"):
        io.write_json(tmp_path / "out.json", {"value": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with io.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_json_npz_and_table_round_trips(tmp_path):
    io.write_json(tmp_path / "a.json", {"n": np.int64(3), "xy": np.array([1.5, 2.0])})
    assert io.read_json(tmp_path / "a.json") == {"n": 3, "xy": [1.5, 2.0]}
    io.save_npz(tmp_path / "arrays.bin", mask=np.eye(3, dtype=np.uint8), p=np.float32(0.25))
    loaded = io.load_npz(tmp_path / "arrays.bin")
    np.testing.assert_array_equal(loaded["mask"], np.eye(3))
    assert loaded["mask"].dtype == np.uint8 and loaded["p"] == np.float32(0.25)
    table = pd.DataFrame({"image_id": ["007", "NA"], "dice": [0.9, np.nan]})
    io.write_table(tmp_path / "t.tsv", table)
    back = io.read_table(tmp_path / "t.tsv", dtype={"image_id": str})
    assert list(back["image_id"]) == ["007", "NA"]
    assert back["dice"][0] == 0.9 and np.isnan(back["dice"][1])


def test_read_json_names_file_and_problem(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(io.LumbarIOError, match=r"broken\.json: invalid JSON at line 2 column 7"):
        io.read_json(path)


def test_load_npz_of_a_non_archive_raises(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_text("not a zip")
    with pytest.raises(io.LumbarIOError, match=r"fake\.npz: not a valid \.npz archive"):
        io.load_npz(path)


# ----------------------------------------------------------------------------- annotations
def test_annotation_round_trip_normalises(tmp_path):
    ann = _annotation()
    ann["vertebrae"]["L1"]["centre"] = (100, 35)
    ann["vertebrae"]["L1"]["genant_grade"] = 2
    ann["vertebrae"]["L1"]["genant_type"] = "wedge"
    path = tmp_path / "ann.json"
    io.write_annotation(path, ann)
    back = io.read_annotation(path, image_shape=(300, 200))
    assert back["vertebrae"]["L1"]["centre"] == [100.0, 35.0]
    assert back["vertebrae"]["L1"]["genant_grade"] == 2
    assert list(back["vertebrae"]) == list(io.REQUIRED_LEVELS)
    assert back["format"] == io.ANNOTATION_FORMAT and back["image_shape"] == [300, 200]


def test_annotation_with_nan_raises(tmp_path):
    ann = _annotation()
    ann["vertebrae"]["L3"]["centre"] = [float("nan"), 110.0]
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(ann))  # Python writes the NaN literal
    with pytest.raises(io.AnnotationError, match=r"nan\.json: non-finite value .* in L3 centre"):
        io.read_annotation(path)


def test_annotation_with_four_levels_raises(tmp_path):
    ann = _annotation()
    del ann["vertebrae"]["L4"]
    path = tmp_path / "four.json"
    path.write_text(json.dumps(ann))
    with pytest.raises(io.AnnotationError, match=r"four\.json: vertebrae: missing level L4"):
        io.read_annotation(path)


def test_annotation_point_out_of_bounds_raises_beyond_half_a_pixel():
    ann = _annotation()
    ann["vertebrae"]["L2"]["outline"][2] = [199.5, 60.0]  # cols - 0.5: on the image edge
    io.validate_annotation(ann, source="edge.json")
    ann["vertebrae"]["L2"]["outline"][2] = [199.6, 60.0]
    with pytest.raises(io.AnnotationError,
                       match=r"edge\.json: L2 outline point 2 \(x=199\.6, y=60\) lies outside"):
        io.validate_annotation(ann, source="edge.json")
    with pytest.raises(io.AnnotationError, match=r"small\.json: .* does not match"):
        io.validate_annotation(_annotation(), image_shape=(100, 100), source="small.json")


def test_outline_with_seven_points_raises():
    ann = _annotation()
    ann["vertebrae"]["L5"]["outline"].pop()
    with pytest.raises(io.AnnotationError,
                       match=r"seven\.json: L5 outline: has 7 points, expected 8"):
        io.validate_annotation(ann, source="seven.json")


@pytest.mark.parametrize("level, key, value, problem", [
    ("L6", None, None, r"vertebrae: unknown level key 'L6' \(allowed: T12, L1, .*S1\)"),
    ("L1", "genant_grade", 4, "L1 genant_grade: 4 is greater than the maximum of 3"),
    ("L1", "genant_grade", True, r"L1 genant_grade: bad value True \(expected null or integer 0..3\)"),
    ("L1", "genant_type", "burst", "L1 genant_type: bad value 'burst' .*'crush', null"),
    ("L1", "center", [1, 2], "L1: unknown key 'center' \\(allowed: centre, outline"),
    ("L2", "outline", [[1, 2]] * 7 + [[1, 2, 3]], "L2 outline point 7: has 3 coordinates"),
    ("L3", "centre", ["1", 2], "L3 centre coordinate 0: '1' is not of type 'number'"),
])
def test_bad_level_keys_and_grades_raise(level, key, value, problem):
    ann = _annotation()
    if key is None:
        ann["vertebrae"][level] = _box(0, 0, 10, 10)
    else:
        ann["vertebrae"][level][key] = value
    with pytest.raises(io.AnnotationError, match=rf"bad\.json: {problem}"):
        io.validate_annotation(ann, source="bad.json")


# ----------------------------------------------------------------------------- corner CSV
def test_corner_csv_import_facing_left(tmp_path):
    path = _write_csv(tmp_path / "left.csv", _corner_rows())
    ann = io.import_corner_csv(path, image_shape=(300, 200))
    assert ann["anterior"] == "left"
    l1 = ann["vertebrae"]["L1"]
    assert l1["centre"] == [100.0, 35.0]
    assert l1["outline"] == [[80, 20], [100, 20], [120, 20], [120, 35],
                             [120, 50], [100, 50], [80, 50], [80, 35]]
    l2 = ann["vertebrae"]["L2"]  # its lower end plate row was written right corner first
    assert l2["centre"] == [88.0, 75.0]
    assert l2["outline"][4] == [108.0, 90.0] and l2["outline"][6] == [68.0, 90.0]
    assert ann["vertebrae"]["L5"]["flag"] == 1 and ann["vertebrae"]["L4"]["flag"] == 0
    assert ann["vertebrae"]["S1"]["upper_endplate"] == [[80.0, 230.0], [120.0, 215.0]]


def test_corner_csv_import_facing_right_puts_anterior_on_the_right(tmp_path):
    path = _write_csv(tmp_path / "right.csv", _corner_rows(mirror=True))
    ann = io.import_corner_csv(path)
    assert ann["anterior"] == "right"
    l1 = ann["vertebrae"]["L1"]
    assert l1["centre"] == [99.0, 35.0]  # 199 - 100
    assert l1["outline"][0] == [119.0, 20.0]  # upper anterior: the right corner
    assert l1["outline"][2] == [79.0, 20.0]
    assert l1["outline"][7] == [119.0, 35.0]  # anterior wall midpoint
    forced = io.import_corner_csv(path, anterior="left")
    assert forced["anterior"] == "left" and forced["vertebrae"]["L1"]["outline"][0] == [79.0, 20.0]


def test_corner_csv_straight_spine_falls_back_to_the_s1_tilt(tmp_path):
    rows = _corner_rows()
    for row in rows[:10]:
        row[0], row[2] = 80, 120  # all centres at x = 100: no bulge
    path = _write_csv(tmp_path / "straight.csv", rows)
    assert io.import_corner_csv(path)["anterior"] == "left"  # S1's left corner is lower
    rows[10] = [80, 220, 120, 220, 0]
    _write_csv(path, rows)
    with pytest.raises(io.AnnotationError, match=r"straight\.csv: cannot tell the anterior side"):
        io.import_corner_csv(path)


def test_corner_csv_with_ten_rows_raises(tmp_path):
    path = _write_csv(tmp_path / "ten.csv", _corner_rows()[:10])
    with pytest.raises(io.AnnotationError, match=r"ten\.csv: expected 11 rows .* got 10"):
        io.import_corner_csv(path)


def test_corner_csv_non_numeric_value_names_the_line(tmp_path):
    rows = _corner_rows()
    rows[3][1] = "abc"
    path = _write_csv(tmp_path / "text.csv", rows)
    with pytest.raises(io.AnnotationError, match=r"text\.csv: line 4: non-numeric value"):
        io.import_corner_csv(path)


def test_corner_csv_point_outside_image_raises(tmp_path):
    path = _write_csv(tmp_path / "big.csv", _corner_rows())
    with pytest.raises(io.AnnotationError, match=r"big\.csv: .* lies outside the image"):
        io.import_corner_csv(path, image_shape=(200, 200))
