# Everything runs inside .venv; `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch pinned here installs from the local wheel cache in seconds; the
# package itself only asks for torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/gananomaly demo

lint: install
	$(BIN)/ruff check gananomaly pipelines tests benchmarks

# Test modules are shared out whole between up to 4 processes (one per core): most tests fit
# small networks on one thread each, so two cores run the suite in about half the time.
PYTEST_PROCS ?= --numprocesses=auto --maxprocesses=4 --dist loadfile

test: lint
	$(BIN)/python -m pytest $(PYTEST_PROCS)

test-fast: install
	$(BIN)/python -m pytest $(PYTEST_PROCS) -m "not slow and not spark and not mlflow_server and not ui"

bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks run --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
