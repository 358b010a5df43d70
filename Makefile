# The two set-up commands: `make demo` (end to end on scikit-learn's digits) and `make test`.
# Both create the environment in .venv/ when it is missing (or older than pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.noisefix-installed
# Tests and CI read MNIST from the shared data folder beside the checkout when it exists.
export NOISEFIX_DATA ?= $(abspath $(CURDIR)/../shared/data)

.PHONY: demo test test-slow env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/noisefix demo --out demo-out --force

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf demo-out .pytest_cache
