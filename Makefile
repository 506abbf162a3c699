# The two commands a newcomer types: `make demo` and `make test`.
# Both install whatever is missing first (tools/bootstrap).
PY := .venv/bin/python
SHELL := /bin/bash

.PHONY: demo test bench lint deps clean

deps:
	@tools/bootstrap

SPEED ?= 60

demo: deps
	$(PY) -m quhao.cli demo --speed $(SPEED)


test: deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: deps
	$(PY) -m quhao.cli bench all

lint: deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache .hypothesis
