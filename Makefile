# Two commands do all the set-up on a fresh machine:
#   make train   create .venv, install the pinned environment, run the default job
#   make test    create .venv (if needed), install, run the whole test suite
#   make docs    build the documentation site into site/, every warning an error
#   make bench   the loss, kernel, normalize_loss and weighting benchmarks behind the docs
#   make dist    build the sdist and the wheel into dist/ and check them with twine
#   make cluster-docs  run docs/cluster.md's commands on a one-node Slurm cluster (root, ~5 min)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --constraint constraints.txt
# glibc's heap as in a long training loop: freed memory is reused, not faulted in afresh
STEADY_HEAP := MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824

.PHONY: install train test test-fast lint format docs bench dist cluster-docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first and pinned: the local CPU wheel, never the multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) --editable ".[examples,cli,cluster,dev,bench,docs]"
	touch $@

train: install
	$(PY) scripts/train.py

# two workers (pytest-xdist), each test file on one: its module's fixtures start once
test: install
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(STEADY_HEAP) $(PY) -m benchmarks.bench_losses --threads 1
	$(STEADY_HEAP) $(PY) -m benchmarks.bench_kernels --threads 1
	$(STEADY_HEAP) $(PY) -m benchmarks.bench_normalize
	$(STEADY_HEAP) $(PY) -m benchmarks.bench_weighting --threads 1

# twine in an environment of its own: it brings rich, with which Lightning would switch its
# progress bar and model summary in the development environment
dist: install
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	test -x $(VENV)-twine/bin/twine || (python3 -m venv $(VENV)-twine && \
		$(VENV)-twine/bin/python -m pip install --quiet --constraint constraints.txt twine)
	$(VENV)-twine/bin/twine check --strict dist/*

cluster-docs: install
	bash scripts/cluster_walkthrough.sh $(PY)

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
