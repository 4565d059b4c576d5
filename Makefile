# The README's two commands: `make demo` and `make test`. Both build .venv from scratch
# with only a Python 3.11+ on the machine. PYTHON and VENV can be set to test another
# interpreter in a virtualenv of its own (`make test PYTHON=python3.12 VENV=.venv-3.12`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kpl load --duration 10 --shards 4

lint: $(STAMP)
	$(BIN)/ruff check kpl server tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy kpl server

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .pytest_cache .ruff_cache
