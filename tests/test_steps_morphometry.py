"""lumbar_core.steps.morphometry: the cohort table and the fracture figure."""

import numpy as np
import pandas as pd
import pytest

from lumbar_core import io
from lumbar_core.steps.morphometry import fracture_figure, morphometry_table


@pytest.mark.parametrize("grades", [{"grade": [np.nan, np.nan]}, {}],
                         ids=["grade-column-empty", "no-grade-column"])
def test_fracture_figure_of_a_cohort_with_no_graded_vertebra(tmp_path, grades):
    # Every detection failed or was implausible: the morphometry table has its status
    # columns but no heights (an unannotated cohort: not even a grade column), and the
    # figure is drawn empty instead of failing the run.
    table = tmp_path / "morphometry.tsv"
    io.write_table(table, pd.DataFrame({"image_id": ["a", "a"], "source": ["PN+MNet+LS"] * 2,
                                        "level": ["L1", "L2"], "status": ["implausible"] * 2,
                                        "message": ["tilt"] * 2, **grades}))
    assert fracture_figure(rows=table, inputs={}, out_stem=tmp_path / "fracture_examples") == []
    assert (tmp_path / "fracture_examples.png").exists()


def test_morphometry_table_without_an_image_says_so(tmp_path):
    # `snakemake results/tables/morphometry.tsv` in a fresh clone, before the demo cohort
    # is written: a clear error, not an empty table that looks like a result.
    outputs = {f"out_{name}": tmp_path / f"{name}.tsv" for name in ("rows", "agreement", "counts")}
    with pytest.raises(ValueError, match="no image to measure.*predict_splits.*make demo"):
        morphometry_table(heights=[], **outputs)
    assert not list(tmp_path.iterdir())
