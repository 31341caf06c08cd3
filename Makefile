# Two commands do everything: `make demo` (the main job on the embedded data) and `make test` (the suite).
# Both create or update .venv at the repository root first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,dashboard,postgres,nni

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-$(subst ,,$(EXTRAS)): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(subst ,,$(EXTRAS))

demo: install
	$(BIN)/nas search --objective acc,latency --target T4 --trials 20 --seed 0 --repeats 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info
