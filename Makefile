# FGAM Studio tasks. The README's two commands are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000
# The quick start runs with DEBUG on and the embedded defaults (SQLite in var/, tasks in-process).
DEV_ENV := DEBUG=1

.PHONY: setup run demo test test-fast lint fmt typecheck bench browser lmms-env clean

setup: $(STAMP)

# On a machine without an NVIDIA GPU, torch==2.13.0 (a CPU build) goes in first: an unpinned
# torch would pull several GB of CUDA libraries.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e '.[dev,ml]'
	rm -f $(VENV)/.installed-* && touch $@

run: demo
	$(DEV_ENV) $(BIN)/python manage.py runserver $(HOST):$(PORT)

demo: setup
	$(DEV_ENV) $(BIN)/python manage.py migrate --no-input
	$(DEV_ENV) $(BIN)/python manage.py collectstatic --no-input -v0
	$(DEV_ENV) $(BIN)/python manage.py create_demo_users
	$(DEV_ENV) $(BIN)/python manage.py make_demo
	$(DEV_ENV) $(BIN)/python manage.py make_demo_stage2
	$(DEV_ENV) $(BIN)/python manage.py make_demo_models

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not browser and not services" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/djlint templates --lint
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup
	$(BIN)/mypy

# Needs PostgreSQL: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/fgam_bench).
bench: setup
	$(BIN)/python -m tests.bench.bench_import

# lmms-eval in its own environment (.venv-lmms), never in .venv: unpinned, it upgrades torch
# to a CUDA build. PyPI's torchvision wheels are CUDA builds that cannot load against the CPU
# torch (transformers would then fail on import), so on a machine without a GPU it is removed
# again: the harness needs it only for some of its model classes. filelock 4 dropped the
# `filelock._api` module lmms-eval 0.7.3 patches. Used by tests/training/probes/ and by anyone
# scoring a probe set's lmms_eval/ task (training/README.md).
LMMS_VENV := .venv-lmms
LMMS_PINS := lmms-eval==0.7.3 torchvision==0.28.0 filelock==3.32.7
LMMS_STAMP := $(LMMS_VENV)/.installed-$(shell echo $(LMMS_PINS) | sha1sum | cut -c1-12)

lmms-env: $(LMMS_STAMP)

$(LMMS_STAMP):
	test -x $(LMMS_VENV)/bin/python || $(PY) -m venv $(LMMS_VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(LMMS_VENV)/bin/pip install -q torch==2.13.0; fi
	$(LMMS_VENV)/bin/pip install -q $(LMMS_PINS)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(LMMS_VENV)/bin/pip uninstall -q -y torchvision; fi
	rm -f $(LMMS_VENV)/.installed-* && touch $@

# Headless Chromium from Debian for the browser tests (never a downloaded browser).
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) $(LMMS_VENV) var .pytest_cache .ruff_cache .mypy_cache
