"""From a folder of films to a sample sheet, in one command (``lumbar-ingest``).

:func:`ingest_folder` walks a folder tree of lateral lumbar films (PNG, TIFF, JPEG and
DICOM, told apart by their content, the extension only as a hint), checks that each can
be read, and writes a sample sheet (see ``schemas/samples.schema.yaml``) that
:func:`lumbar_core.workflow.cohort.load_sample_sheet` accepts:

- ``image_id`` from the file's path relative to the folder (:func:`image_ids`): unique,
  ``[A-Za-z0-9_-]+``, and the same every time the same file is ingested;
- ``modality`` from the DICOM ``Modality`` tag where there is one (``DX`` becomes
  ``DR``, ``CR`` stays ``CR``), otherwise ``unknown``; ``group`` is ``unknown`` for an
  unlabelled film. No other DICOM tag is read and nothing of the files' metadata is
  copied: the sheet holds paths, ids, splits and these two labels only;
- ``annotation`` empty and ``split`` ``test`` for an unlabelled film (the workflow runs
  the inference-only chain on it, given trained models in the config).

A film that lies beside a corner-point CSV of the same name (``film.jpg`` and
``film.csv``: the layout of the public BUU-LSPINE lateral set [1]_) is annotated: the CSV
is converted with :func:`lumbar_core.io.import_corner_csv` into an annotation JSON
written to a folder the caller names, its ``group`` is ``abnormal`` when the CSV flags a
level (a non-zero label) and ``normal`` otherwise, and the annotated films are split
into train, validation and test sets by a seeded permutation (:func:`assign_splits`).

A file that cannot be read (truncated, corrupt, too small, not an image although its
extension says so) or a CSV that cannot be imported is reported with its path and
reason, listed in a TSV beside the sheet, and left out (a bad CSV leaves its film
unlabelled); the walk always finishes.

References
----------
.. [1] P. Klinwichit, W. Yookwan, S. Limchareon, K. Chinnasarn, J.-S. Jang and
   A. Onuean, "BUU-LSPINE: A Thai Open Lumbar Spine Dataset for Spondylolisthesis
   Detection", Applied Sciences 13(15), 8646, 2023. :DOI:`10.3390/app13158646`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .. import io

__all__ = [
    "DICOM_MODALITIES",
    "UNKNOWN",
    "IngestResult",
    "find_films",
    "image_ids",
    "dicom_modality",
    "assign_splits",
    "ingest_folder",
    "main",
]

UNKNOWN = "unknown"
"""Value of ``modality`` and ``group`` for a film whose label is not known."""

DICOM_MODALITIES = {"DX": "DR", "CR": "CR"}
"""DICOM ``Modality`` (0008,0060) to the sheet's ``modality``; any other value is unknown."""

SHEET_COLUMNS = ("image_id", "image", "annotation", "split", "modality", "group")
_SPLITS = ("train", "val", "test")
_ID_MAX = 100  # ids name every per-image output file; file names stop at 255 bytes
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class IngestResult:
    """What :func:`ingest_folder` wrote and what it left out.

    Attributes
    ----------
    sheet : pandas.DataFrame
        The rows written, columns ``image_id, image, annotation, split, modality,
        group`` (paths as written: relative to the sheet's folder).
    skipped : list of (str, str)
        ``(path, reason)`` of every file left out, and of every CSV that could not be
        imported (its film is in the sheet, unlabelled).
    n_other : int
        Files of the tree that are not films (CSV, text, hidden files...).
    seconds : float
        Wall time of the whole call.
    """

    sheet: object
    skipped: list = field(default_factory=list)
    n_other: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------- the walk
def find_films(root, *, exclude=(), on_error=None) -> tuple[list[Path], int]:
    """Files under ``root`` that are films by their extension or their first bytes.

    Parameters
    ----------
    root : str or os.PathLike
        The folder to walk (symbolic links to folders are not followed).
    exclude : iterable of path-like
        Folders not to enter (e.g. where annotations are written); default none.
    on_error : callable or None
        Called with the ``OSError`` of a folder that cannot be listed; default None
        (such folders are skipped silently). A file whose first bytes cannot be read is
        returned as a film, so that reading it reports the problem.

    Returns
    -------
    films : list of pathlib.Path
        Sorted by their path relative to ``root``. A file is a film if its extension
        is one of PNG, TIFF, JPEG or DICOM (``.png .tif .tiff .jpg .jpeg .jpe .dcm
        .dicom``, any case), or if its first bytes are those of one of these formats
        (DICOM files are often named by their UID, with no image extension).
        Hidden files and folders (name starting with ``.``) are skipped.
    n_other : int
        Files that are not films.

    Raises
    ------
    ValueError
        ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be a folder; got {str(root)!r}")
    skip = {os.path.realpath(p) for p in exclude}
    films, n_other = [], 0
    for folder, dirs, files in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(folder, d)) not in skip)
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or not path.is_file():
                n_other += 1
            elif path.suffix.lower() in io._EXTENSION_FORMAT or _sniff_file(path):
                films.append(path)
            else:
                n_other += 1
    films.sort(key=lambda p: p.relative_to(root).as_posix())
    return films, n_other


def _sniff_file(path: Path) -> str | None:
    """The format by the first bytes; ``"unreadable"`` if they cannot be read."""
    try:
        with open(path, "rb") as fh:
            return io._sniff(fh.read(132))
    except OSError:
        return "unreadable"


def image_ids(relative_paths) -> list[str]:
    """Sample-sheet ids from paths relative to the ingested folder.

    Each path loses an image extension (``.png``, ``.dcm``...; other suffixes, such as
    the last group of a DICOM UID, are kept), accents are dropped (``ü`` becomes ``u``)
    and every run of characters outside ``[A-Za-z0-9_-]`` (folder separators included)
    becomes one ``_``. Paths that give the same id (``a/b.png`` and ``a_b.dcm``), and
    ids longer than 100 characters, get ``-`` and the first 8 hex digits of the SHA-1
    of the relative path appended instead. An id therefore depends only on its own path
    and on the paths it collides with: re-ingesting a folder to which films were added
    keeps every id, unless a new film collides with an old one.

    Parameters
    ----------
    relative_paths : iterable of str or os.PathLike
        Paths relative to the folder, each unique; ``/`` or the OS separator.

    Returns
    -------
    list of str
        One id per path, in the same order, all distinct.

    Raises
    ------
    ValueError
        Two paths are the same.

    Examples
    --------
    >>> paths = ["spine 1/lat.png", "spine_1/lat.dcm", "Kohorte ünï/1.2.840.5"]
    >>> image_ids(paths)  # doctest: +ELLIPSIS
    ['spine_1_lat-...', 'spine_1_lat-...', 'Kohorte_uni_1_2_840_5']
    >>> image_ids(["b.png", "a/b.png"])
    ['b', 'a_b']
    """
    rel = [Path(p).as_posix() for p in relative_paths]
    if len(set(rel)) != len(rel):
        dup = sorted({p for p in rel if rel.count(p) > 1})
        raise ValueError(f"relative_paths must be unique; got {dup[:5]} more than once")
    bases = [_sanitise(p) for p in rel]
    count: dict[str, int] = {}
    for b in bases:
        count[b] = count.get(b, 0) + 1
    ids = []
    for p, b in zip(rel, bases):
        if count[b] > 1 or len(b) > _ID_MAX:
            b = f"{b[:_ID_MAX - 9]}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        ids.append(b)
    if len(set(ids)) != len(ids):  # a hashed id equal to a plain one: lengthen the hash
        taken = {b for b, n in count.items() if n == 1 and len(b) <= _ID_MAX}
        ids = [i if i in taken else f"{i}{hashlib.sha1(p.encode()).hexdigest()[8:16]}"
               for p, i in zip(rel, ids)]
    return ids


def _sanitise(relative: str) -> str:
    stem, suffix = os.path.splitext(relative)
    if suffix.lower() not in io._EXTENSION_FORMAT:
        stem = relative
    ascii_only = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return _NOT_ID.sub("_", ascii_only).strip("_") or "film"


def dicom_modality(path) -> str:
    """The sheet's ``modality`` of a DICOM file from its ``Modality`` tag alone.

    Only (0008,0060) is read (pydicom ``specific_tags``, stopping before the pixel
    data); ``DX`` (digital radiography) gives ``"DR"``, ``CR`` gives ``"CR"``; any
    other value, a missing tag or an unreadable header gives ``"unknown"``.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM file.

    Returns
    -------
    str
        ``"DR"``, ``"CR"`` or ``"unknown"``.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"],
                             force=True)
        value = str(ds.get("Modality", "") or "").strip().upper()
    except Exception:  # pydicom raises InvalidDicomError, EOFError, ValueError, OSError...
        return UNKNOWN
    return DICOM_MODALITIES.get(value, UNKNOWN)


def _inspect(path: str, *, verify: bool, min_size: int) -> dict:
    """Format, shape and modality of one film, or why it cannot be read.

    Runs in worker processes: never raises, returns ``{"ok": False, "reason": ...}``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # colour films are converted, as the workflow does
            if verify:
                image, props = io.read_image(path, min_size=min_size)
                fmt, shape = props["format"], props["shape"]
            else:
                fmt, shape = _header(path)
                if min(shape) < min_size:
                    raise io.ImageReadError(f"{path}: image too small: {shape[0]} x "
                                            f"{shape[1]} px (the minimum is {min_size} px)")
    except Exception as exc:  # never stop the walk; the reason names the file
        reason = str(exc) if str(exc).startswith(path) else f"{path}: {exc}"
        return {"ok": False, "reason": reason or type(exc).__name__}
    modality = dicom_modality(path) if fmt == "dicom" else UNKNOWN
    return {"ok": True, "format": fmt, "shape": tuple(int(s) for s in shape),
            "modality": modality}


def _header(path: str) -> tuple[str, tuple[int, int]]:
    """Format and (rows, cols) from the file's header, without decoding the pixels."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if not head:
        raise io.ImageReadError(f"{path}: empty file (0 bytes)")
    fmt = io._sniff(head) or io._EXTENSION_FORMAT.get(Path(path).suffix.lower(), "dicom")
    if fmt in ("png", "jpeg") and io._sniff(head) != fmt:
        raise io.ImageReadError(f"{path}: not a {io._FORMAT_NAME[fmt]} image "
                                f"(content starts with {head[:8]!r})")
    if fmt == "dicom":
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["Rows", "Columns"])
        if "Rows" not in ds or "Columns" not in ds:
            raise io.ImageReadError(f"{path}: not a DICOM image (no Rows and Columns)")
        return fmt, (int(ds.Rows), int(ds.Columns))
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            cols, rows = im.size
    except UnidentifiedImageError:
        if fmt != "tiff":
            raise
        import tifffile  # TIFF layouts Pillow does not know

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            rows, cols = int(page.imagelength), int(page.imagewidth)
    return fmt, (rows, cols)


def assign_splits(image_ids_, *, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict:
    """A seeded train/val/test split of image ids.

    The ids are sorted, permuted with ``numpy.random.default_rng(seed)``, and the first
    ``round(f_train n)`` go to ``train``, the next ``round(f_val n)`` to ``val``, the rest
    to ``test``: the same ids and seed always give the same split.

    Parameters
    ----------
    image_ids_ : iterable of str
        The ids to split (their order does not matter).
    fractions : (float, float, float)
        Train, validation and test fractions, each in [0, 1], summing to 1; default
        ``(0.7, 0.15, 0.15)``.
    seed : int
        Seed of the permutation; default 0.

    Returns
    -------
    dict of str to str
        Id to ``"train"``, ``"val"`` or ``"test"``.

    Raises
    ------
    ValueError
        ``fractions`` are not three numbers in [0, 1] summing to 1, or ``seed`` is not
        a non-negative integer.

    Examples
    --------
    >>> split = assign_splits([f"i{k}" for k in range(10)], fractions=(0.6, 0.2, 0.2))
    >>> sorted(list(split.values()).count(s) for s in ("train", "val", "test"))
    [2, 2, 6]
    """
    fractions = tuple(float(f) for f in fractions)
    if (len(fractions) != 3 or not all(0.0 <= f <= 1.0 for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6):
        raise ValueError(f"fractions must be three numbers in [0, 1] summing to 1 "
                         f"(train, val, test); got {fractions}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    ids = sorted(image_ids_)
    order = [ids[k] for k in np.random.default_rng(seed).permutation(len(ids))]
    n_train = round(fractions[0] * len(ids))
    n_val = min(round(fractions[1] * len(ids)), len(ids) - n_train)
    return {i: "train" if k < n_train else "val" if k < n_train + n_val else "test"
            for k, i in enumerate(order)}


def _corner_csv(film: Path) -> Path | None:
    for suffix in (".csv", ".CSV"):
        candidate = film.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------- the sheet
def ingest_folder(root, sheet, *, annotations=None, fractions=(0.7, 0.15, 0.15),
                  seed: int = 0, verify: bool = True, jobs: int = 1, min_size: int = 64,
                  log=None) -> IngestResult:
    """Walk a folder of films and write a validated sample sheet for it.

    Parameters
    ----------
    root : str or os.PathLike
        The folder of films (walked recursively; see :func:`find_films`).
    sheet : str or os.PathLike
        The sample sheet to write (TSV). Image and annotation paths in it are relative
        to its folder. Beside it, ``<sheet stem>.skipped.tsv`` lists every file left
        out (columns ``path, reason``; only a header when none was).
    annotations : str or os.PathLike or None
        Folder for the annotation JSONs converted from corner-point CSVs, one
        ``<image_id>.json`` per annotated film; default ``annotations/`` beside the
        sheet. Not created when no film has a CSV.
    fractions : (float, float, float)
        Train, validation and test fractions of the annotated films
        (:func:`assign_splits`); default ``(0.7, 0.15, 0.15)``. Unlabelled films are
        always ``test``, the split the workflow predicts by default.
    seed : int
        Seed of the split; default 0.
    verify : bool
        Decode every film with :func:`lumbar_core.io.read_image`, the reader the
        workflow uses, so that a truncated or corrupt file is caught here (default
        True). False reads only each file's header (faster on large archives; a film
        whose pixel data is damaged is then excluded by the workflow's ``preprocess``
        step and listed in its ``qc.tsv``). Films with a corner-point CSV are always
        decoded.
    jobs : int
        Worker processes that read the films; default 1.
    min_size : int
        Smallest accepted number of rows and of columns; default 64 (the workflow's
        ``preprocess.min_size``).
    log : file-like or None
        Where each skipped file is reported as it is found; default ``sys.stderr``.

    Returns
    -------
    IngestResult

    Raises
    ------
    ValueError
        ``root`` is not a folder, holds no readable film, or an option is out of range.
    lumbar_core.workflow.cohort.SampleSheetError
        The sheet written does not validate (a bug: it is written to be valid).
    """
    import pandas as pd

    from .cohort import load_sample_sheet

    start = time.perf_counter()
    log = sys.stderr if log is None else log
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer; got {jobs!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer; got {min_size!r}")
    assign_splits([], fractions=fractions, seed=seed)  # checks the options up front
    root, sheet = Path(root), Path(sheet)
    annotations = Path(annotations) if annotations is not None else sheet.parent / "annotations"
    skipped = []

    def unlisted(err: OSError) -> None:
        skipped.append((str(err.filename), f"{err.filename}: folder not read ({err.strerror})"))
        print(f"skipped {skipped[-1][1]}", file=log)

    films, n_other = find_films(root, exclude=[annotations], on_error=unlisted)
    csvs = [_corner_csv(f) for f in films]
    inspect = partial(_inspect, min_size=int(min_size))
    # Films with a CSV are decoded in any case: the import checks points against the shape.
    tasks = [(str(f), verify or c is not None) for f, c in zip(films, csvs)]
    if jobs > 1 and len(films) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=int(jobs)) as pool:
            found = list(pool.map(_inspect_task, [(inspect, t) for t in tasks],
                                  chunksize=max(1, len(tasks) // (8 * int(jobs)))))
    else:
        found = [inspect(p, verify=v) for p, v in tasks]

    rows = []
    ids = image_ids(f.relative_to(root) for f in films)
    for film, csv, image_id, info in zip(films, csvs, ids, found):
        if not info["ok"]:
            skipped.append((str(film), info["reason"]))
            print(f"skipped {info['reason']}", file=log)
            continue
        row = {"image_id": image_id, "image": _relative(film, sheet.parent), "annotation": "",
               "split": "test", "modality": info["modality"], "group": UNKNOWN}
        if csv is not None:
            try:
                ann = io.import_corner_csv(csv, image_shape=info["shape"])
            except (io.LumbarIOError, ValueError, OSError) as exc:
                reason = f"{exc}; {film.name} is kept unlabelled"
                skipped.append((str(csv), reason))
                print(f"annotation not imported: {reason}", file=log)
            else:
                out = annotations / f"{image_id}.json"
                io.write_annotation(out, ann)
                flagged = any(v.get("flag", 0) for v in ann["vertebrae"].values())
                row.update(annotation=_relative(out, sheet.parent),
                           group="abnormal" if flagged else "normal")
        rows.append(row)
    if not rows:
        raise ValueError(f"{root}: no readable film found ({len(films)} image file(s), "
                         f"{len(skipped)} unreadable, {n_other} other file(s))")
    table = pd.DataFrame(rows, columns=list(SHEET_COLUMNS))
    annotated = table["annotation"] != ""
    if annotated.any():
        split = assign_splits(table.loc[annotated, "image_id"], fractions=fractions, seed=seed)
        table.loc[annotated, "split"] = table.loc[annotated, "image_id"].map(split)
    sheet.parent.mkdir(parents=True, exist_ok=True)
    io.write_table(sheet, table)
    io.write_table(skipped_path(sheet), pd.DataFrame(skipped, columns=["path", "reason"]))
    load_sample_sheet(sheet)
    return IngestResult(sheet=table, skipped=skipped, n_other=n_other,
                        seconds=time.perf_counter() - start)


def _inspect_task(task):
    inspect, (path, verify) = task
    return inspect(path, verify=verify)


def skipped_path(sheet) -> Path:
    """The list of skipped files written beside ``sheet``: ``<stem>.skipped.tsv``."""
    sheet = Path(sheet)
    return sheet.with_name(f"{sheet.stem}.skipped.tsv")


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


# ----------------------------------------------------------------------------- command line
def _fraction_triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST fractions; got {text!r}")
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions TRAIN,VAL,TEST; got {text!r}")
    return values


def main(argv=None) -> int:
    """The ``lumbar-ingest`` command; ``python -m lumbar_core.workflow.ingest --help`` for usage."""
    parser = argparse.ArgumentParser(
        prog="lumbar-ingest",
        description="Walk a folder of lateral lumbar films (DICOM, PNG, TIFF, JPEG) and "
                    "write a validated sample sheet for the workflow. Unlabelled films get "
                    "split 'test' and modality (from the DICOM Modality tag) or group "
                    "'unknown'; films with a BUU-LSPINE corner-point CSV beside them are "
                    "annotated and split into train/val/test.")
    parser.add_argument("folder", type=Path, help="folder of films, walked recursively")
    parser.add_argument("sheet", type=Path, help="sample sheet to write (TSV)")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="folder for annotation JSONs converted from corner-point CSVs "
                             "(default: annotations/ beside the sheet)")
    parser.add_argument("--split", type=_fraction_triple, default=(0.7, 0.15, 0.15),
                        metavar="TRAIN,VAL,TEST",
                        help="fractions of the annotated films (default 0.7,0.15,0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="read only each film's header instead of decoding it; damaged "
                             "pixel data is then caught by the workflow's preprocess step")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--min-size", type=int, default=64,
                        help="smallest accepted image side in pixels (default 64)")
    args = parser.parse_args(argv)
    try:
        result = ingest_folder(args.folder, args.sheet, annotations=args.annotations,
                               fractions=args.split, seed=args.seed, verify=not args.quick,
                               jobs=args.jobs, min_size=args.min_size)
    except ValueError as err:
        print(f"lumbar-ingest: error: {err}", file=sys.stderr)
        return 1
    table = result.sheet
    counts = table.loc[table["annotation"] != "", "split"].value_counts()
    labelled = (f"; {int(counts.sum())} annotated ("
                + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in _SPLITS) + ")"
                if counts.sum() else "")
    print(f"wrote {args.sheet}: {len(table)} film(s){labelled}; "
          f"{len(result.skipped)} skipped (listed in {skipped_path(args.sheet)}), "
          f"{result.n_other} other file(s) ignored; {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
