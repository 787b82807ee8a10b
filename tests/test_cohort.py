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


def test_shards_are_sorted_complete_and_keyed_by_their_first_id():
    ids = [f"i{k:03d}" for k in range(300, 0, -1)]
    shards = make_shards(ids, 8)
    assert sum(shards.values(), []) == sorted(ids)
    assert all(key == members[0] for key, members in shards.items())
    assert 300 / 8 / 2 < len(shards) < 300 / 8 * 2
    assert list(make_shards(ids[:5], 1).values()) == [[i] for i in sorted(ids[:5])]
    with pytest.raises(ValueError):
        make_shards(["a"], 0)


def _changed(before, after):
    """Shards of ``before`` that ``after`` does not hold unchanged."""
    kept = {tuple(members) for members in after.values()}
    return [key for key, members in before.items() if tuple(members) not in kept]


def test_adding_or_removing_an_image_changes_only_its_own_shard():
    """Sharded jobs rerun when their list of images changes: a new or removed id must
    leave every other shard as it was (a cut at a fixed position would shift them all)."""
    ids = [f"case{k:05d}" for k in range(0, 2000, 2)]
    before = make_shards(ids, 16)
    for k in range(1, 2000, 50):  # new ids between the existing ones, all along the sheet
        new_id = f"case{k:05d}"
        after = make_shards(ids + [new_id], 16)
        home = [key for key, members in after.items() if new_id in members]
        changed = _changed(before, after)
        assert len(changed) == 1, (new_id, changed)
        # The shard it fell into gained it, or was split in two at it.
        old = before[changed[0]]
        new = sorted(sum((after[key] for key in (changed[0], *home) if key in after), []))
        assert sorted(set(new)) == sorted(old + [new_id])
    keys = list(before)
    cut_ids = keys[1:4]  # removing a cut merges its shard into the one before
    for removed in ids[::97] + cut_ids:
        after = make_shards([i for i in ids if i != removed], 16)
        own = next(key for key, members in before.items() if removed in members)
        expected = [keys[keys.index(own) - 1], own] if removed in cut_ids else [own]
        assert _changed(before, after) == expected, removed
