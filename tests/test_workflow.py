"""Workflow tests: the real Snakemake CLI on a tiny generated cohort."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_snakemake, trained_models, write_config

pytestmark = pytest.mark.workflow

SIX = {"Orig UNet", "Orig MNet", "PN+UNet", "PN+MNet", "PN+UNet+LS", "PN+MNet+LS"}


@pytest.fixture
def full_run(reference_run):
    return reference_run


def test_dry_run_lists_every_rule_of_the_design(tiny_cohort, tmp_path):
    config = write_config(tmp_path, samples=str(tiny_cohort))
    out = run_snakemake(tmp_path, "-n", "all", configfile=config).stdout
    for rule in ("preprocess", "resize", "ground_truth", "train_posenet", "pose_infer",
                 "select_peaks", "crop", "train_mnet", "train_unet", "train_mnet_whole",
                 "train_unet_whole", "mnet_infer", "unet_infer", "mnet_whole_infer",
                 "unet_whole_infer", "levelset_refine", "metrics", "tables", "fig9", "fig10",
                 "overlays", "qc"):
        assert f"rule {rule}:" in out or f"\n{rule} " in out, rule
    # The target `figures` builds Fig. 9, Fig. 10, the overlays and the fracture figure
    # (and what they need), not the tables.
    figures = run_snakemake(tmp_path, "-n", "figures", configfile=config).stdout
    for rule in ("fig9", "fig10", "overlays", "fracture_figure", "figures"):
        assert f"rule {rule}:" in figures or f"\n{rule} " in figures, rule
    assert "rule tables:" not in figures and "\ntables " not in figures
    # Every step of the design card is a rule of its own.
    rules = run_snakemake(tmp_path, "--list-rules", configfile=config).stdout
    listed = {line.split()[0] for line in rules.splitlines() if line and not line[0].isspace()}
    assert {"preprocess", "resize", "figures", "all"} <= listed


def test_preprocess_and_resize_outputs(full_run, tiny_cohort):
    from lumbar_core import io
    from lumbar_core.preprocess import resize_to_i

    sheet = pd.read_csv(tiny_cohort, sep="\t")
    for image_id in sheet["image_id"]:
        io_npz = io.load_npz(full_run / "results/preprocess" / f"{image_id}.npz")
        i_npz = io.load_npz(full_run / "results/resize" / f"{image_id}.npz")
        assert io_npz["io"].shape == (3072, 1536) and io_npz["io"].dtype.name == "uint16"
        assert i_npz["i"].shape == (512, 256) and i_npz["i"].dtype.name == "float16"
        # Rule resize: I is the stored Io, scaled to [0, 1] and resized, bit for bit.
        expected = resize_to_i(io_npz["io"].astype(np.float32) / 65535.0).astype(np.float16)
        assert i_npz["i"].tobytes() == expected.tobytes()
        geometry = io.read_json(full_run / "results/preprocess" / f"{image_id}.geometry.json")
        assert geometry["status"] == "ok" and len(geometry["geometry"]["input_shape"]) == 2


def test_table2_has_six_methods_with_finite_values(full_run, tiny_cohort):
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    n_test = int(((sheet["split"] == "test") & (sheet["annotation"] != "")).sum())
    table = pd.read_csv(full_run / "results/tables/table2.csv")
    ours = table[table["source"] == "this run"]
    assert set(ours["method"]) == SIX
    overall = ours[ours["stratum"] == "all"].set_index("method")
    assert sorted(overall.index) == sorted(SIX)
    assert (overall["n_images"] == n_test).all()
    assert (overall["n_succeeded"] + overall["n_failed"] == n_test).all()
    # Over all images a failed detection counts as Dice 0: always a number in [0, 100].
    assert overall["dice_all_images_mean"].between(0, 100).all()
    # Paper-style Dice: over the succeeded images, so a number exactly where there are some.
    succeeded = overall["n_succeeded"] > 0
    assert overall.loc[succeeded, "dice_mean"].between(0, 100).all()
    assert overall.loc[~succeeded, "dice_mean"].isna().all()
    # With no failure the two columns agree.
    none_failed = overall["n_failed"] == 0
    assert (overall.loc[none_failed, "dice_mean"]
            == overall.loc[none_failed, "dice_all_images_mean"]).all()
    for ext in ("md", "tex"):
        assert (full_run / f"results/tables/table2.{ext}").stat().st_size > 0


def test_table1_fig10_fig9_overlays_and_report(full_run):
    t1 = pd.read_csv(full_run / "results/tables/table1.csv")
    assert {"all", "DR", "CR", "normal", "abnormal"} <= set(t1["stratum"])
    for name in ("fig9_loss_curves", "fig10_centre_error"):
        for ext in ("png", "pdf"):
            assert (full_run / f"results/figures/{name}.{ext}").stat().st_size > 0
    assert (full_run / "results/report.html").stat().st_size > 10_000
    # Implausible detections: counted in Table 1 and listed in qc.tsv with their reason.
    from lumbar_core import io

    qc = pd.read_csv(full_run / "results/qc.tsv", sep="\t", dtype=str, keep_default_na=False)
    flagged = qc.loc[(qc["stage"] == "select_peaks") & (qc["status"] == "implausible")]
    peaks = {p.name.split(".")[0]: io.read_json(p)
             for p in (full_run / "results/select_peaks").glob("*.json")}
    implausible = {i for i, d in peaks.items() if d.get("plausible") is False}
    assert set(flagged["image_id"]) == implausible
    for _, row in flagged.iterrows():
        assert row["message"].startswith(peaks[row["image_id"]]["implausible_reason"])
    run_all = t1[(t1["source"] == "this run") & (t1["stratum"] == "all")].iloc[0]
    assert run_all["n_implausible"] == len(implausible & set(_test_ids(full_run)))


#: Folders under results/ of the arrays keep_intermediates: false deletes (Io aside).
INTERMEDIATES = ("resize", "pose_infer", "crop", "mnet_infer", "unet_infer",
                 "mnet_whole_infer", "unet_whole_infer", "train_patches")


def _test_ids(run):
    return [p.name.split(".")[0] for p in (run / "results/metrics").glob("*.localization.tsv")]


def test_inference_only_and_mixed_sheets(reference_run, tiny_cohort, tmp_path):
    """Unlabelled images get centres, masks, heights and grades; only annotated ones metrics.

    The run keeps no intermediates (keep_intermediates: false): no Io, I, maps, crops or
    network masks are left after it, and a second `all` has nothing to do."""
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    test = sheet[sheet["split"] == "test"].copy()
    base = Path(tiny_cohort).parent
    for column in ("image", "annotation"):
        test[column] = [str(base / p) if p else "" for p in test[column]]
    unlabelled = list(test["image_id"][:2])
    test.loc[test["image_id"].isin(unlabelled), "annotation"] = ""
    mixed = tmp_path / "mixed.tsv"
    test.to_csv(mixed, sep="\t", index=False)
    config = write_config(
        tmp_path, samples=str(mixed),
        **trained_models(reference_run),
        keep_intermediates=False,
    )
    dry = run_snakemake(tmp_path, "-n", "all", configfile=config).stdout
    assert "rule train_posenet:" not in dry and "rule train_mnet:" not in dry
    run_snakemake(tmp_path, "all", configfile=config)
    annotated = sorted(set(test["image_id"]) - set(unlabelled))
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "results/metrics").glob("*.localization.tsv")) == annotated
    heights = pd.read_csv(tmp_path / "results/tables/morphometry.tsv", sep="\t")
    pipeline = heights[heights["source"] == "PN+MNet+LS"]
    assert set(pipeline["image_id"]) == set(test["image_id"])
    assert set(heights.loc[heights["source"] == "ground truth mask", "image_id"]) == set(annotated)
    assert (tmp_path / "results/tables/grade_counts.tsv").exists()
    for image_id in unlabelled:
        # Without its annotation an image gets the same centres from the same models.
        peaks = json.loads((tmp_path / "results/select_peaks" / f"{image_id}.json").read_text())
        ref = json.loads(
            (reference_run / "results/select_peaks" / f"{image_id}.json").read_text())
        # The same five centres; without an annotation an implausible detection is not
        # evaluated, so its status says so instead of "ok".
        expected = ref["status"]
        if expected == "ok" and ref["plausible"] is False:
            expected = "implausible"
        assert peaks["status"] == expected
        assert peaks["status"] in ("ok", "failed", "implausible")
        if ref["status"] == "ok":
            np.testing.assert_allclose(peaks["centres_io"], ref["centres_io"], atol=0.5)
    t2 = pd.read_csv(tmp_path / "results/tables/table2.csv")
    ours = t2[(t2["source"] == "this run") & (t2["stratum"] == "all")]
    assert (ours["n_images"] == len(annotated)).all()
    assert list((tmp_path / "results/figures/overlays").glob("*.png"))
    # keep_intermediates: false. What the tables need of each image is kept; the arrays
    # only the next step read are gone, Io first of all.
    results = tmp_path / "results"
    ids = sorted(test["image_id"])
    assert sorted(p.name for p in (results / "preprocess").iterdir()) == sorted(
        f"{i}.geometry.json" for i in ids)
    for folder in INTERMEDIATES:
        assert not [p for p in (results / folder).rglob("*") if p.is_file()], folder
    for folder, ext in (("select_peaks", "json"), ("levelset_refine", "npz"),
                        ("morphometry", "tsv")):
        assert sorted(p.name for p in (results / folder).iterdir()) == sorted(
            f"{i}.{ext}" for i in ids), folder
    # Nothing is recomputed for the deleted arrays: a second `all` has nothing to do.
    again = run_snakemake(tmp_path, "-n", "all", configfile=config, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def test_changing_the_test_time_scales_reruns_inference_not_training(full_run, tiny_cohort,
                                                                      tmp_path):
    # The scales are an inference setting: a user trying them on a trained run must not
    # retrain Pose-net, but every map and what follows from it must be made again.
    config = write_config(tmp_path, samples=str(tiny_cohort),
                          posenet={"test_time_scales": [0.85, 1.0, 1.15]})
    dry = run_snakemake(full_run, "-n", "all", configfile=config, timeout=300).stdout
    for rule in ("pose_infer", "select_peaks", "crop", "metrics", "tables"):
        assert f"rule {rule}:" in dry or f"\n{rule} " in dry, rule
    for rule in ("train_posenet", "train_mnet", "train_unet", "preprocess", "resize"):
        assert f"rule {rule}:" not in dry and f"\n{rule} " not in dry, rule


def _planned(dry, rule):
    return f"rule {rule}:" in dry or f"\n{rule} " in dry


def test_each_pose_net_of_the_ensemble_trains_once_from_its_own_seed(full_run, tiny_cohort,
                                                                     tmp_path):
    # The default ensemble of two: posenet.keras from the training seed, posenet_member2
    # from the next one, both in Fig. 9's histories.
    models = full_run / "results/models"
    first = pd.read_csv(models / "posenet.history.csv", sep="\t")
    second = pd.read_csv(models / "posenet_member2.history.csv", sep="\t")
    assert (models / "posenet_member2.keras").exists()
    assert not first["loss"].equals(second["loss"])
    # A third member trains only itself; going back to one Pose-net trains nothing. Both
    # remake the maps and what follows from them.
    for members, trained in ((3, {"train_posenet_member"}), (1, set())):
        config = write_config(tmp_path, samples=str(tiny_cohort), posenet={"members": members})
        dry = run_snakemake(full_run, "-n", "all", configfile=config, timeout=300).stdout
        for rule in ("pose_infer", "select_peaks", "crop", "metrics", "tables"):
            assert _planned(dry, rule), (members, rule)
        for rule in ("train_posenet", "train_posenet_member", "train_mnet", "train_unet",
                     "preprocess", "resize"):
            assert _planned(dry, rule) == (rule in trained), (members, rule)
        assert ("posenet_member3.keras" in dry) == (members == 3)


def test_levelset_tuned_per_network_after_paste_back(full_run):
    """tune_levelset searched each network's own masks; levelset_refine used its choice."""
    import json

    tuning = pd.read_csv(full_run / "results/levelset/tuning.csv", sep="\t")
    assert set(tuning["network"]) == {"mnet", "unet"}
    params = json.loads((full_run / "results/levelset/params.json").read_text())
    assert set(params) == {"mnet", "unet"}
    for net, rows in tuning.groupby("network"):
        assert (~rows["refined"]).sum() == 1 and rows["chosen"].sum() == 1
        best = rows[rows["chosen"]].iloc[0]
        assert best["dice_mean"] == rows.loc[rows["refined"], "dice_mean"].max()
        assert params[net]["lam"] == best["lam"] and params[net]["alpha"] == best["alpha"]


def _snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}


def test_check_films_draws_every_film_with_the_trained_models(reference_run, tiny_cohort,
                                                              tmp_path):
    """make check-films: lumbar-ingest, then inference only with the reference run's models
    and level-set coefficients; an overlay of every film, every file under FILM_OUT."""
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    base = Path(tiny_cohort).parent
    films = tmp_path / "films"
    test = sheet[sheet["split"] == "test"]
    for k, rel in enumerate(test["image"]):  # films only: no annotation beside them
        target = films / f"site {k % 2}" / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((base / rel).read_bytes())
    (films / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "film check"
    trained = reference_run / "results"
    before = _snapshot(reference_run)
    proc = subprocess.run(
        ["make", "-C", str(REPO), "check-films", f"FILMS={films}", f"FILM_OUT={out}",
         f"DEMO_RESULTS={trained}", f"FILM_CONFIG={write_config(tmp_path)}",
         f"VENV={Path(sys.executable).parent.parent}", "CORES=2"],
        capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    ingested = pd.read_csv(out / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert len(ingested) == len(test) and (ingested["annotation"] == "").all()
    assert "broken.png" in (out / "samples.skipped.tsv").read_text()
    drawn = sorted(p.stem for p in (out / "results/figures/every_image").glob("*.png"))
    assert drawn == sorted(ingested["image_id"])
    for image_id in ingested["image_id"]:
        peaks = json.loads((out / "results/select_peaks" / f"{image_id}.json").read_text())
        title = (out / "logs/image_overlay" / f"{image_id}.log").read_text()
        assert title.startswith(f"{image_id}: {peaks['status']}")
    assert (out / "results/qc.tsv").exists()
    # Every Pose-net of the run's ensemble: the same centres as the run found.
    for image_id, rel in zip(test["image_id"], test["image"]):
        film = ingested.loc[ingested["image"].str.endswith(Path(rel).name), "image_id"].item()
        peaks = json.loads((out / "results/select_peaks" / f"{film}.json").read_text())
        ref = json.loads(
            (reference_run / "results/select_peaks" / f"{image_id}.json").read_text())
        if ref["status"] == "ok":
            np.testing.assert_allclose(peaks["centres_io"], ref["centres_io"], atol=0.5)
    # Nothing trained or tuned again, and nothing of the reference run touched.
    assert not (out / "results/models").exists() and not (out / "results/levelset").exists()
    assert _snapshot(reference_run) == before
