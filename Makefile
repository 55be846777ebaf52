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

# prometheus and promtool (Debian/Ubuntu package `prometheus`), which the monitoring tests run.
# Installed when missing and this runs as root with apt-get; the package's own service (which
# listens on 0.0.0.0:9090) is then stopped and disabled where systemd runs.
.PHONY: prometheus
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing the prometheus package (prometheus, promtool) for the monitoring tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null && \
	         apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; } \
	  && { systemctl disable --now prometheus >/dev/null 2>&1 || true; } \
	  || echo "Could not install the prometheus package; the monitoring tests skip without it, and fail under CI=true."; \
	else \
	  echo "prometheus/promtool not found: install the 'prometheus' package (sudo apt-get install -y --no-install-recommends prometheus); the monitoring tests skip without it, and fail under CI=true."; \
	fi

# Debian's Chromium, which the console's browser tests drive through pytest-playwright
# (Playwright's own browser download is not used). Installed when missing and this runs as root
# with apt-get; the tests skip without it, and fail under CI=true.
.PHONY: chromium
chromium:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing the chromium package for the console's browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null && \
	         apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; } \
	  || echo "Could not install the chromium package; the browser tests skip without it, and fail under CI=true."; \
	else \
	  echo "chromium not found: install the 'chromium' package (sudo apt-get install -y --no-install-recommends chromium); the browser tests skip without it, and fail under CI=true."; \
	fi

# The type checker first (its configuration is in pyproject.toml); then the tests that share
# one Ray cluster; then the tests that start and stop Ray themselves, in their own pytest process.
test: install prometheus chromium typecheck
	$(BIN)/python -m pytest -m "not restarts_ray" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m restarts_ray $(PYTEST_ARGS)

.PHONY: typecheck
typecheck: install
	$(BIN)/python -m mypy

bench: install
	$(BIN)/ymera bench core --json
	$(BIN)/ymera bench router --json
	$(BIN)/ymera bench batch --json
	$(BIN)/ymera bench scale --json

clean:
	rm -rf $(VENV) *.egg-info
