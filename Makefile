# The two commands of the README. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: study test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

study: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/study all

test: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pytest -q
