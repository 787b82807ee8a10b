"""Tests of lumbar_core.workflow.ingest: a folder of films to a validated sample sheet."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from film_tree import PATIENT_ID, PATIENT_NAME, corner_rows, write_film_tree
from lumbar_core import io, phantom_io
from lumbar_core.workflow.cohort import load_sample_sheet
from lumbar_core.workflow.ingest import (
    UNKNOWN,
    assign_splits,
    dicom_modality,
    image_ids,
    ingest_folder,
    main,
    skipped_path,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive") / "Export ünï 2024"
    return root, write_film_tree(root, 1000, seed=1)


@pytest.fixture(scope="module")
def ingested(tree, tmp_path_factory):
    root, _ = tree
    sheet = tmp_path_factory.mktemp("sheet") / "samples.tsv"
    result = ingest_folder(root, sheet, annotations=sheet.parent / "ann", seed=5)
    return sheet, result


# ----------------------------------------------------------------------------- ids
def test_ids_are_sanitised_unique_and_keep_readable_names():
    ids = image_ids(["a/b c.png", "a_b c.dcm", "x/Ünï (2).tif", "dicom/1.2.840.5", "ß.png"])
    assert all(set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                             "0123456789_-") for i in ids)
    assert len(set(ids)) == len(ids)
    # "a/b c" and "a_b c" give the same name: both get a hash of their own path.
    assert ids[0].startswith("a_b_c-") and ids[1].startswith("a_b_c-") and ids[0] != ids[1]
    assert ids[2:] == ["x_Uni_2", "dicom_1_2_840_5", "film"]


def test_ids_are_stable_when_films_are_added():
    old = ["p1/lat.png", "p2/lat.png", "p3/lat.dcm"]
    before = dict(zip(old, image_ids(old)))
    new = ["p0/lat.png", *old, "p4/lat.jpg"]
    after = dict(zip(new, image_ids(new)))
    assert all(after[p] == before[p] for p in old)
    assert image_ids(old) == image_ids(list(old))


def test_long_paths_give_short_distinct_ids():
    deep = ["/".join(["folder"] * 40) + f"/{k}.png" for k in range(2)]
    ids = image_ids(deep)
    assert all(len(i) <= 100 for i in ids) and ids[0] != ids[1]


def test_repeated_path_is_an_error():
    with pytest.raises(ValueError, match="unique"):
        image_ids(["a.png", "a.png"])


# ----------------------------------------------------------------------------- splits
def test_split_is_seeded_complete_and_follows_the_fractions():
    ids = [f"i{k:02d}" for k in range(40)]
    split = assign_splits(ids, fractions=(0.5, 0.25, 0.25), seed=3)
    assert split == assign_splits(reversed(ids), fractions=(0.5, 0.25, 0.25), seed=3)
    assert split != assign_splits(ids, fractions=(0.5, 0.25, 0.25), seed=4)
    counts = pd.Series(split).value_counts().to_dict()
    assert counts == {"train": 20, "val": 10, "test": 10}


@pytest.mark.parametrize("kwargs", [{"fractions": (0.5, 0.5)}, {"fractions": (0.7, 0.2, 0.2)},
                                    {"fractions": (1.2, -0.1, -0.1)}, {"seed": -1},
                                    {"seed": 1.5}])
def test_split_bad_options(kwargs):
    with pytest.raises(ValueError):
        assign_splits(["a", "b"], **kwargs)


# ----------------------------------------------------------------------------- the sheet
def test_every_readable_film_is_in_the_sheet_once(tree, ingested):
    root, expected = tree
    sheet_path, result = ingested
    sheet = load_sample_sheet(sheet_path)  # validates against the schema
    assert len(sheet) == len(expected["films"]) == 1000
    images = {Path(p).resolve().relative_to(root.resolve()).as_posix() for p in sheet["image"]}
    assert images == set(expected["films"])
    assert sheet.index.is_unique


def test_modality_from_the_dicom_tag_and_unknown_elsewhere(tree, ingested):
    root, expected = tree
    sheet = load_sample_sheet(ingested[0])
    by_path = {Path(p).resolve().relative_to(root.resolve()).as_posix(): row
               for p, row in zip(sheet["image"], sheet.to_dict("records"))}
    for rel, facts in expected["films"].items():
        assert by_path[rel]["modality"] == facts["modality"], rel
        assert by_path[rel]["group"] == facts["group"], rel
    modalities = set(sheet["modality"])
    assert modalities == {"DR", "CR", UNKNOWN}


def test_unlabelled_films_are_test_and_annotated_ones_split(tree, ingested):
    _, expected = tree
    sheet = load_sample_sheet(ingested[0])
    unlabelled = sheet[sheet["annotation"] == ""]
    assert (unlabelled["split"] == "test").all() and (unlabelled["group"] == UNKNOWN).all()
    annotated = sheet[sheet["annotation"] != ""]
    assert len(annotated) == sum(f["annotated"] for f in expected["films"].values())
    counts = annotated["split"].value_counts()
    n = len(annotated)
    assert counts["train"] == round(0.7 * n) and counts["val"] == round(0.15 * n)
    assert dict(zip(annotated.index, annotated["split"])) == assign_splits(annotated.index,
                                                                          seed=5)


def test_annotations_are_the_importers_conversion(tree, ingested):
    root, _ = tree
    sheet = load_sample_sheet(ingested[0])
    row = sheet[sheet["image"].str.endswith("0003.jpg")].iloc[0]
    ann = io.read_annotation(row["annotation"], image_shape=(200, 160))
    assert Path(row["annotation"]).parent.name == "ann"
    assert Path(row["annotation"]).name == f"{row['image_id']}.json"
    corners = np.array(corner_rows(flagged=True, shift=3.0))[:2, :4].reshape(4, 2)
    np.testing.assert_allclose(ann["vertebrae"]["L1"]["centre"], corners.mean(axis=0))
    assert ann["anterior"] == "left" and row["group"] == "abnormal"


def test_no_patient_data_reaches_the_sheet_or_annotations(ingested):
    sheet_path, _ = ingested
    texts = [sheet_path.read_text(encoding="utf-8")]
    texts += [p.read_text() for p in (sheet_path.parent / "ann").glob("*.json")]
    for text in texts:
        assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_unreadable_files_are_reported_by_name_and_left_out(tree, ingested):
    root, expected = tree
    sheet_path, result = ingested
    reported = {Path(p).relative_to(root).as_posix(): why for p, why in result.skipped}
    assert set(reported) == set(expected["unreadable"])
    assert "truncated" in reported["bad/truncated.png"]
    assert "empty" in reported["bad/empty.jpg"]
    assert "too small" in reported["bad/tiny.png"]
    assert all(str(root / rel) in why for rel, why in reported.items())
    listed = pd.read_csv(skipped_path(sheet_path), sep="\t")
    assert sorted(listed["path"]) == sorted(str(root / r) for r in expected["unreadable"])
    # README, .DS_Store, index.json and the CSVs are not films.
    assert result.n_other == len(expected["other"])


def test_rerun_writes_the_same_sheet(tree, ingested, tmp_path):
    root, _ = tree
    sheet = tmp_path / "again" / "samples.tsv"
    ingest_folder(root, sheet, annotations=ingested[0].parent / "ann", seed=5,
                  log=open("/dev/null", "w"))
    first = pd.read_csv(ingested[0], sep="\t", dtype=str, keep_default_na=False)
    again = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    # Paths are relative to each sheet's folder; ids, splits and labels are identical.
    cols = ["image_id", "split", "modality", "group"]
    pd.testing.assert_frame_equal(first[cols], again[cols])


def test_header_only_and_parallel_reading(tree, ingested, tmp_path):
    root, _ = tree
    sheet = tmp_path / "quick.tsv"
    quick = ingest_folder(root, sheet, annotations=tmp_path / "ann", seed=5, verify=False,
                          jobs=2, log=open("/dev/null", "w"))
    full = ingested[1].sheet
    # Only the decode finds the truncated PNG; its header is intact.
    extra = set(quick.sheet["image_id"]) - set(full["image_id"])
    assert len(extra) == 1 and next(iter(extra)).startswith("bad_truncated")
    same = quick.sheet[quick.sheet["image_id"].isin(full["image_id"])].reset_index(drop=True)
    cols = ["image_id", "split", "modality", "group"]
    pd.testing.assert_frame_equal(same[cols], full[cols].reset_index(drop=True))


def test_a_bad_corner_csv_leaves_its_film_unlabelled(tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    for name in ("good", "bad"):
        phantom_io.write_png16(films / f"{name}.png", np.full((200, 160), 1000, np.uint16))
    (films / "good.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in corner_rows()))
    (films / "bad.csv").write_text("1,2,3\n")
    result = ingest_folder(films, tmp_path / "s.tsv", log=open("/dev/null", "w"))
    sheet = result.sheet.set_index("image_id")
    assert sheet.loc["good", "annotation"] == "annotations/good.json"
    assert sheet.loc["bad", "annotation"] == "" and sheet.loc["bad", "split"] == "test"
    assert [Path(p).name for p, _ in result.skipped] == ["bad.csv"]


def test_dicom_modality_reads_only_the_tag(tmp_path):
    from film_tree import _dicom

    for tag, expected in (("DX", "DR"), ("CR", "CR"), ("MR", UNKNOWN), (None, UNKNOWN)):
        path = tmp_path / f"{tag}.dcm"
        _dicom(path, np.zeros((64, 64), np.uint16), tag)
        assert dicom_modality(path) == expected
    (tmp_path / "junk.dcm").write_bytes(b"junk")
    assert dicom_modality(tmp_path / "junk.dcm") == UNKNOWN


def test_folder_without_films_and_bad_options(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable film"):
        ingest_folder(tmp_path, tmp_path / "s.tsv")
    with pytest.raises(ValueError, match="must be a folder"):
        ingest_folder(tmp_path / "missing", tmp_path / "s.tsv")
    for kwargs in ({"jobs": 0}, {"min_size": 0}, {"fractions": (1, 1, 1)}):
        with pytest.raises(ValueError):
            ingest_folder(tmp_path, tmp_path / "s.tsv", **kwargs)


# ----------------------------------------------------------------------------- command
def test_command_line(tmp_path, capsys):
    films = tmp_path / "films"
    films.mkdir()
    phantom_io.write_png16(films / "a.png", np.full((80, 80), 7, np.uint16))
    (films / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    sheet = tmp_path / "out" / "samples.tsv"
    assert main([str(films), str(sheet), "--split", "0.6,0.2,0.2", "--seed", "2"]) == 0
    out = capsys.readouterr()
    assert "1 film(s)" in out.out and "1 skipped" in out.out and "b.png" in out.err
    assert list(load_sample_sheet(sheet).index) == ["a"]
    assert main([str(tmp_path / "nothing"), str(sheet)]) == 1
    assert "must be a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(films), str(sheet), "--split", "0.5,0.5"])


def test_module_runs_as_a_command(tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    phantom_io.write_png16(films / "a.png", np.full((80, 80), 7, np.uint16))
    proc = subprocess.run([sys.executable, "-m", "lumbar_core.workflow.ingest", str(films),
                           str(tmp_path / "s.tsv")], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.dumps(pd.read_csv(tmp_path / "s.tsv", sep="\t")["image_id"].tolist()) == '["a"]'


@pytest.mark.parametrize("args, message", [
    ([], "usage: make check-films FILMS="),
    (["FILMS=films", "DEMO_RESULTS=no-such-run"], "models/posenet.keras not found"),
])
def test_check_films_refuses_without_films_or_models(tmp_path, args, message):
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "check-films", *args,
                           f"FILM_OUT={tmp_path / 'out'}"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    import os

    films = tmp_path / "films"
    (films / "locked").mkdir(parents=True)
    phantom_io.write_png16(films / "a.png", np.full((80, 80), 7, np.uint16))
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = ingest_folder(films, tmp_path / "s.tsv", log=open(os.devnull, "w"))
    assert list(result.sheet["image_id"]) == ["a"]
    assert result.skipped == [(str(films / "locked"),
                               f"{films / 'locked'}: folder not read (Permission denied)")]
