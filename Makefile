# slidead: two commands on a fresh machine.
#   make demo   - create .venv, install, run the demo on embedded defaults
#   make test   - create .venv, install dev extras, run the test suite
#   make bench  - print benchmark figures (not tests)

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slidead demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow and not integration"

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) tests/bench/run.py $(BENCH_ARGS)

clean:
	rm -rf slidead-data .pytest_cache
