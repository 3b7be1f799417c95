# Two commands set up and test a fresh machine:  `make setup`  then  `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CUDA machines: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128` (same torch version).
TORCH_INDEX ?=

.PHONY: setup browser proxy test test-all lint bench demo clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls ~3 GB of CUDA wheels onto a CPU machine.
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[dev]'
	@$(BIN)/silo --version

# Headless Chromium for the audit report's browser test (Debian's package; root or sudo needed to install).
browser:
	command -v chromium || (apt-get update && apt-get install -y chromium)

# nginx, the coordinator's Fleet proxy (silo/proxy.py), for tests/security/ (Debian's package; Debian
# puts it in /usr/sbin, often off a user's PATH).
proxy:
	command -v nginx || test -x /usr/sbin/nginx || (apt-get update && apt-get install -y nginx)

test: browser proxy
	$(BIN)/python -m pytest -q

# The whole suite, the slow real-process tests included (CI runs exactly this); a quick pass without them:
# `.venv/bin/python -m pytest -q -m 'not slow'`.
test-all: test

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
