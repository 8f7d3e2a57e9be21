# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(BIN)/activate

.PHONY: install test demo lint types
install: $(BIN)/activate

# ruff and mypy first: a style or type error fails fast, before the slow suite
test: lint types
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

lint: $(BIN)/activate
	$(BIN)/ruff check .

types: $(BIN)/activate
	$(BIN)/mypy

demo: $(BIN)/activate
	cd example_app && FLASK_APP=app ../$(BIN)/flask engage db upgrade
	cd example_app && FLASK_APP=app ../$(BIN)/flask engage seed-demo --once
	cd example_app && FLASK_APP=app ../$(BIN)/flask run --debug --no-reload --port 5000
