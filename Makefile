# The two commands of the README: `make demo` and `make test`. Each does all of its own set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local BigQuery emulator runs from its own virtualenv (Python 3.13), built on first use.
export AIRFLOW_INCREMENTAL_EMULATOR_VENV ?= $(CURDIR)/.venv-bq

.PHONY: install emulator lint unit test demo bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

emulator: install
	$(BIN)/python -c "from airflow_provider_incremental.local.emulator import ensure_venv; print(ensure_venv())"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint emulator
	$(BIN)/python -m pytest tests

demo: emulator
	$(BIN)/python -m airflow_provider_incremental.local.demo

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-bq .mypy_cache .ruff_cache
