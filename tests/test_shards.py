"""Per-shard jobs of the per-image steps (per_image_steps: shard), with the real Snakemake CLI.

A shard run must write, byte for byte, the per-image files and the tables of a run with
one job per image; a shard job killed with SIGKILL must rerun alone; and a shard holding
an unreadable film must complete, recording the film as excluded.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SNAKEMAKE, run_snakemake, trained_models, write_config
from lumbar_core.workflow.per_image import image_paths

#: Tables and cohort files a run writes once.
COHORT_FILES = [
    "results/qc.tsv",
    *(f"results/tables/{t}.{e}" for t in ("table1", "table2") for e in ("csv", "md", "tex")),
    "results/tables/morphometry.tsv",
    "results/tables/grade_counts.tsv",
    "results/tables/fracture_agreement.tsv",
]
#: The per-image rules whose files a run keeps (each holds one file an image and output).
PER_IMAGE_FOLDERS = ["preprocess", "resize", "ground_truth", "train_patches", "select_peaks",
                     "crop", "levelset_refine", "metrics", "morphometry"]


def test_image_paths_finds_each_image_in_shard_folders(tmp_path):
    for shard, ids in {"a": ["a", "b"], "c": ["c"]}.items():
        (tmp_path / shard).mkdir()
        for i in ids:
            (tmp_path / shard / f"{i}.geometry.json").write_text("{}")
    folders = [tmp_path / "c", tmp_path / "a"]
    assert image_paths(folders, ["b", "c"]) == [str(tmp_path / "a/b.geometry.json"),
                                                str(tmp_path / "c/c.geometry.json")]
    with pytest.raises(FileNotFoundError, match="image.s. x in the shard folders"):
        image_paths(folders, ["a", "x"])
    with pytest.raises(ValueError, match="1 files for 2 images"):
        image_paths([str(tmp_path / "a/a.geometry.json")], ["a", "b"])


def _shard_config(workdir, **overrides):
    return write_config(workdir, per_image_steps={"jobs": "shard", "shard_size": 2}, **overrides)


def _planned(dry_run, rule):
    """The number of jobs of ``rule`` in a dry run's job table."""
    for line in dry_run.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == rule and fields[1].isdigit():
            return int(fields[1])
    raise AssertionError(f"no {rule} jobs planned:\n{dry_run[-3000:]}")


def _finished(snakemake_log, rule):
    """The shards whose job of ``rule`` Snakemake reported finished."""
    started = re.findall(rf"rule {rule}:\n(?:    .*\n)*?    jobid: (\d+)\n(?:    .*\n)*?"
                         r"    wildcards: part=(\S+)", snakemake_log)
    ended = set(re.findall(rf"Finished jobid: (\d+) \(Rule: {rule}\)", snakemake_log))
    return sorted(part for jobid, part in started if jobid in ended)


def _files_of(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}


@pytest.mark.workflow
def test_shard_jobs_write_what_per_image_jobs_write_and_a_killed_shard_reruns_alone(
        reference_run, tiny_cohort, tmp_path):
    # Pose-net and the whole-image networks come from the reference run: they train on I
    # and the ground truth, which are compared byte for byte below, so training them again
    # would show nothing more. M-net and U-net train again: the training patches exist only
    # for them, and are compared too.
    models = trained_models(reference_run)
    config = _shard_config(tmp_path, samples=str(tiny_cohort), posenet=models["posenet"],
                           whole_image=models["whole_image"])
    n_shards = _planned(run_snakemake(tmp_path, "-n", "all", configfile=config).stdout,
                        "preprocess_shard")
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(config), "--cores", "2", "--nolock", "all"]
    log = tmp_path / "first_run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if "(Rule: preprocess_shard)" in log.read_text():
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
    finished = _finished(log.read_text(), "preprocess_shard")
    assert finished, "the run ended or timed out before a pre-processing shard finished"
    kept = {}
    for part in finished:
        for output in ("io", "geometry"):
            kept.update(_files_of(tmp_path / "results/preprocess" / output / part))
    assert kept

    run_snakemake(tmp_path, "all", configfile=config)
    assert not (tmp_path / "results/models/posenet.keras").exists()
    assert (tmp_path / "results/models/mnet.keras").exists()
    # The shards that had finished were not run again; the killed ones were, in full.
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert not (tmp_path / "logs/preprocess").exists()
    shards = sorted(p.stem for p in (tmp_path / "logs/preprocess_shard").glob("*.log"))
    assert len(shards) == n_shards > len(finished)
    # Byte for byte what one job per image writes: each image's files, and the tables.
    for name in COHORT_FILES:
        assert (tmp_path / name).read_bytes() == (reference_run / name).read_bytes(), name
    # I of a training or validation image feeds only the networks taken from the reference
    # run: it is computed only where its shard holds a test image too.
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str)
    not_needed = {f"{i}.npz" for i in sheet.loc[sheet["split"] != "test", "image_id"]}
    compared = 0
    for step in PER_IMAGE_FOLDERS:
        for ref in (reference_run / "results" / step).glob("*.*"):
            ours = list((tmp_path / "results" / step).glob(f"*/*/{ref.name}"))
            if step == "resize" and ref.name in not_needed and not ours:
                continue
            assert len(ours) == 1, (step, ref.name, ours)
            assert ours[0].read_bytes() == ref.read_bytes(), (step, ref.name)
            compared += 1
    assert compared > 60
    assert run_snakemake(tmp_path, "-n", "all", configfile=config).stdout.count(
        "Nothing to be done") == 1


@pytest.mark.workflow
def test_a_shard_with_an_unreadable_film_completes_and_records_it_excluded(
        reference_run, tiny_cohort, tmp_path):
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    test = sheet[sheet["split"] == "test"].copy()
    base = Path(tiny_cohort).parent
    test["image"] = [str(base / p) for p in test["image"]]
    test["annotation"] = ""
    broken = tmp_path / "broken film.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated by a failed export")
    bad = test.iloc[:1].copy()
    bad["image_id"], bad["image"] = "broken_film", str(broken)
    sheet_path = tmp_path / "archive.tsv"
    pd.concat([test, bad]).to_csv(sheet_path, sep="\t", index=False)
    config = write_config(
        tmp_path, samples=str(sheet_path),
        per_image_steps={"jobs": "shard", "shard_size": 100},  # one shard holds every film
        **trained_models(reference_run),
        levelset={"params_file": str(reference_run / "results/levelset/params.json")},
    )
    run_snakemake(tmp_path, "all", configfile=config)
    assert [p.name for p in (tmp_path / "results/preprocess/geometry").iterdir()] == ["broken_film"]
    qc = pd.read_csv(tmp_path / "results/qc.tsv", sep="\t", keep_default_na=False)
    row = qc[(qc["image_id"] == "broken_film") & (qc["stage"] == "preprocess")]
    assert list(row["status"]) == ["excluded"]
    assert "broken film.png" in row["message"].iloc[0]
    heights = pd.read_csv(tmp_path / "results/tables/morphometry.tsv", sep="\t")
    assert set(test["image_id"]) <= set(heights["image_id"])
    log = (tmp_path / "logs/preprocess_shard/broken_film.log").read_text()
    assert f"[{len(test) + 1}/{len(test) + 1}," in log and "broken_film: excluded" in log
