# havic developer commands. `make setup` builds the environment, `make test` runs the suite.
# VENV can point elsewhere (CI keeps one per requirements hash under ~/.cache/havic).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.requirements-$(REQ_HASH)
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: setup test test-fast demo analysis clean-venv help

help:
	@echo "make setup      create $(VENV) from requirements.txt and install havic (editable)"
	@echo "make test       setup if needed, then run the whole test suite"
	@echo "make test-fast  run the suite without the slow (full-size / real-media) tests"

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(STAMP)
	@# The editable install points at this checkout; redo it when the venv is shared between clones,
	@# or when the console scripts it installs (setup.py, havic/cli) have changed since.
	@if [ "$$(cd / && $(abspath $(PY)) -c 'import havic, pathlib; print(pathlib.Path(havic.__file__).resolve().parent.parent)' 2>/dev/null)" != "$(CURDIR)" ] \
		|| [ ! -x $(VENV)/bin/havic ] || [ setup.py -nt $(VENV)/bin/havic ] || [ havic/cli/__init__.py -nt $(VENV)/bin/havic ]; then \
		$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . ; fi

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	@dir=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(PY) tools/demo.py --run-dir $$dir $(DEMO_ARGS) && echo "demo run folder: $$dir"

# Probes per tap of the demo's pretrained HAVIC vs its random-init twin; DEMO=runs/demo-... reuses a demo run.
analysis: setup
	@dir=runs/analysis-$$(date +%Y%m%d-%H%M%S); \
	$(PY) tools/analysis_demo.py --run-dir $$dir $(if $(DEMO),--demo-dir $(DEMO)) $(ANALYSIS_ARGS) && echo "analysis run folder: $$dir"

clean-venv:
	rm -rf $(VENV)
