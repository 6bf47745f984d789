# adaptwin: `make repro` builds every table, model and figure; `make test` runs the whole test suite.
# Both create .venv and install the pinned stack (constraints.txt) on first use.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# DVC stage commands call `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP  := $(VENV)/.installed
# Notebooks run in order under nbval: each writes what the next reads, in the smoke profile under .smoke/.
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install repro repro-paper test test-fast lint lab clean-smoke

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

# Paper scale: the same pipeline with the knobs of profiles/paper.yaml (hours; see README).
repro-paper: install
	$(BIN)/dvc exp run $$($(BIN)/python tools/profile.py paper)

lint: install
	$(BIN)/ruff check lib tests benchmarks tools

test: install lint
	$(BIN)/pytest -q tests
	rm -rf .smoke
	$(BIN)/pytest -q -p no:cacheprovider --nbval-lax $(NOTEBOOKS)

test-fast: install
	$(BIN)/pytest -q -m "not slow" tests

lab: install
	$(BIN)/jupyter lab notebooks/

clean-smoke:
	rm -rf .smoke
