# ci-pool: `make demo` runs one job end to end; `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv demo test unit lint fmt bench clean

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(PY)

venv: $(PY)

demo: $(PY)
	$(VENV)/bin/ci-pool demo

test: $(PY)
	$(PY) -m pytest -n 2 --dist loadfile

unit: $(PY)
	$(PY) -m pytest tests/unit

lint: $(PY)
	$(PY) -m ruff check ci_pool tests bench
	$(PY) -m ruff format --check ci_pool tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

fmt: $(PY)
	$(PY) -m ruff format ci_pool tests bench
	$(PY) -m ruff check --fix ci_pool tests bench

bench: $(PY)
	$(PY) bench/all.py

clean:
	rm -rf .ci-pool build dist *.egg-info
