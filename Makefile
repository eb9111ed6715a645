# `make run` and `make test` do all set-up on a fresh machine: a virtualenv in .venv with the project installed.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: setup run test bench lint

setup: $(STAMP)

# The stamp records a finished install; it is redone only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet '$(TORCH)'
	$(PYTHON) -m pip install --quiet -e '.[dev]' '$(TORCH)'
	touch $(STAMP)

run: setup
	$(VENV)/bin/monosemantic run --preset default --workdir runs/default

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) bench/bench_training.py
	$(PYTHON) bench/bench_pipeline.py --preset quick

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
