"""Tests of lumbar_core.tables: bootstrap, Table 1, Table 2 and the table writer."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lumbar_core.metrics import LEVELS
from lumbar_core.tables import (
    PAPER_TABLE1,
    PAPER_TABLE2,
    STRATA,
    bootstrap_ci,
    table1,
    table2,
    write_table,
)

# Four images: A (DR normal) and B (CR abnormal) succeed; C (DR abnormal) finds fewer than
# five peaks; D (CR normal) finds five centres on the wrong levels.
SHEET = pd.DataFrame({
    "image_id": ["A", "B", "C", "D", "T"],
    "split": ["test", "test", "test", "test", "train"],
    "modality": ["DR", "CR", "DR", "CR", "DR"],
    "group": ["normal", "abnormal", "abnormal", "normal", "normal"],
})
ERRORS = {"A": [1, 2, 3, 4, 5], "B": [3, 4, 5, 6, 7], "C": [np.nan] * 5, "D": [90] * 5}
SUCCESS = {"A": True, "B": True, "C": False, "D": False}
STATUS = {"A": "ok", "B": "ok", "C": "failed: fewer than five peaks", "D": "ok"}


def _loc_rows(mm_for_a=False):
    rows = []
    for image, errors in ERRORS.items():
        for lev, e in zip(LEVELS, errors):
            rows.append({"image_id": image, "level": lev, "error_px": e,
                         "error_mm": e * 0.1 if (mm_for_a and image == "A") else np.nan,
                         "success": SUCCESS[image], "status": STATUS[image]})
    return pd.DataFrame(rows)


def _this_run(df):
    return df.loc[df["source"] == "this run"]


def test_bootstrap_ci_seeded_and_contains_mean():
    x = np.random.default_rng(3).normal(10.0, 2.0, size=40)
    ci = bootstrap_ci(x, n_boot=500, seed=7)
    assert ci == bootstrap_ci(x, n_boot=500, seed=7)
    assert ci != bootstrap_ci(x, n_boot=500, seed=8)
    assert ci[0] < x.mean() < ci[1]
    narrow = bootstrap_ci(x, n_boot=500, seed=7, level=0.5)
    assert ci[0] <= narrow[0] < narrow[1] <= ci[1]


def test_bootstrap_ci_edge_cases():
    assert all(np.isnan(bootstrap_ci([])))
    assert all(np.isnan(bootstrap_ci([np.nan])))
    assert bootstrap_ci([4.0, np.nan]) == (4.0, 4.0)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"n_boot": 2.5}, {"level": 1.0},
                                    {"level": 0.0}])
def test_bootstrap_ci_bad_options(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_table1_success_rates_and_means():
    t = table1(_loc_rows(), SHEET, n_boot=200)
    run = _this_run(t).set_index("stratum")
    assert list(run.index) == list(STRATA)
    # stratum: (n images, n succeeded)
    expected = {"all": (4, 2), "DR": (2, 1), "CR": (2, 1), "normal": (2, 1), "abnormal": (2, 1)}
    for stratum, (n, n_ok) in expected.items():
        assert run.loc[stratum, "n_images"] == n
        assert run.loc[stratum, "n_succeeded"] == n_ok
        assert run.loc[stratum, "success_rate_pct"] == pytest.approx(100 * n_ok / n)
    # all: L1 errors of A and B are 1 and 3; D (wrong levels, 90 px) is excluded.
    assert run.loc["all", "L1_px_mean"] == pytest.approx(2.0)
    assert run.loc["all", "L1_px_sd"] == pytest.approx(np.sqrt(2.0))
    assert run.loc["all", "L5_px_mean"] == pytest.approx(6.0)
    assert run.loc["all", "all_px_mean"] == pytest.approx(40 / 10)
    assert run.loc["all", "all_px_sd"] == pytest.approx(np.std([*ERRORS["A"], *ERRORS["B"]],
                                                              ddof=1))
    assert run.loc["DR", "L3_px_mean"] == 3.0 and np.isnan(run.loc["DR", "L3_px_sd"])
    assert run.loc["CR", "all_px_mean"] == pytest.approx(5.0)
    lo, hi = run.loc["all", "all_px_ci_low"], run.loc["all", "all_px_ci_high"]
    assert 3.0 <= lo <= 4.0 <= hi <= 5.0  # resamples the per-image means 3 and 5
    assert run["L1_mm_mean"].isna().all()
    assert (run["n_with_spacing"] == 0).all()


def test_table1_mm_and_paper_row():
    t = table1(_loc_rows(mm_for_a=True), SHEET, n_boot=50)
    run = _this_run(t).set_index("stratum")
    assert run.loc["all", "n_with_spacing"] == 1
    assert run.loc["all", "L2_mm_mean"] == pytest.approx(0.2)
    paper = t.loc[t["source"] == "paper (Table 1)"].iloc[0]
    assert paper["L1_px_mean"] == 26.84 and paper["all_px_sd"] == 10.86
    assert paper["success_rate_pct"] == PAPER_TABLE1["success_rate_pct"] == 96.25
    assert list(t["source"]).index("paper (Table 1)") == 1  # beside this run's "all"
    no_paper = table1(_loc_rows(), SHEET, n_boot=50, include_paper=False)
    assert set(no_paper["source"]) == {"this run"}


def test_table1_notes_count_exclusions():
    notes = " ".join(table1(_loc_rows(), SHEET, n_boot=20).attrs["notes"])
    assert "2 of 4 images" in notes
    assert "failed: fewer than five peaks: 1" in notes


@pytest.mark.parametrize("case", ["mixed_success", "unknown_image", "bad_level", "missing"])
def test_table1_bad_input(case):
    rows = _loc_rows()
    if case == "mixed_success":
        rows.loc[0, "success"] = False
    elif case == "unknown_image":
        rows.loc[rows["image_id"] == "A", "image_id"] = "Z"
    elif case == "bad_level":
        rows.loc[0, "level"] = "T12"
    else:
        rows = rows.drop(columns="success")
    with pytest.raises(ValueError):
        table1(rows, SHEET, n_boot=10)


DICE = {  # per-image Dice of the successful segmentations
    "PN+MNet+LS": {"A": 0.90, "B": 0.80, "D": 0.70},
    "PN+MNet": {"A": 0.90, "B": 0.80, "D": 0.70},  # identical to the reference
    "Orig MNet": {"A": 0.85, "B": 0.60, "C": 0.75, "D": 0.50},
}


def _seg_rows():
    rows = []
    for method, dice in DICE.items():
        for image in "ABCD":
            failed = image not in dice
            d = 0.0 if failed else dice[image]
            for level in ("all", "L1"):
                rows.append({"image_id": image, "method": method, "level": level,
                             "status": "detection failed" if failed else "ok",
                             "dice": d, "jaccard": d / (2 - d),
                             "precision": np.nan if failed else d,
                             "sensitivity": 0.0 if failed else d,
                             "specificity": 1.0 if failed else 0.99})
    return pd.DataFrame(rows)


def _cell(t, method, stratum, column):
    run = _this_run(t)
    return run.loc[(run["method"] == method) & (run["stratum"] == stratum), column].item()


def test_table2_paper_style_vs_all_images():
    t = table2(_seg_rows(), SHEET, n_boot=200)
    ref = "PN+MNet+LS"
    assert _cell(t, ref, "all", "dice_mean") == pytest.approx(100 * 2.4 / 3)
    assert _cell(t, ref, "all", "dice_all_images_mean") == pytest.approx(100 * 2.4 / 4)
    # C (the failed detection) is DR and abnormal: the columns differ exactly there.
    for stratum in STRATA:
        style = _cell(t, ref, stratum, "dice_mean")
        every = _cell(t, ref, stratum, "dice_all_images_mean")
        if stratum in ("all", "DR", "abnormal"):
            assert every < style
        else:
            assert every == pytest.approx(style)
        orig = (_cell(t, "Orig MNet", stratum, "dice_mean"),
                _cell(t, "Orig MNet", stratum, "dice_all_images_mean"))
        assert orig[0] == pytest.approx(orig[1])
    assert _cell(t, ref, "all", "n_failed") == 1
    assert _cell(t, ref, "all", "n_succeeded") == 3
    assert _cell(t, ref, "all", "jaccard_mean") == pytest.approx(
        100 * np.mean([d / (2 - d) for d in (0.9, 0.8, 0.7)]))


def test_table2_strata_counts():
    t = table2(_seg_rows(), SHEET, n_boot=20)
    for method in DICE:
        counts = {s: _cell(t, method, s, "n_images") for s in STRATA}
        assert counts == {"all": 4, "DR": 2, "CR": 2, "normal": 2, "abnormal": 2}
    assert _cell(t, "PN+MNet", "DR", "n_succeeded") == 1


def test_table2_wilcoxon():
    t = table2(_seg_rows(), SHEET, n_boot=20)
    assert np.isnan(_cell(t, "PN+MNet+LS", "all", "wilcoxon_p"))
    assert np.isnan(_cell(t, "PN+MNet", "all", "wilcoxon_p"))  # all differences 0
    ref = [0.90, 0.80, 0.0, 0.70]
    orig = [0.85, 0.60, 0.75, 0.50]
    expected = stats.wilcoxon(orig, ref).pvalue
    assert _cell(t, "Orig MNet", "all", "wilcoxon_p") == pytest.approx(expected)
    assert _cell(t, "Orig MNet", "all", "wilcoxon_n") == 4


def test_table2_seeded_and_ci_contains_mean():
    rows = _seg_rows()
    a = table2(rows, SHEET, n_boot=300, seed=5)
    b = table2(rows, SHEET, n_boot=300, seed=5)
    pd.testing.assert_frame_equal(a, b)
    run = _this_run(a)
    for m in ("dice", "dice_all_images", "sensitivity"):
        ok = run[f"{m}_mean"].notna()
        assert (run.loc[ok, f"{m}_ci_low"] <= run.loc[ok, f"{m}_mean"] + 1e-9).all()
        assert (run.loc[ok, f"{m}_mean"] <= run.loc[ok, f"{m}_ci_high"] + 1e-9).all()


def test_table2_paper_rows():
    t = table2(_seg_rows(), SHEET, n_boot=20)
    paper = t.loc[t["source"] == "paper (Table 2)"].set_index("method")
    assert set(paper.index) == set(DICE)  # only the methods of this run
    assert paper.loc["PN+MNet+LS", "dice_mean"] == 91.60
    assert paper.loc["Orig MNet", "jaccard_sd"] == 9.01
    assert np.isnan(paper.loc["PN+MNet", "precision_mean"])
    assert PAPER_TABLE2["metrics"]["PN+UNet"]["specificity"] == (99.24, 0.035)
    assert PAPER_TABLE2["metrics"]["Orig UNet"]["sensitivity"] == (89.07, 9.01)


@pytest.mark.parametrize("case", ["reference", "duplicate", "column", "no_all"])
def test_table2_bad_input(case):
    rows, kwargs = _seg_rows(), {}
    if case == "reference":
        kwargs["reference"] = "PN+UNet+LS"
    elif case == "duplicate":
        rows = pd.concat([rows, rows.iloc[:1]])
    elif case == "column":
        rows = rows.drop(columns="specificity")
    else:
        rows = rows.loc[rows["level"] != "all"]
    with pytest.raises(ValueError):
        table2(rows, SHEET, n_boot=10, **kwargs)


def test_write_table_files(tmp_path):
    t = table2(_seg_rows(), SHEET, n_boot=50)
    paths = write_table(t, tmp_path / "tables" / "table2", title="Table 2: segmentation",
                        notes=("Demo cohort.",))
    assert [p.name for p in paths] == ["table2.csv", "table2.md", "table2.tex"]
    back = pd.read_csv(paths[0])
    pd.testing.assert_frame_equal(back, t, check_dtype=False)  # full precision
    md = paths[1].read_text(encoding="utf-8")
    assert md.startswith("# Table 2: segmentation")
    assert "±" in md and "paper (Table 2)" in md and "- Demo cohort." in md
    assert "Jaccard (paper: precision)" in md
    assert f"{_cell(t, 'PN+MNet+LS', 'all', 'dice_mean'):.2f} ± " in md
    tex = paths[2].read_text(encoding="utf-8")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex
    assert r"Values in \%" in tex and "Demo cohort." in tex
    assert not list(tmp_path.glob("tables/.*"))  # no temporary file left


def test_write_table_leaves_out_empty_columns(tmp_path):
    t = table1(_loc_rows(), SHEET, n_boot=20)
    md = write_table(t, tmp_path / "t1", title="Table 1")[1].read_text(encoding="utf-8")
    assert "L1 (px)" in md and "| L1 (mm)" not in md
    assert "L1 (mm)" in md.split("Notes:")[1]
    assert "2.00 ± 1.41 [" in md


def test_write_table_needs_title(tmp_path):
    with pytest.raises(ValueError, match="title"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "x", title="")


def test_table1_counts_implausible_detections_per_stratum_and_keeps_the_success_rule():
    rows = _loc_rows()
    # B succeeded by the paper's rule but was flagged; D failed and was flagged; C has no
    # five centres (empty); A plausible. Written and read back as TSV, as the workflow does.
    rows["plausible"] = rows["image_id"].map({"A": True, "B": False, "C": np.nan, "D": False})
    t = table1(rows, SHEET, n_boot=20)
    run = _this_run(t).set_index("stratum")
    expected = {"all": 2, "DR": 0, "CR": 2, "normal": 1, "abnormal": 1}
    for stratum, n in expected.items():
        assert run.loc[stratum, "n_implausible"] == n
    assert run.loc["all", "n_succeeded"] == 2  # B still counts as a success
    assert list(t.columns[:6]) == ["stratum", "source", "n_images", "n_succeeded",
                                   "success_rate_pct", "n_implausible"]
    assert np.isnan(t.loc[t["source"] == "paper (Table 1)", "n_implausible"]).all()
    as_text = rows.assign(plausible=rows["plausible"].map({True: "True", False: "False"}))
    assert _this_run(table1(as_text, SHEET, n_boot=20))["n_implausible"].tolist() == \
        run["n_implausible"].tolist()
    # Without the column (older per-image tables) nothing is flagged.
    assert (_this_run(table1(_loc_rows(), SHEET, n_boot=20))["n_implausible"] == 0).all()


def test_unknown_modality_and_group_get_rows_of_their_own():
    # C and D are unlabelled films: modality and group unknown (lumbar-ingest's sheet).
    sheet = SHEET.assign(modality=["DR", "CR", "unknown", "unknown", "DR"],
                         group=["normal", "abnormal", "unknown", "normal", "unknown"])
    t1 = _this_run(table1(_loc_rows(), sheet, n_boot=50)).set_index("stratum")
    assert list(t1.index) == ["all", "DR", "CR", "modality unknown", "normal", "abnormal",
                              "group unknown"]
    assert t1["n_images"].to_dict() == {"all": 4, "DR": 1, "CR": 1, "modality unknown": 2,
                                        "normal": 2, "abnormal": 1, "group unknown": 1}
    assert t1.loc["modality unknown", "n_succeeded"] == 0
    t2 = _this_run(table2(_seg_rows(), sheet, n_boot=50))
    ours = t2[t2["method"] == "PN+MNet+LS"].set_index("stratum")
    assert ours.loc["group unknown", "n_images"] == 1
    assert ours.loc["modality unknown", "n_images"] == 2
    # A sheet without unknown labels keeps the paper's five strata only.
    assert list(_this_run(table1(_loc_rows(), SHEET, n_boot=50))["stratum"]) == list(STRATA)
