# The two commands of the README. Both install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# --max-jobs-per-timespan: Snakemake 9 re-runs its job selection once per timespan for
# every job that finished while other jobs were waiting for cores, and these re-runs
# accumulate. With the default 100/1s its process took most of one core while the demo
# trained its networks; 1000/10s makes them ten times rarer (a run may then end up to
# 10 s after its last job). Locally no rate limit is meant: 1000 jobs is never reached.
SNAKEMAKE = $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete --keep-going --printshellcmds \
	--max-jobs-per-timespan 1000/10s

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
