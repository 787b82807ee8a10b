"""lumbar_core.steps._common: status records, the one exclusion forwarder, reading rows."""

import numpy as np
import pandas as pd

from lumbar_core import io
from lumbar_core.steps._common import forward_exclusion, image_id_of, read_rows, status_of


def test_status_of_npz_and_json_records():
    assert status_of({}) == ("ok", "")
    assert status_of({"status": np.array("excluded"), "message": np.array("too small")}) == (
        "excluded", "too small")
    assert status_of({"status": "failed", "message": "no peak"}) == ("failed", "no peak")


def test_forward_exclusion_writes_the_status_into_every_output(tmp_path):
    out = forward_exclusion("excluded", "truncated PNG file",
                            json_outputs=[tmp_path / "a.json"],
                            npz_outputs=[tmp_path / "b.npz", tmp_path / "c.npz"])
    assert out == {"status": "excluded", "message": "truncated PNG file"}
    assert io.read_json(tmp_path / "a.json") == out
    for name in ("b.npz", "c.npz"):
        data = io.load_npz(tmp_path / name)
        assert sorted(data) == ["message", "status"]
        assert status_of(data) == ("excluded", "truncated PNG file")


def test_image_id_of_a_per_image_file():
    assert image_id_of("results/preprocess/img-01.geometry.json") == "img-01"
    assert image_id_of("x/0012.npz") == "0012"


def test_read_rows_concatenates_and_keeps_ids_as_text(tmp_path):
    for name, image_id in (("a.tsv", "0012"), ("b.tsv", "x")):
        io.write_table(tmp_path / name, pd.DataFrame({"image_id": [image_id], "v": [1.5]}))
    rows = read_rows([tmp_path / "a.tsv", tmp_path / "b.tsv"])
    assert rows["image_id"].tolist() == ["0012", "x"] and rows["v"].tolist() == [1.5, 1.5]
    assert read_rows([]).empty
