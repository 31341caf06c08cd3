# Two commands do everything: `make demo` (the main job on the embedded data) and `make test` (the suite).
# Both create or update .venv at the repository root first: `make demo` with the runtime dependencies only,
# `make test` adds the test extras (TEST_EXTRAS: pytest, ruff, import-linter, optuna-dashboard, psycopg2, nni).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEST_EXTRAS ?= dev,dashboard,postgres,nni

.PHONY: demo test lint install install-test docs-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-$(TEST_EXTRAS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

install: $(VENV)/.installed-runtime

install-test: $(VENV)/.installed-$(TEST_EXTRAS)

demo: install
	$(BIN)/nas search --objective acc,latency --target T4 --trials 20 --seed 0 --repeats 2

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The default suite (cheap documentation examples included), then the documentation examples that train
# briefly; the documents that run whole searches and exports (README, docs/search.md, docs/export.md): make docs-test.
test: lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m docs_train

# Every console example of README.md and docs/*.md, the long ones (searches and exports) included: tens of minutes.
docs-test: install-test
	$(BIN)/python -m pytest -m "docs or docs_train or docs_long" tests/test_docs_run.py

clean:
	rm -rf $(VENV) build dist *.egg-info
