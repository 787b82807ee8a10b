"""A generated folder of small films, as an archive export looks, for lumbar-ingest.

Used by tests/test_ingest.py and benchmarks/ingest.py: PNG, TIFF, JPEG and DICOM films
in nested folders (names with spaces and accents), DICOMs with ``Modality`` DX, CR and OT
and patient data in their headers, a BUU-LSPINE-style subset (each ``*.jpg`` beside a
corner-point ``*.csv``), unreadable files and files that are not films.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from lumbar_core import phantom_io

#: Patient data written into every DICOM header; it must never reach the sheet.
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042"


def corner_rows(*, flagged: bool = False, shift: float = 0.0) -> list[list[float]]:
    """11 BUU-LSPINE rows ``x1,y1,x2,y2,label``, L1 upper .. S1 upper, belly on the left.

    Bodies 30 px apart in a 200 x 160 film; the middle ones bulge to the left (lordosis).
    """
    bulge = [0.0, -4.0, -6.0, -4.0, 0.0]
    rows = []
    for k, dx in enumerate(bulge):
        top, bottom = 20.0 + 30 * k + shift, 42.0 + 30 * k + shift
        left, right = 50.0 + dx, 90.0 + dx
        label = 1 if flagged and k == 3 else 0
        rows += [[left, top, right, top, label], [left, bottom, right, bottom, label]]
    rows.append([55.0, 182.0 + shift, 92.0, 172.0 + shift, 0])
    return rows


def _dicom(path: Path, pixels, modality: str | None) -> None:
    import pydicom

    phantom_io.write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    if modality is None:
        del ds.Modality
    else:
        ds.Modality = modality
    ds.save_as(path)


def write_film_tree(root, n_films: int = 1000, *, seed: int = 0) -> dict:
    """Write ``n_films`` readable films (plus bad and other files) under ``root``.

    Returns
    -------
    dict
        ``films``: relative path -> expected ``{"modality", "annotated", "group"}`` of
        every readable film; ``unreadable``: relative paths that must be reported;
        ``other``: relative paths of files that are not films.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    films, unreadable, other = {}, [], []

    def film(rel, modality="unknown", annotated=False, group="unknown"):
        films[rel] = {"modality": modality, "annotated": annotated, "group": group}
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    n_buu = max(4, n_films // 20)
    n_dicom = max(4, n_films // 50)
    for k in range(n_buu):  # BUU-LSPINE style: 0001.jpg + 0001.csv
        flagged = k % 3 == 0
        path = film(f"buu/{k:04d}.jpg", annotated=True, group="abnormal" if flagged else "normal")
        iio.imwrite(path, rng.integers(0, 255, (200, 160), dtype=np.uint8), extension=".jpg")
        rows = corner_rows(flagged=flagged, shift=float(k % 5))
        path.with_suffix(".csv").write_text(
            "".join(",".join(f"{v:g}" for v in r) + "\n" for r in rows))
    modalities = ["DX", "CR", "OT", None]
    for k in range(n_dicom):  # DICOM, some named by their UID (no image extension)
        modality = modalities[k % 4]
        rel = (f"dicom/Patient ünï {k % 3}/1.2.826.0.1.{k}" if k % 2
               else f"dicom/series {k}/img.dcm")
        expected = {"DX": "DR", "CR": "CR"}.get(modality, "unknown")
        _dicom(film(rel, modality=expected), rng.integers(0, 4095, (72, 64), dtype=np.uint16),
               modality)
    for k in range(n_films - n_buu - n_dicom):  # plain PNG, TIFF and JPEG films
        kind = ("png", "tif", "jpg")[k % 3]
        path = film(f"plain/batch {k // 100}/film {k}.{kind}")
        pixels = rng.integers(0, 255, (64 + k % 7, 64), dtype=np.uint8)
        if kind == "tif":
            phantom_io.write_tiff(path, pixels.astype(np.uint16) * 200)
        elif kind == "png":
            phantom_io.write_png16(path, pixels.astype(np.uint16) * 200)
        else:
            iio.imwrite(path, pixels, extension=".jpg")
    # Files that must be reported: truncated, empty, mislabelled, too small.
    bad = root / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    good_png = next(root.glob("plain/**/*.png")).read_bytes()
    (bad / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.tif").write_text("not an image\n")
    phantom_io.write_png16(bad / "tiny.png", np.zeros((10, 10), np.uint16))
    unreadable += ["bad/truncated.png", "bad/empty.jpg", "bad/notes.tif", "bad/tiny.png"]
    # Files that are not films.
    (root / "README.txt").write_text("export of 2024\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "plain" / "index.json").write_text("{}")
    other += ["README.txt", ".DS_Store", "plain/index.json"]
    other += [f"buu/{k:04d}.csv" for k in range(n_buu)]
    return {"films": films, "unreadable": unreadable, "other": other}
