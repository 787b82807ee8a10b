"""Rule of ``rules/demo.smk``: the synthetic demo cohort and its contact sheet."""

from __future__ import annotations

from pathlib import Path

from .. import io
from ._common import StrPath

__all__ = ["make_demo_cohort"]


def make_demo_cohort(*, out_dir: StrPath, contact_sheet: StrPath, seed: int, n_train: int,
                     n_val: int, n_test_per_stratum: int, difficulty: float = 1.0,
                     style: str = "classic", contact_sheet_images: int = 8,
                     workers: int = 1) -> Path:
    """Rule ``make_demo_cohort``: images, annotations and sample sheet, then a contact sheet.

    The cohort is :func:`lumbar_core.phantom.write_demo_cohort`'s; the contact sheet
    shows ``contact_sheet_images`` images with their ground-truth outlines, one of each
    split x modality x group first, then the rest in sheet order.

    Parameters
    ----------
    out_dir : path
        Folder of the cohort (``images/``, ``annotations/``, ``samples.tsv``).
    contact_sheet : path
        Output PNG of the contact sheet.
    seed, n_train, n_val, n_test_per_stratum, difficulty, style, workers
        Passed to :func:`lumbar_core.phantom.write_demo_cohort`.
    contact_sheet_images : int, optional
        Number of images on the contact sheet; default 8.

    Returns
    -------
    Path
        The sample sheet written.
    """
    from ..phantom import write_demo_cohort
    from ..plots import contact_sheet as draw_contact_sheet
    from ..preprocess import normalise_intensity
    from ..workflow.cohort import load_sample_sheet

    sheet_path = write_demo_cohort(out_dir, seed=seed, n_train=n_train, n_val=n_val,
                                   n_test_per_stratum=n_test_per_stratum,
                                   difficulty=difficulty, style=style, workers=workers)
    sheet = load_sample_sheet(sheet_path)
    # One image of each split x modality x group first, then the rest in sheet order.
    first = sheet.groupby(["split", "modality", "group"], sort=True).head(1)
    picks = sheet.loc[list(dict.fromkeys(list(first.index) + list(sheet.index)))[
        :contact_sheet_images]]
    images, annotations, titles = [], [], []
    for image_id, row in picks.iterrows():
        raw, _ = io.read_image(row["image"])
        images.append(normalise_intensity(raw))
        annotations.append(io.read_annotation(row["annotation"]))
        titles.append(f"{image_id} ({row['modality']}, {row['group']})")
    draw_contact_sheet(images, annotations, contact_sheet, titles=titles)
    return sheet_path
