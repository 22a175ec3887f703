# slidead: two commands on a fresh machine.
#   make demo   - create .venv from the lock, run the demo on embedded defaults
#   make test   - create .venv from the lock, check torch/torchaudio load, run the test suite (two workers)
#   make test-fast - the suite without the slow and integration tests: the edit loop
#   make bench  - print benchmark figures (not tests)
#   make gpu-check - prove the GPU path on a CUDA machine (one table into tests/bench/RESULTS.md)
#   make lock   - refresh uv.lock on purpose (after editing pyproject.toml's dependencies)
#   make docs   - regenerate docs/configuration.md from the Settings class
#
# Every target installs from uv.lock (exact versions with hashes), never from pyproject's
# ranges. uv itself is bootstrapped into .tools/ with pip, pinned by hash.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TOOLS   = .tools
UV      = $(TOOLS)/bin/uv
STAMP   = $(VENV)/.installed

# uv reads the system CA store (as pip's configuration does), uses the machine's Python and
# never downloads one, and installs into .venv.
export UV_SYSTEM_CERTS = 1
export UV_PYTHON_DOWNLOADS = never
export UV_PROJECT_ENVIRONMENT = $(VENV)
export UV_LINK_MODE = copy
# Byte-compile at install: with PYTHONDONTWRITEBYTECODE=1 (set on the build machines) nothing
# else ever writes .pyc files, and every process compiled torch, MLflow and Prefect from source
# (importing torch, mlflow, duckdb and pyarrow: 42.6 s without, 14.7 s with, on a loaded machine).
export UV_COMPILE_BYTECODE = 1

.PHONY: install demo test test-fast bench lock lock-check smoke lint format docs clean

$(UV): .ci/uv-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes -r .ci/uv-requirements.txt
	touch $(UV)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $(STAMP)

install: $(STAMP)

# Fails in a second with one line naming both versions when torch and torchaudio do not load.
smoke: $(STAMP)
	$(PY) tests/check_stack.py

demo: $(STAMP)
	$(VENV)/bin/slidead demo

# Two workers (pytest-xdist): tests that share a trained plant or a module's fixture run on one
# worker (tests/conftest.py groups them), the longest groups first. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: smoke
	$(VENV)/bin/pytest -q $(XDIST) --durations=15

test-fast: smoke
	$(VENV)/bin/pytest -q $(XDIST) -m "not slow and not integration"

bench: smoke
	$(PY) tests/bench/run.py $(BENCH_ARGS)

# ruff (lint and format) and the import contracts of slidead's layers (pyproject: tool.importlinter).
lint: $(STAMP)
	$(VENV)/bin/ruff check slidead flows deployments tests
	$(VENV)/bin/ruff format --check slidead flows deployments tests
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix slidead flows deployments tests
	$(VENV)/bin/ruff format slidead flows deployments tests

# docs/configuration.md from the Settings class (slidead/settings.py); tests/test_docs.py fails while it is stale.
docs: $(STAMP)
	$(PY) tests/gen_config_doc.py

# Refresh the lock on purpose; commit the result.
lock: $(UV)
	$(UV) lock

# Fails when pyproject.toml and uv.lock disagree (CI runs it first).
lock-check: $(UV)
	$(UV) lock --check

clean:
	rm -rf slidead-data .pytest_cache

# The GPU path proven by one command (at most ~8 minutes on one GPU): the seed's VAE training, a
# 2,000-clip night through `slidead score --device cuda`, the largest batch, the `gpu` tests; one
# table, appended to tests/bench/RESULTS.md. Without CUDA it stops with one sentence (exit 2);
# GPU_ARGS="--device cpu --dry" runs every step small on the CPU.
.PHONY: gpu-check
gpu-check: smoke
	$(PY) tests/bench/gpu_check.py $(GPU_ARGS)

# Build the Docker images and run a night through the compose stack (not part of `make test`;
# needs root or a Docker engine; see docs/operations.md "Docker"). Logs in /var/tmp/slidead-docker/logs.
.PHONY: docker-check
docker-check:
	docker/check.sh
