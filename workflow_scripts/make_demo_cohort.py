"""Rule make_demo_cohort: the synthetic demo cohort and its contact sheet."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.phantom import write_demo_cohort
from lumbar_core.stages import run_contact_sheet

demo = snakemake.params.demo
sheet = write_demo_cohort(
    demo["out_dir"],
    seed=demo["seed"],
    n_train=demo["n_train"],
    n_val=demo["n_val"],
    n_test_per_stratum=demo["n_test_per_stratum"],
    difficulty=demo["difficulty"],
    style=demo.get("style", "classic"),
    workers=snakemake.threads,
)
run_contact_sheet(sheet, snakemake.output.contact_sheet, n=demo["contact_sheet_images"])
print(f"wrote {sheet}", file=sys.stderr)
