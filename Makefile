# The two commands a newcomer types: `make demo` and `make test`.
# Both install whatever is missing first (tools/bootstrap).
PY := .venv/bin/python
SHELL := /bin/bash

.PHONY: demo test bench chaos lint deps clean

deps:
	@tools/bootstrap

SPEED ?= 300

demo: deps
	$(PY) -m cli demo --speed $(SPEED)


test: deps
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not alone"
	$(PY) -m pytest -q -n 0 -m alone

bench: deps
	$(PY) -m cli bench all

# The hall SIGKILLed 100 times under load, 30,000 malformed requests, broker restarts,
# damaged records, a full and a read-only disk, midnight (several minutes; `make test`
# runs a short version: tests/test_chaos.py).
chaos: deps
	$(PY) -m cli chaos

lint: deps
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m ruff format --check .

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache .hypothesis
