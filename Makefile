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

.PHONY: book test setup execute html pages pack pdf lab system-deps browser-test lock clean clean-generated bench help

help:
	@echo "make book        set up .venv, execute every notebook (full mode), build _build/html"
	@echo "make book QUICK=1  the same with quick parameters (fast preview)"
	@echo "make test        set up .venv and run every test (library, notebooks in quick mode, strict book build)"
	@echo "make lab         open the notebooks in JupyterLab from the project's .venv (installs requirements-lab.lock once)"
	@echo "make pdf         the whole book as one PDF (_build/pdf/book.pdf), printed by headless Chromium"
	@echo "make system-deps install the system packages (Debian chromium) the browser test and the PDF need (root)"
	@echo "make bench       run the speed benchmark (prints a table, writes book/data/benchmark.md for the status page; not a test)"

# Idempotent: re-installs only when the lock file or pyproject.toml changed.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): requirements-lab.lock $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-lab.lock -c requirements.lock
	@touch $(LAB_STAMP)

# JupyterLab on the notebooks, with the project's kernel (mathlib importable, no bootstrap install).
lab: $(LAB_STAMP)
	cd notebooks && ../$(VENV)/bin/jupyter lab

# Debian's chromium (browser test, PDF). Idempotent and fast when present; see the script.
system-deps:
	@.ci/install-system-deps

execute: $(STAMP)
	$(PY) -m mathlib.book execute $(EXEC_FLAGS)

pages: $(STAMP)
	$(PY) -m mathlib.book pages >/dev/null

# The lecturer pack (figures.zip, figures.bib, slides; per chapter) goes into book/_generated/pack
# before the build, which copies it into the HTML as downloads. Rebuilt only when figures changed.
pack: $(STAMP)
	$(PY) -m mathlib.book pack

html: $(STAMP) pages pack
	$(VENV)/bin/jupyter-book build . $(JB_FLAGS)
	$(PY) -m mathlib.book check-html _build/html
	@echo "The book: $(abspath _build/html/index.html)"

book: $(STAMP)
	$(PY) -m mathlib.book execute $(EXEC_FLAGS)
	$(MAKE) --no-print-directory html

# One PDF of the whole book: the single-page HTML (same MathJax macros, numbers and boxes as the
# HTML) printed by headless Chromium. Needs `make book` first (uses the executed notebooks).
pdf: $(STAMP) system-deps pages pack
	$(VENV)/bin/jupyter-book build . --builder singlehtml $(JB_FLAGS)
	$(PY) -m mathlib.book pdf _build/singlehtml/index.html _build/pdf/book.pdf

PYTEST_ARGS ?=
test: $(STAMP) system-deps
	$(PY) -m pytest -ra $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) tests/benchmarks/bench_maml_sinusoid.py --markdown book/data/benchmark.md

# Regenerate the lock from pyproject's ranges (needs the network to PyPI).
lock:
	rm -rf /tmp/lockvenv && $(PYTHON) -m venv /tmp/lockvenv
	/tmp/lockvenv/bin/pip install --quiet ".[book,test]"
	{ echo "# Exact versions that 'make' installs (Python 3.11, CPU). Regenerate with 'make lock'."; \
	  /tmp/lockvenv/bin/pip freeze --exclude maml-theory-mathlib; } > requirements.lock
	/tmp/lockvenv/bin/pip freeze --exclude maml-theory-mathlib > /tmp/lockvenv/base.txt
	/tmp/lockvenv/bin/pip install --quiet ".[lab]" -c requirements.lock
	{ echo "# Optional group 'lab' (JupyterLab for make lab), on top of requirements.lock (Python 3.11)."; \
	  echo "# Exact versions; regenerate with 'make lock'."; \
	  /tmp/lockvenv/bin/pip freeze --exclude maml-theory-mathlib | grep -vxFf /tmp/lockvenv/base.txt; } > requirements-lab.lock

clean-generated:
	rm -rf book/_generated _build .cache/test-book

clean: clean-generated
	rm -rf $(VENV) .cache
