# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment it needs and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast test-legacy lint bench install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tf-distill demo --output runs/demo

# The suite runs twice: on Keras 3, then the TensorFlow Model Optimization
# tests on tf_keras (TF_USE_LEGACY_KERAS=1 must be set before TensorFlow loads).
# `make test-fast` leaves out the tests marked slow (end-to-end runs,
# distributed runs, examples): the loop while changing code. The Keras 3
# suite runs in 2 processes (pytest-xdist), each test file in one of them.
PARALLEL ?= -n 2 --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m 'not legacy_keras'
	TF_USE_LEGACY_KERAS=1 $(BIN)/python -m pytest -q -m legacy_keras

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m 'not legacy_keras and not slow'

test-legacy: $(STAMP)
	TF_USE_LEGACY_KERAS=1 $(BIN)/python -m pytest -q -m legacy_keras

lint: $(STAMP)
	$(BIN)/ruff check tf_distill tests examples bench

# Minutes each, on ../shared/data/mnist; figures go to docs/BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_cache_tuning.py

clean:
	rm -rf $(VENV) runs .pytest_cache
