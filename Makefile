# Two commands for a fresh machine: `make up` (install, then start the platform on embedded
# defaults) and `make test` (install, then run the whole test suite).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch, installed before anything that needs torch, so that pip does not
# pull the CUDA build and its several GB of packages. Override for another platform.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install up down status test bench clean

$(BIN)/ymera: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(BIN)/ymera

install: $(BIN)/ymera

up: install
	$(BIN)/ymera up

down: install
	$(BIN)/ymera down

status: install
	$(BIN)/ymera status

# Tests that share one Ray cluster run first; tests that start and stop Ray themselves run
# after, in their own pytest process.
test: install
	$(BIN)/python -m pytest -m "not restarts_ray" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m restarts_ray $(PYTEST_ARGS)

bench: install
	$(BIN)/ymera bench core --json
	$(BIN)/ymera bench router --json
	$(BIN)/ymera bench batch --json

clean:
	rm -rf $(VENV) *.egg-info
