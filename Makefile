# Everything the project needs is installed from here: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CODE   := $(wildcard src tests bench)

.PHONY: demo test test-fast lint typecheck unit bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The browser tests drive Debian's chromium (Playwright cannot download its own here).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	command -v chromium >/dev/null || apt-get install -y -q chromium \
		|| (apt-get update -q && apt-get install -y -q chromium)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/instar demo

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Bytecode once, before the tests: where PYTHONDONTWRITEBYTECODE is set (as on
# this machine kind), every subprocess the tests start (the CLI, worker
# processes) would otherwise compile Instar from source (tests/acceptance/
# test_cli.py: 76 s without, 61 s with).
unit: $(STAMP)
	$(BIN)/python -m compileall -q src tests > /dev/null
	$(BIN)/pytest -q -n 2 --dist loadgroup

# Test tiers, each a folder of tests/: unit (no database), store (the store
# contract on both backends), engine (App, engine, maintenance), worker (workers,
# processes, restarts), acceptance (the CLI as a subprocess, the demo), web (the
# HTTP API), browser (the dashboard in chromium).
test-fast: $(STAMP)
	$(BIN)/python -m compileall -q src tests > /dev/null
	$(BIN)/pytest -q tests/unit tests/store tests/engine

test: lint typecheck unit

# The benchmark runs in an environment of its own, with the peer queues it
# measures Instar against (bench/requirements.txt), never Instar's dependencies.
# `make bench` takes about a quarter of an hour, `make bench-quick` about a
# minute; BENCH_ARGS passes options (e.g. BENCH_ARGS="--backend sqlite").
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip

$(BENCH_STAMP): pyproject.toml bench/requirements.txt | $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/pip install --quiet -e '.[postgres,web,client,metrics]' -r bench/requirements.txt
	command -v wrk >/dev/null || apt-get install -y -q wrk  # the HTTP load tool
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .mypy_cache .pytest_cache .ruff_cache
