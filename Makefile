# Two commands on a fresh machine: `make book` and `make test` (see README).
# Everything is installed into .venv from requirements.lock (exact versions) + this project.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
QUICK  ?=
WORKERS ?= 2
JB_FLAGS := -W -n --keep-going

EXEC_FLAGS := --workers $(WORKERS) $(if $(QUICK),--quick,)

.PHONY: book test setup execute html pages lock clean clean-generated bench help

help:
	@echo "make book        set up .venv, execute every notebook (full mode), build _build/html"
	@echo "make book QUICK=1  the same with quick parameters (fast preview)"
	@echo "make test        set up .venv and run every test (library, notebooks in quick mode, strict book build)"
	@echo "make bench       run the speed benchmark (prints a table, writes book/data/benchmark.md for the status page; not a test)"

# Idempotent: re-installs only when the lock file or pyproject.toml changed.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

execute: $(STAMP)
	$(PY) -m mathlib.book execute $(EXEC_FLAGS)

pages: $(STAMP)
	$(PY) -m mathlib.book pages >/dev/null

html: $(STAMP) pages
	$(VENV)/bin/jupyter-book build . $(JB_FLAGS)
	$(PY) -m mathlib.book check-html _build/html
	@echo "The book: $(abspath _build/html/index.html)"

book: $(STAMP)
	$(PY) -m mathlib.book execute $(EXEC_FLAGS)
	$(MAKE) --no-print-directory html

test: $(STAMP)
	$(PY) -m pytest -ra

bench: $(STAMP)
	$(PY) tests/benchmarks/bench_maml_sinusoid.py --markdown book/data/benchmark.md

# Regenerate the lock from pyproject's ranges (needs the network to PyPI).
lock:
	rm -rf /tmp/lockvenv && $(PYTHON) -m venv /tmp/lockvenv
	/tmp/lockvenv/bin/pip install --quiet ".[book,test]"
	{ echo "# Exact versions that 'make' installs (Python 3.11, CPU). Regenerate with 'make lock'."; \
	  /tmp/lockvenv/bin/pip freeze --exclude maml-theory-mathlib; } > requirements.lock

clean-generated:
	rm -rf book/_generated _build .cache/test-book

clean: clean-generated
	rm -rf $(VENV) .cache
