# The commands of the README. `demo` and `test` install what they need into .venv first;
# `check-films` runs on what `demo` installed and trained.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
SNAKEMAKE = $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete --keep-going --printshellcmds

.PHONY: install demo check-films test report lint clean

# GPU=1: the CUDA build (extra `gpu`: Keras on JAX with CUDA 12, the backend of the GPU
# figures in the README); GPU=0: the CPU build. By default, 1 where `nvidia-smi -L` lists an
# NVIDIA GPU (lumbar_core.workflow.environment --detect-gpu needs only the standard library).
GPU ?= $(shell $(PYTHON) -m lumbar_core.workflow.environment --detect-gpu 2>/dev/null || echo 0)
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

## check-films: the demo's trained models, inference only, on a folder of films:
##   make check-films FILMS=<folder> [FILM_OUT=results/film-check] [DEMO_RESULTS=results]
## writes FILM_OUT/samples.tsv (lumbar-ingest), then an overlay of every film in
## FILM_OUT/results/figures/every_image/ and FILM_OUT/results/qc.tsv. The run's files stay
## under FILM_OUT (its own results/, logs/ and .snakemake/); the models (every Pose-net of
## the ensemble: posenet.keras and posenet_member*.keras) and level-set coefficients are read
## from DEMO_RESULTS. FILM_CONFIG names a config file to use on top of config.yaml: the one
## the models were trained with, if not the default. SNAKEMAKE_ARGS are passed on to
## Snakemake (e.g. -n, or --cores 8 --resources gpu=1).
FILM_OUT ?= results/film-check
DEMO_RESULTS ?= results
FILM_CONFIG ?=
SNAKEMAKE_ARGS ?=
check-films:
	@set -e; \
	test -n "$(FILMS)" || { echo "usage: make check-films FILMS=<folder of films> [FILM_OUT=$(FILM_OUT)]" >&2; exit 2; }; \
	trained="$$(realpath -m "$(DEMO_RESULTS)")"; out="$$(realpath -m "$(FILM_OUT)")"; \
	for f in models/posenet.keras models/mnet.keras models/unet.keras levelset/params.json; do \
	  test -f "$$trained/$$f" || { echo "$$trained/$$f not found: train the models first (make demo)" >&2; exit 2; }; \
	done; \
	posenets="'$$trained/models/posenet.keras'"; \
	for f in "$$trained"/models/posenet_member*.keras; do \
	  if test -f "$$f"; then posenets="$$posenets, '$$f'"; fi; \
	done; \
	$(VENV)/bin/python -m lumbar_core.workflow.ingest "$(FILMS)" "$$out/samples.tsv"; \
	set -x; \
	$(SNAKEMAKE) --snakefile "$(CURDIR)/Snakefile" --directory "$$out" \
	  $(if $(FILM_CONFIG),--configfile "$$(realpath "$(FILM_CONFIG)")") \
	  --config "samples=$$out/samples.tsv" "predict_splits=[train, val, test]" \
	  "posenet={model: [$$posenets]}" \
	  "segmentation={mnet_model: '$$trained/models/mnet.keras', unet_model: '$$trained/models/unet.keras'}" \
	  "levelset={params_file: '$$trained/levelset/params.json'}" \
	  $(SNAKEMAKE_ARGS) -- all_overlays

## test: install, check the workflow (lint, format, dry run) and run the test suite
test: install
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/snakemake --lint --cores 1 > /dev/null
	$(VENV)/bin/snakemake -n --cores 1 --quiet rules
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf results logs .snakemake
