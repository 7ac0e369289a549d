# Every target bootstraps .venv on first use: a fresh machine needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TASKS ?= task_registry/toy
RESULTS ?= results
SUB ?= submissions/example_ResEncL.pth
PYTEST_ARGS ?=

.PHONY: help venv test test-fast evaluate validate bench bench-gpu clean

help:
	@echo "make evaluate SUB=path.pth   evaluate one submission on TASKS ($(TASKS))"
	@echo "make validate SUB=path.pth   intake checks only"
	@echo "make test                    the test suite"
	@echo "make bench                   benchmarks -> results/bench/*.json"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

# The example submission is made on demand: checkpoints are never committed.
submissions/example_%.pth: | $(STAMP)
	$(PY) -m harness example-submission --track $* --out $@

validate: $(STAMP) $(SUB)
	$(PY) -m harness validate "$(SUB)"

evaluate: $(STAMP) $(SUB)
	$(PY) -m harness validate "$(SUB)"

bench: $(STAMP)
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(RESULTS)/bench
