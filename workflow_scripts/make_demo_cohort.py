"""Rule make_demo_cohort: the synthetic demo cohort and its contact sheet."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from lumbar_core.steps import demo

settings = snakemake.params.demo
sheet = demo.make_demo_cohort(
    out_dir=settings["out_dir"],
    contact_sheet=snakemake.output.contact_sheet,
    seed=settings["seed"],
    n_train=settings["n_train"],
    n_val=settings["n_val"],
    n_test_per_stratum=settings["n_test_per_stratum"],
    difficulty=settings["difficulty"],
    style=settings.get("style", "classic"),
    contact_sheet_images=settings["contact_sheet_images"],
    workers=snakemake.threads,
)
print(f"wrote {sheet}", file=sys.stderr)
