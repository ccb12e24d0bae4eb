# geoseg: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geoseg-installed
PYTEST_ARGS ?=

.PHONY: help install lint typecheck test test-all demo bench docs clean

help:
	@echo "make demo   set up .venv, fetch the sample scene, predict + vectorize into outputs/"
	@echo "make test   set up .venv with .[dev], run ruff, mypy and pytest"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks
	$(BIN)/ruff format --check geoseg tests benchmarks
	$(BIN)/python docs/gen_cli_reference.py --check docs/cli.md

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-all: lint typecheck
	$(BIN)/python -m pytest -n 2 -m "" $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/python docs/gen_cli_reference.py > docs/cli.md

demo: $(STAMP)
	$(BIN)/python -m geoseg.demo --out outputs --cache data-cache

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
