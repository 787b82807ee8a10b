"""Workflow tests: the real Snakemake CLI on a tiny generated cohort."""

from pathlib import Path

import pandas as pd
import pytest

from conftest import run_snakemake, write_config

pytestmark = pytest.mark.workflow

SIX = {"Orig UNet", "Orig MNet", "PN+UNet", "PN+MNet", "PN+UNet+LS", "PN+MNet+LS"}


@pytest.fixture(scope="module")
def full_run(tiny_cohort, tmp_path_factory):
    """``snakemake all`` and ``--report`` on the tiny cohort with tiny models."""
    workdir = tmp_path_factory.mktemp("run")
    config = write_config(workdir, samples=str(tiny_cohort))
    run_snakemake(workdir, "all", configfile=config)
    run_snakemake(workdir, "--report", "results/report.html", configfile=config)
    return workdir


def test_dry_run_lists_every_rule_of_the_design(tiny_cohort, tmp_path):
    config = write_config(tmp_path, samples=str(tiny_cohort))
    out = run_snakemake(tmp_path, "-n", "all", configfile=config).stdout
    for rule in ("preprocess", "resize", "ground_truth", "train_posenet", "pose_infer",
                 "select_peaks", "crop", "train_mnet", "train_unet", "train_mnet_whole",
                 "train_unet_whole", "mnet_infer", "unet_infer", "mnet_whole_infer",
                 "unet_whole_infer", "levelset_refine", "metrics", "tables", "fig9", "fig10",
                 "overlays", "qc"):
        assert f"rule {rule}:" in out or f"\n{rule} " in out, rule


def test_preprocess_and_resize_outputs(full_run, tiny_cohort):
    from lumbar_core import io

    sheet = pd.read_csv(tiny_cohort, sep="\t")
    for image_id in sheet["image_id"]:
        io_npz = io.load_npz(full_run / "results/preprocess" / f"{image_id}.npz")
        i_npz = io.load_npz(full_run / "results/resize" / f"{image_id}.npz")
        assert io_npz["io"].shape == (3072, 1536) and io_npz["io"].dtype.name == "uint16"
        assert i_npz["i"].shape == (512, 256)
        geometry = io.read_json(full_run / "results/preprocess" / f"{image_id}.geometry.json")
        assert geometry["status"] == "ok" and len(geometry["geometry"]["input_shape"]) == 2


def test_table2_has_six_methods_with_finite_values(full_run):
    table = pd.read_csv(full_run / "results/tables/table2.csv")
    ours = table[table["source"] == "this run"]
    assert set(ours["method"]) == SIX
    overall = ours[ours["stratum"] == "all"]
    assert overall["dice_mean"].notna().all() or overall["dice_all_images_mean"].notna().all()
    for ext in ("md", "tex"):
        assert (full_run / f"results/tables/table2.{ext}").stat().st_size > 0


def test_table1_fig10_fig9_overlays_and_report(full_run):
    t1 = pd.read_csv(full_run / "results/tables/table1.csv")
    assert {"all", "DR", "CR", "normal", "abnormal"} <= set(t1["stratum"])
    for name in ("fig9_loss_curves", "fig10_centre_error"):
        for ext in ("png", "pdf"):
            assert (full_run / f"results/figures/{name}.{ext}").stat().st_size > 0
    assert (full_run / "results/report.html").stat().st_size > 10_000
    assert (full_run / "results/qc.tsv").exists()
