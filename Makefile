# Every target bootstraps .venv on first use: a fresh machine needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TASKS ?= task_registry/toy
RESULTS ?= results
SUB ?= submissions/example_ResEncL.pth
RECIPE ?= ssl3d-2025
EVALUATE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv lint format test test-fast evaluate validate bench bench-scale bench-gpu clean

help:
	@echo "make evaluate SUB=path.pth   evaluate one submission on TASKS ($(TASKS)) with RECIPE ($(RECIPE))"
	@echo "make validate SUB=path.pth   intake checks only"
	@echo "make test                    the test suite"
	@echo "make lint                    ruff (lint + format check) and mypy, as CI runs them"
	@echo "make bench                   benchmarks -> results/bench/*.json"
	@echo "make bench-scale             a simulated 100-team challenge: status, leaderboard, feedback -> results/bench/scale.json"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

LINT_PATHS := harness tests bench

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# Tests keep nnU-Net lean on small machines: one preprocessing process, in-process augmentation.
LEAN_NNUNET := nnUNet_def_n_proc=$${nnUNet_def_n_proc:-1} nnUNet_n_proc_DA=$${nnUNet_n_proc_DA:-0}

test: $(STAMP)
	$(LEAN_NNUNET) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(LEAN_NNUNET) $(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

# The example submission is made on demand: checkpoints are never committed.
submissions/example_%.pth: | $(STAMP)
	$(PY) -m harness example-submission --track $* --out $@

validate: $(STAMP) $(SUB)
	$(PY) -m harness validate "$(SUB)"

# Intake, the job matrix (local executor; rerun to resume), then the leaderboard. The toy data
# is generated on first use when TASKS is the toy registry. The leaderboard is rebuilt even when
# some job failed (failures are flagged there); the exit status is evaluate's.
TOY_DATA_FILES := data/toy/ToySegOneChannel/dataset.json data/toy/ToySegTwoChannel/dataset.json data/toy/ToyClsShape/labels.csv
evaluate: $(STAMP) $(SUB)
	@if [ "$(abspath $(TASKS))" = "$(abspath task_registry/toy)" ]; then \
		for f in $(TOY_DATA_FILES); do [ -f "$$f" ] || { $(PY) -m harness make-toy-data --out data/toy && break; }; done; \
	fi
	@status=0; $(PY) -m harness evaluate "$(SUB)" --tasks "$(TASKS)" --results "$(RESULTS)" --recipe "$(RECIPE)" \
		$(EVALUATE_ARGS) || status=$$?; \
	$(PY) -m harness leaderboard --results "$(RESULTS)" --recipe "$(RECIPE)" || exit $$?; \
	exit $$status

# bench_scale.py has its own target (bench-scale): it takes minutes.
bench: $(STAMP)
	@set -e; for b in $(filter-out bench/bench_scale.py,$(wildcard bench/bench_*.py)); do echo "== $$b"; $(PY) $$b; done

# A challenge at full size, simulated without training (bench/README.md): minutes on two cores.
bench-scale: $(STAMP)
	nice $(PY) bench/bench_scale.py

# Needs a CUDA device (about 10 min on an H200: 4 trainers x compile off/on x fp16/bf16); see bench/gpu_train.py.
bench-gpu: $(STAMP)
	$(PY) bench/gpu_train.py

clean:
	rm -rf $(RESULTS)/bench
