# The two commands of the README. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: study test mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

study: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/study all

test: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pytest -q

# Mutation score of the statistics and verdict rule (not part of `test`): mutmut
# mutates study/stats.py and runs tests/test_stats.py against each mutant.
mutation: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]' 'mutmut>=3.3'
	rm -rf mutants && $(BIN)/mutmut run > /dev/null 2>&1 || true
	$(BIN)/mutmut results --all true | awk -F': ' '{n[$$2]++} END {printf "mutation score: %d of %d killed (%.0f%%)\n", n["killed"], NR, 100 * n["killed"] / NR}'
	$(BIN)/mutmut results
