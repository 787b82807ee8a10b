"""The bad-input catalogue: each bad file gives its exact, recorded outcome.

Per-image problems never raise out of a rule: the image is recorded as ``excluded`` with
a message naming the file and the problem, and the rest of the cohort goes on. Sheet-level
problems (tests/test_cohort.py) stop the run before it starts.
"""

import json
import warnings

import imageio.v3 as iio
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset

from lumbar_core import io, phantom_io
from lumbar_core.steps.preprocess import ground_truth, preprocess

SETTINGS = {"clahe_clip_limit": 0.01, "clahe_kernel_size": None, "gaussian_sigma": 2.0,
            "min_size": 64}


def _spine_image(rows=400, cols=300):
    rng = np.random.default_rng(0)
    image = rng.normal(2000, 50, (rows, cols))
    image[100:300, 120:200] += 800
    return np.clip(image, 0, 65535).astype(np.uint16)


def _preprocess(tmp_path, path):
    out_io, out_geo = tmp_path / "out.npz", tmp_path / "out.geometry.json"
    record = preprocess(image=path, out_io=out_io, out_geometry=out_geo, image_id="x",
                        settings=SETTINGS)
    geometry = io.read_json(out_geo)
    assert geometry["status"] == record["status"]
    assert str(io.load_npz(out_io)["status"]) == record["status"]
    return record


def _png_bytes():
    return iio.imwrite("<bytes>", _spine_image(), extension=".png")


@pytest.mark.parametrize("name, make, problem", [
    ("zero.png", lambda p: p.write_bytes(b""), "empty file"),
    ("truncated.png", lambda p: p.write_bytes(_png_bytes()[:300]), "truncated"),
    ("text.png", lambda p: p.write_text("not an image\n"), "not a PNG image"),
    ("tiny.png", lambda p: phantom_io.write_png16(p, np.ones((1, 1), np.uint16)), "too small"),
    ("zeros.tiff", lambda p: phantom_io.write_tiff(p, np.zeros((400, 300), np.uint16)), "no contrast"),
    ("narrow.png", lambda p: phantom_io.write_png16(p, _spine_image(400, 40)), "too small"),
])
def test_unusable_image_is_excluded_with_file_and_problem(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)
    record = _preprocess(tmp_path, path)
    assert record["status"] == "excluded"
    assert problem in record["message"]
    if problem not in ("no contrast",) and name != "narrow.png":
        assert str(path) in record["message"]


def _dicom(path, *, pixels=True, photometric="MONOCHROME2", slope=1.0, intercept=0.0,
           patient="Doe^Jane"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["x"])
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = patient, "SECRET-4711"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 400, 300
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing = [0.15, 0.15]
    if pixels:
        stored = (_spine_image() // 16).astype(np.uint16)
        if photometric == "MONOCHROME1":
            stored = 4095 - stored
        ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_without_pixel_data_is_excluded(tmp_path):
    record = _preprocess(tmp_path, _dicom(tmp_path / "nopixels.dcm", pixels=False))
    assert record["status"] == "excluded" and "nopixels.dcm" in record["message"]
    assert "pixel data" in record["message"].lower()


def test_dicom_monochrome1_with_rescale_is_inverted_and_kept(tmp_path):
    path = _dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1", slope=2.0, intercept=-100.0)
    raw, props = io.read_image(path)
    body, soft = raw[200, 160], raw[50, 50]
    assert body > soft  # bone bright after inversion
    assert props["pixel_spacing_mm"] == (0.15, 0.15)
    assert _preprocess(tmp_path, path)["status"] == "ok"
    assert io.read_json(tmp_path / "out.geometry.json")["pixel_spacing_mm"] == [0.15, 0.15]


def test_patient_name_never_reaches_an_output(tmp_path):
    path = _dicom(tmp_path / "named.dcm")
    _preprocess(tmp_path, path)
    for out in (tmp_path / "out.npz", tmp_path / "out.geometry.json"):
        data = out.read_bytes()
        assert b"Doe" not in data and b"SECRET-4711" not in data


def test_rgb_jpeg_is_converted_with_a_warning(tmp_path):
    path = tmp_path / "colour.jpg"
    grey = (_spine_image() // 256).astype(np.uint8)
    iio.imwrite(path, np.stack([grey] * 3, axis=-1))
    with pytest.warns(UserWarning, match="colour.jpg"):
        record = _preprocess(tmp_path, path)
    assert record["status"] == "ok"


def _annotation(tmp_path, mutate):
    vertebrae = {}
    for k in range(5):
        cy = 60 + 60 * k
        corners = [[120, cy - 20], [200, cy - 20], [200, cy + 20], [120, cy + 20]]
        outline = []
        for a, b in zip(corners, corners[1:] + corners[:1]):
            outline += [a, [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]]
        vertebrae[f"L{k + 1}"] = {"centre": [160.0, float(cy)], "outline": outline}
    ann = {"vertebrae": vertebrae}
    mutate(ann)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann).replace("NaN_", "NaN"))
    return path


@pytest.mark.parametrize("mutate, problem", [
    (lambda a: a["vertebrae"]["L3"]["centre"].__setitem__(0, float("nan")), "finite"),
    (lambda a: a["vertebrae"].pop("L5"), "missing level L5"),
    (lambda a: a["vertebrae"]["L1"]["outline"].__setitem__(0, [120.0, -50.0]), "outside"),
    (lambda a: a["vertebrae"]["L2"]["outline"].pop(), "has 7 points, expected 8"),
])
def test_bad_annotation_is_excluded_and_named(tmp_path, mutate, problem):
    image = tmp_path / "ok.png"
    phantom_io.write_png16(image, _spine_image())
    assert _preprocess(tmp_path, image)["status"] == "ok"
    ann = _annotation(tmp_path, mutate)
    record = ground_truth(annotation=ann, geometry=tmp_path / "out.geometry.json",
                          out_points=tmp_path / "gt.json", out_masks=tmp_path / "gt.npz")
    assert record["status"] == "excluded"
    assert problem in record["message"] and "ann.json" in record["message"]
    assert io.read_json(tmp_path / "gt.json")["status"] == "excluded"


def test_good_annotation_gives_masks_in_every_grid(tmp_path):
    image = tmp_path / "ok.png"
    phantom_io.write_png16(image, _spine_image())
    _preprocess(tmp_path, image)
    ann = _annotation(tmp_path, lambda a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = ground_truth(annotation=ann, geometry=tmp_path / "out.geometry.json",
                              out_points=tmp_path / "gt.json", out_masks=tmp_path / "gt.npz")
    assert record["status"] == "ok"
    masks = io.load_npz(tmp_path / "gt.npz")
    assert masks["input"].shape == (400, 300) and masks["io"].shape == (3072, 1536)
    assert masks["i"].shape == (512, 256)
    assert set(np.unique(masks["input"])) == {0, 1, 2, 3, 4, 5}
    # an 80 x 40 px box (corner to corner) fills 81 x 41 pixel centres
    assert np.count_nonzero(masks["input"] == 3) == 81 * 41
    points = io.read_json(tmp_path / "gt.json")
    assert np.allclose(points["centres_input"][2], [160, 180])


def test_unicode_and_spaces_in_paths(tmp_path):
    from lumbar_core.workflow.cohort import load_sample_sheet

    folder = tmp_path / "Röntgen Bilder" / "Ω site 2"
    folder.mkdir(parents=True)
    phantom_io.write_png16(folder / "bild 1 ä.png", _spine_image())
    sheet = folder / "proben liste.tsv"
    sheet.write_text("image_id\timage\tannotation\tsplit\tmodality\tgroup\n"
                     "b1\tbild 1 ä.png\t\ttest\tDR\tnormal\n", encoding="utf-8")
    df = load_sample_sheet(sheet)
    assert df.loc["b1", "image"] == str(folder / "bild 1 ä.png")
    assert _preprocess(tmp_path, df.loc["b1", "image"])["status"] == "ok"


def test_morphometry_records_an_image_it_cannot_measure(tmp_path):
    """A pipeline mask with one vertebra left is recorded as not measured, never a crash."""
    from lumbar_core.steps.morphometry import morphometry

    labels = np.zeros((400, 300), np.uint8)
    labels[100:140, 120:200] = 3
    io.save_npz(tmp_path / "refined.npz", mnet_labels_input=labels, status="ok", message="")
    io.write_json(tmp_path / "geometry.json", {"status": "ok", "pixel_spacing_mm": None})
    io.write_json(tmp_path / "peaks.json", {"status": "ok", "centres_input": [[160, 60]] * 5})
    morphometry(image_id="x", refined=tmp_path / "refined.npz",
                geometry=tmp_path / "geometry.json", peaks=tmp_path / "peaks.json",
                out=tmp_path / "out.tsv")
    rows = io.read_table(tmp_path / "out.tsv")
    assert len(rows) == 5 and set(rows["source"]) == {"PN+MNet+LS"}
    # five identical centres give no anterior side, and one level cannot give it either
    assert (rows["status"] == "not measured").all()
    assert rows["message"].str.contains("anterior").all()
