# The two commands of the README. Both install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
SNAKEMAKE = $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete --keep-going --printshellcmds

.PHONY: install demo test report lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test,slurm]"
	touch $@

install: $(VENV)/.installed

## demo: install, write the synthetic demo cohort, run the whole workflow, write the report
demo: install
	$(SNAKEMAKE) make_demo_cohort
	$(SNAKEMAKE) all
	$(VENV)/bin/snakemake --cores 1 --report results/report.html

## test: install, check the workflow (lint, format, dry run) and run the test suite
test: install
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/snakemake --lint --cores 1 > /dev/null
	$(VENV)/bin/snakemake -n --cores 1 --quiet rules
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf results logs .snakemake
