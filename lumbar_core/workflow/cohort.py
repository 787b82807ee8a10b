"""The cohort: reading and validating a sample sheet, and sharding it for inference.

A sheet-level problem (schema violation, duplicate ``image_id``, a file that does not
exist) stops the run before any job starts, with a message naming the sheet, the line,
the image and the column. Problems inside a file (a truncated image, an annotation with
a level missing) are per-image and are recorded by the rules instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

__all__ = ["COLUMNS", "REQUIRED_COLUMNS", "SampleSheetError", "load_sample_sheet",
           "make_shards"]

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "samples.schema.yaml"


def _schema_columns(schema_path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    return tuple(schema["properties"]), tuple(schema["required"])


#: The sample sheet's columns in their order, and those it must have: read from the
#: sheet's schema, which defines them once.
COLUMNS, REQUIRED_COLUMNS = _schema_columns(SCHEMA)


class SampleSheetError(ValueError):
    """A sample sheet that cannot be run; the message names the line and the column."""


def _where(path, df, i) -> str:
    image_id = df["image_id"].iloc[i] if "image_id" in df else "?"
    return f"{path}, line {i + 2} (image_id {image_id!r})"


def load_sample_sheet(path, *, schema=SCHEMA, check_files: bool = True) -> pd.DataFrame:
    """Read, validate and index a sample sheet.

    Parameters
    ----------
    path : str or Path
        TSV with a header row; columns ``image_id, image, annotation, split, modality,
        group`` and optional ``pixel_spacing_mm`` (see ``schemas/samples.schema.yaml``).
    schema : str or Path
        JSON schema of one row, checked with ``snakemake.utils.validate``.
    check_files : bool
        Check that every image and annotation exists (default True). Dry-run benchmarks
        of very large sheets may turn it off.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``image_id``; ``image`` and ``annotation`` resolved against the sheet's
        folder (``annotation`` is ``""`` where absent); ``pixel_spacing_mm`` float or NaN.

    Raises
    ------
    SampleSheetError
        Naming the sheet, the line, the image and the column of the first problem.
    """
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"{path}: sample sheet not found")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SampleSheetError(f"{path}: not a readable TSV sample sheet ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in df]
    if missing:
        raise SampleSheetError(f"{path}: missing column(s) {', '.join(missing)}; "
                               f"expected {', '.join(COLUMNS)}")
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise SampleSheetError(f"{path}: unknown column(s) {', '.join(unknown)}; "
                               f"expected {', '.join(COLUMNS)}")
    if "annotation" not in df:
        df["annotation"] = ""
    spacing = df.get("pixel_spacing_mm", pd.Series([""] * len(df)))
    numeric = pd.to_numeric(spacing.replace("", None), errors="coerce")
    bad = spacing.ne("") & numeric.isna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise SampleSheetError(f"{_where(path, df, i)}: column 'pixel_spacing_mm': "
                               f"{spacing.iloc[i]!r} is not a number")
    records = df.drop(columns=["pixel_spacing_mm"], errors="ignore").copy()
    records["pixel_spacing_mm"] = numeric.astype(float)
    # Empty cells are absent values for the schema (an empty annotation is allowed).
    for_schema = records.replace("", None)
    try:
        validate(for_schema, str(schema))
    except WorkflowError as err:
        # snakemake raises "Error validating row i" while handling jsonschema's error.
        cause = err.__context__ if hasattr(err.__context__, "path") else None
        row = next((int(w) for w in str(err).split()[:5] if w.isdigit()), None)
        column = "/".join(str(p) for p in cause.path) if cause is not None and cause.path else None
        what = cause.message if cause is not None else str(err)
        where = _where(path, df, row) if row is not None else str(path)
        col = f"column '{column}': " if column else ""
        raise SampleSheetError(f"{where}: {col}{what}") from None
    dup = records["image_id"].duplicated(keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        first = int((records["image_id"] == records["image_id"].iloc[i]).to_numpy().nonzero()[0][0])
        raise SampleSheetError(f"{_where(path, df, i)}: column 'image_id': duplicate of line "
                               f"{first + 2}")
    base = path.parent
    for column in ("image", "annotation"):
        records[column] = [str(base / p) if p and not os.path.isabs(p) else p
                           for p in records[column]]
        if check_files:
            for i, p in enumerate(records[column]):
                if p and not os.path.isfile(p):
                    raise SampleSheetError(f"{_where(path, df, i)}: column '{column}': "
                                           f"file not found: {p}")
    return records.set_index("image_id", drop=False)


def make_shards(image_ids, shard_size: int) -> dict[str, list[str]]:
    """Split image ids into shards of about ``shard_size`` that stay put as a sheet grows.

    The ids are sorted and a new shard starts at every id whose BLAKE2b hash is a
    multiple of ``shard_size`` (and at the first id): the cuts depend on the ids alone,
    not on their positions. Adding an id to a sheet therefore changes only the shard it
    falls into (or splits that shard in two, when the new id is itself a cut), and removing
    one changes only its own shard (or merges it into the one before, when the id was a
    cut), so the sharded jobs of every other shard keep their outputs; cuts every
    ``shard_size`` positions would shift every later shard and rerun its jobs. A shard's
    key is its first id. Shards hold ``shard_size`` ids on average and vary as waiting
    times do (100,000 ids in shards of 64: 1,632 shards of 1 to 393 ids); ``shard_size`` 1
    gives one id a shard.

    Examples
    --------
    >>> make_shards(["c", "a", "b"], 1)
    {'a': ['a'], 'b': ['b'], 'c': ['c']}
    >>> shards = make_shards([f"img{k:03d}" for k in range(200)], 16)
    >>> sorted(sum(shards.values(), [])) == [f"img{k:03d}" for k in range(200)]
    True
    >>> all(key == ids[0] for key, ids in shards.items())
    True
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1; got {shard_size}")
    shards: dict[str, list[str]] = {}
    current: list[str] = []
    for image_id in sorted(image_ids):
        if not current or _cuts(image_id, shard_size):
            current = shards.setdefault(image_id, [])
        current.append(image_id)
    return shards


def _cuts(image_id: str, shard_size: int) -> bool:
    """Whether a new shard starts at ``image_id`` (a stable hash, not Python's ``hash``)."""
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_size == 0
