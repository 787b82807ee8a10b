"""Rules of ``rules/morphometry.smk``: beyond the paper, vertebral heights and Genant grades."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import LEVELS, io
from ._common import NO_IMAGE_IN_SPLITS, StrPath, read_rows, status_of

__all__ = ["morphometry", "morphometry_table", "fracture_figure"]


def morphometry(*, image_id: str, refined: StrPath, geometry: StrPath, peaks: StrPath,
                out: StrPath, points: StrPath | None = None,
                masks: StrPath | None = None) -> None:
    """Rule ``morphometry``: heights and Genant grades of L1..L5 for one image.

    Rows for the pipeline's masks (``source = "PN+MNet+LS"``, in the input grid, with the
    image's pixel spacing) and, where the image is annotated, for the ground-truth masks
    (``"ground truth mask"``, the method's ceiling), each with the annotation's own grade,
    type and outline heights as ``true_*`` columns
    (:func:`lumbar_core.morphometry.measure_spine`,
    :func:`lumbar_core.morphometry.heights_from_outline`).

    Parameters
    ----------
    image_id : str
        The image's id.
    refined : path
        Its refined masks npz (rule ``levelset_refine``).
    geometry : path
        Its geometry JSON (the pixel spacing).
    peaks : path
        Its detected centres JSON (the anterior side).
    out : path
        Output TSV, one row per level and source.
    points, masks : path, optional
        Its ground-truth JSON and masks npz, where annotated.
    """
    import pandas as pd

    from ..morphometry import heights_from_outline, measure_spine, spine_anterior_direction

    labels = io.load_npz(refined)
    status, message = status_of(labels)
    spacing = io.read_json(geometry).get("pixel_spacing_mm")
    frames = []
    if status == "ok":
        # The anterior side from the five detected centres (the lordosis bulges forward),
        # so that an image with fewer than three segmented levels is still measured.
        try:
            anterior = spine_anterior_direction(io.read_json(peaks)["centres_input"])
        except ValueError:
            anterior = None
        try:
            frames.append(measure_spine(labels["mnet_labels_input"], spacing_mm=spacing,
                                        anterior=anterior).assign(source="PN+MNet+LS"))
        except ValueError as err:
            status, message = "not measured", str(err)
    if status != "ok":
        frames.append(pd.DataFrame({"level": list(LEVELS), "source": "PN+MNet+LS",
                                    "status": status, "message": message}))
    truth = io.read_json(points) if points else {}
    if truth.get("status") == "ok":
        gt = measure_spine(io.load_npz(masks)["input"], spacing_mm=spacing,
                           anterior=truth.get("anterior"))
        frames.append(gt.assign(source="ground truth mask"))
        true_heights = pd.DataFrame([heights_from_outline(np.array(o), spacing_mm=spacing)
                                     for o in truth["outlines_input"]])
        true_heights = true_heights.add_prefix("true_").assign(
            level=list(LEVELS), true_grade=truth["genant_grade"], true_type=truth["genant_type"])
        frames = [f.merge(true_heights, on="level", how="left") for f in frames]
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "image_id", image_id)
    table["status"] = table["status"].fillna("ok") if "status" in table else "ok"
    table["message"] = table["message"].fillna("") if "message" in table else ""
    io.write_table(out, table)


def morphometry_table(*, heights: Sequence[StrPath], out_rows: StrPath,
                      out_agreement: StrPath, out_counts: StrPath) -> dict:
    """Rule ``morphometry_table``: the cohort's heights, grade counts and agreement.

    Agreement with the annotated grades (confusion matrix, weighted kappa, sensitivity and
    specificity for "any fracture" and "grade >= 2", mean absolute height error) is given
    for the ground-truth masks (the ceiling of the method) and for the pipeline's masks
    (:func:`lumbar_core.morphometry.agreement_summary`).

    Parameters
    ----------
    heights : sequence of path
        The per-image TSVs of rule ``morphometry``.
    out_rows, out_agreement, out_counts : path
        Output TSVs: every row, the agreement per source, vertebrae per source and grade.

    Returns
    -------
    dict
        ``rows`` (how many) and ``agreement`` (the rows of ``out_agreement``).

    Raises
    ------
    ValueError
        No image to measure: no image in the splits the run predicts (or, in a fresh clone,
        no demo cohort written yet).
    """
    import pandas as pd

    from ..morphometry import agreement_summary

    if not heights:
        raise ValueError("The morphometry table has no image to measure: "
                         + NO_IMAGE_IN_SPLITS.format(what=""))
    rows = read_rows(heights)
    io.write_table(out_rows, rows)
    counts = (rows.dropna(subset=["grade"]).groupby(["source", "grade"]).size()
              .rename("vertebrae").reset_index()) if "grade" in rows else pd.DataFrame()
    io.write_table(out_counts, counts)
    summary = agreement_summary(rows)
    io.write_table(out_agreement, pd.DataFrame(summary))
    return {"rows": len(rows), "agreement": summary}


def fracture_figure(*, rows: StrPath, inputs: Mapping[str, Mapping[str, StrPath]],
                    out_stem: StrPath, n: int = 6) -> list[str]:
    """Rule ``fracture_figure``: the ``n`` most reduced vertebrae graded >= 1 by the pipeline.

    Vertebrae whose annotation says fractured come first, so the figure shows what the
    grading is for (:func:`lumbar_core.plots.choose_fracture_rows`).

    Parameters
    ----------
    rows : path
        The cohort's ``morphometry.tsv``.
    inputs : dict
        Image id to ``{"image": path, "refined": path}``.
    out_stem : path
        Output path without extension (PNG and PDF).
    n : int, optional
        Number of vertebrae shown; default 6.

    Returns
    -------
    list of str
        ``"<image_id> <level>"`` of each vertebra shown.
    """
    import pandas as pd

    from ..plots import choose_fracture_rows, plot_fracture_examples
    from ..preprocess import normalise_intensity

    table = io.read_table(rows, dtype={"image_id": str})
    ours = table[table["source"] == "PN+MNet+LS"]
    # No vertebra of the cohort measured (every detection failed or implausible, none
    # annotated): the table has its status columns only, and the figure says so.
    chosen = choose_fracture_rows(ours, n) if "grade" in ours else ours.iloc[:0]
    examples = []
    for _, row in chosen.iterrows():
        paths = inputs[row["image_id"]]
        raw, _ = io.read_image(paths["image"])
        labels = io.load_npz(paths["refined"])["mnet_labels_input"]
        truth = f", annotated {int(row['true_grade'])} {row['true_type']}" if pd.notna(
            row.get("true_grade")) else ""
        examples.append({"image": normalise_intensity(raw),
                         "mask": labels == LEVELS.index(row["level"]) + 1, "row": row,
                         "title": f"{row['image_id']} {row['level']}: grade {int(row['grade'])} "
                                  f"{row['type']}{truth}"})
    plot_fracture_examples(examples, Path(out_stem))
    return [f"{e['row']['image_id']} {e['row']['level']}" for e in examples]
