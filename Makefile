# make demo   runs the main job (flows/tune_digits.py) with a temporary local Prefect server
# make test   runs the test suite; PYTEST_ARGS='-k storage -x' passes arguments to pytest
# make lint   ruff check, ruff format --check, mypy
# Each target first creates .venv and installs the package with its test extras (once, and again
# only when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml means: install again.
INSTALL_STAMP := $(VENV)/.installed

PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

# A Prefect home inside the repo keeps the demo's database and settings away from ~/.prefect.
# With no PREFECT_API_URL set, Prefect starts a temporary local API server for the run.
PREFECT_ENV := PREFECT_HOME=$(CURDIR)/.prefect-home PREFECT_SERVER_ANALYTICS_ENABLED=false

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint bench

help:
	@echo "make demo   tune a digits classifier (flows/tune_digits.py); DEMO_ARGS='--name x' passes arguments"
	@echo "make test   run the tests; PYTEST_ARGS='-x -k storage' passes arguments to pytest"
	@echo "make lint   ruff check, ruff format --check, mypy prefect_tune"
	@echo "make bench  run the benchmarks W1-W7 (bench/README.md); BENCH_ARGS='--only W1' passes arguments"
	@echo "make venv   create .venv and install the package with its test extras"

venv: $(INSTALL_STAMP)

$(INSTALL_STAMP): pyproject.toml
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	@echo "Installing prefect-tune with its test extras into $(VENV) (a few minutes the first time)"
	# The pip that ships with Python 3.11 resolves this dependency tree several times slower.
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --quiet --upgrade 'pip>=25'
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --quiet -e '.[test]'
	touch $(INSTALL_STAMP)

demo: venv
	$(PREFECT_ENV) $(VENV_PYTHON) flows/tune_digits.py $(DEMO_ARGS)

test: venv
	$(PREFECT_ENV) $(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PREFECT_ENV) $(VENV_PYTHON) -m bench.run $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy prefect_tune
