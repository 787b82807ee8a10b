import pytest

from lumbar_core.workflow.cohort import SampleSheetError, load_sample_sheet, make_shards

HEADER = "image_id\timage\tannotation\tsplit\tmodality\tgroup\tpixel_spacing_mm\n"


@pytest.fixture
def cohort(tmp_path):
    for name in ("a.png", "b.dcm", "a.json"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def _sheet(folder, rows):
    path = folder / "samples.tsv"
    path.write_text(HEADER + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_valid_sheet_resolves_paths(cohort):
    df = load_sample_sheet(_sheet(cohort, [["a", "a.png", "a.json", "train", "DR", "normal", "0.14"],
                                           ["b", "b.dcm", "", "test", "CR", "abnormal", ""]]))
    assert list(df.index) == ["a", "b"]
    assert df.loc["a", "image"] == str(cohort / "a.png")
    assert df.loc["b", "annotation"] == ""
    assert df.loc["a", "pixel_spacing_mm"] == 0.14


def test_unlabelled_film_may_have_unknown_modality_and_group(cohort):
    df = load_sample_sheet(_sheet(cohort, [["b", "b.dcm", "", "test", "unknown", "unknown", ""]]))
    assert (df.loc["b", "modality"], df.loc["b", "group"]) == ("unknown", "unknown")


@pytest.mark.parametrize("row, message", [
    (["b", "b.dcm", "", "test", "XR", "normal", ""], "line 3 (image_id 'b'): column 'modality'"),
    (["b", "b.dcm", "", "testing", "CR", "normal", ""], "line 3 (image_id 'b'): column 'split'"),
    (["b c", "b.dcm", "", "test", "CR", "normal", ""], "line 3 (image_id 'b c'): column 'image_id'"),
    (["a", "b.dcm", "", "test", "CR", "normal", ""], "line 3 (image_id 'a'): column 'image_id': duplicate of line 2"),
    (["b", "missing.png", "", "test", "CR", "normal", ""], "line 3 (image_id 'b'): column 'image': file not found"),
    (["b", "b.dcm", "gone.json", "test", "CR", "normal", ""], "column 'annotation': file not found"),
    (["b", "b.dcm", "", "test", "CR", "normal", "wide"], "column 'pixel_spacing_mm': 'wide' is not a number"),
    (["b", "b.dcm", "", "test", "CR", "normal", "-1"], "column 'pixel_spacing_mm'"),
])
def test_bad_rows_name_line_and_column(cohort, row, message):
    path = _sheet(cohort, [["a", "a.png", "a.json", "train", "DR", "normal", ""], row])
    with pytest.raises(SampleSheetError) as err:
        load_sample_sheet(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_and_unknown_columns(cohort):
    path = cohort / "s.tsv"
    path.write_text("image_id\timage\tsplit\n")
    with pytest.raises(SampleSheetError, match="missing column"):
        load_sample_sheet(path)
    path.write_text("image_id\timage\tsplit\tmodality\tgroup\tsex\n")
    with pytest.raises(SampleSheetError, match="unknown column"):
        load_sample_sheet(path)


def test_shards_are_sorted_and_complete():
    shards = make_shards([f"i{k:02d}" for k in range(10, 0, -1)], 4)
    assert list(shards) == ["0000", "0001", "0002"]
    assert sum(shards.values(), []) == sorted(f"i{k:02d}" for k in range(1, 11))
    with pytest.raises(ValueError):
        make_shards(["a"], 0)
