# `make run` and `make test` do all set-up on a fresh machine: a virtualenv in .venv with the project installed.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
HTMX := static/vendor/htmx.min.js
SWAGGER_UI := static/vendor/swagger-ui/swagger-ui-bundle.js static/vendor/swagger-ui/swagger-ui.css
CHROMIUM := /usr/bin/chromium
PEER_VENV := .peer-venv
PEER_STAMP := $(PEER_VENV)/.installed
PEER_PACKAGE := dictionary-learning==0.1.0

.PHONY: setup run label test bench lint screenshots peer-venv

setup: $(STAMP) $(HTMX) $(SWAGGER_UI)

# The stamp records a finished install; it is redone only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet '$(TORCH)'
	$(PYTHON) -m pip install --quiet -e '.[dev]' '$(TORCH)'
	touch $(STAMP)

# htmx and Swagger UI (for /docs) are served from our own origin (static/vendor/, ignored), fetched from their
# npm packages; one grouped rule, so the fetch runs once when any of the files is missing.
$(HTMX) $(SWAGGER_UI) &: | $(STAMP)
	$(PYTHON) -m app.web.vendor

# The browser tests drive Debian's Chromium; only `make test` needs it (the install runs as root in CI).
$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver

# The toy sweep (about 3 minutes) puts a curve of known feature count beside the LM's on the overview.
run: setup
	$(VENV)/bin/monosemantic toy --dict-sizes 256,512,1024,2048 --l1 0.03 --samples 1500000 --out runs/default/toy
	$(VENV)/bin/monosemantic run --preset default --workdir runs/default

# Label the study's dictionaries from its record's bundle (docs/results/study/labelling/, written by
# `monosemantic record` with the record): no training, no activations; labels go to
# runs/record-study/monosemantic.db, keyed by the weights' hashes.
label: setup
	$(VENV)/bin/monosemantic serve --record docs/results/study

# The database tests also run on PostgreSQL: .ci/start-postgres installs (as root, with apt) and starts
# Debian's server on loopback unless MONOSEMANTIC_TEST_POSTGRES_URL already names one.
test: setup $(CHROMIUM)
	MONOSEMANTIC_TEST_POSTGRES_URL="$${MONOSEMANTIC_TEST_POSTGRES_URL:-$$(bash .ci/start-postgres)}" $(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) bench/bench_training.py
	$(PYTHON) bench/bench_lm.py
	$(PYTHON) bench/bench_contention.py
	$(PYTHON) bench/bench_pipeline.py --preset quick
	$(PYTHON) bench/bench_server.py
	@if [ -d runs/default/saes/saes ]; then $(PYTHON) bench/bench_feature_index.py --workdir runs/default; \
	else echo "bench_feature_index: skipped, it indexes runs/default (build it with make run)"; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# docs/screenshots/: the feature page, the labelling card, /estimates and /contrast at 420 and 1280 px, from runs/quick
# (built if missing).
screenshots: setup $(CHROMIUM)
	$(PYTHON) scripts/screenshots.py

# scripts/peer_reference.py trains the dictionary-learning package's SAE trainers in a virtualenv of their own
# (.peer-venv, ignored); every install repeats the torch pin so no resolver swaps in another torch. The package
# brings a torchvision that does not load with this torch (it is removed: the trainers never import it); the
# script's train half also reads our activations through our own code, which needs pydantic, safetensors, numpy,
# tqdm and matplotlib (training.experiments.pipeline imports the figures).
peer-venv: $(PEER_STAMP)

$(PEER_STAMP):
	test -x $(PEER_VENV)/bin/python || python3 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet '$(TORCH)'
	$(PEER_VENV)/bin/python -m pip install --quiet '$(PEER_PACKAGE)' '$(TORCH)'
	$(PEER_VENV)/bin/python -m pip install --quiet pydantic safetensors numpy tqdm matplotlib '$(TORCH)'
	$(PEER_VENV)/bin/python -m pip uninstall --quiet -y torchvision
	$(PEER_VENV)/bin/python -c "import dictionary_learning.trainers.top_k, dictionary_learning.trainers.standard"
	touch $(PEER_STAMP)
