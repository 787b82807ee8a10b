# The two commands of the README. Both install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
SNAKEMAKE = $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete --keep-going --printshellcmds

.PHONY: install demo test report lint clean

# GPU=1: the CUDA build (extra `gpu`: Keras on JAX with CUDA 12, the backend of the GPU
# figures in the README); GPU=0: the CPU build. By default, 1 where `nvidia-smi -L` lists an
# NVIDIA GPU (lumbar_core.environment --detect-gpu needs only the standard library).
GPU ?= $(shell $(PYTHON) -m lumbar_core.environment --detect-gpu 2>/dev/null || echo 0)
EXTRAS = test,slurm$(if $(filter 1,$(GPU)),$(comma)gpu)
comma := ,
# One stamp per build: switching GPU=0/1 (or moving the clone to a GPU machine) reinstalls.
STAMP = $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

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
