# Two commands do all the set-up on a fresh machine:
#   make train   create .venv, install the pinned environment, run the default job
#   make test    create .venv (if needed), install, run the whole test suite
#   make docs    build the documentation site into site/, every warning an error
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --constraint constraints.txt

.PHONY: install train test test-fast lint format docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first and pinned: the local CPU wheel, never the multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) --editable ".[examples,dev,bench,docs]"
	touch $@

train: install
	$(PY) scripts/train.py

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
