# Two entry points: `make run` (set up + serve) and `make test` (set up + all tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstalls when the dependencies or the install steps change (e.g. the --no-deps extras).
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
APT_PACKAGES := espeak-ng sox postgresql redis-server chromium prometheus nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install system-deps lint format unit integration bench bench-quick dashboard-check clean

run: install  ## set up and run the service on :8000 (CPU default config)
	$(BIN)/serve run serve_config.yaml

test: system-deps install lint  ## set up and run every test (unit + integration)
	$(BIN)/python -m pytest tests -p no:cacheprovider --timeout 900 -q -ra --durations=25

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m pip install -q --no-deps resemblyzer==0.1.4
	rm -f $(VENV)/.installed-* && touch $@

system-deps:  ## Debian packages the tests need (servers are started by the tests)
	@missing=""; \
	for cmd in espeak-ng sox redis-server chromium prometheus promtool; do command -v $$cmd >/dev/null || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing=1; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

lint: install  ## style, types and the import-layer contracts (docs/architecture.md)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: install
	$(BIN)/python -m pytest tests/unit -p no:cacheprovider -q

integration: system-deps install
	$(BIN)/python -m pytest tests/integration -p no:cacheprovider --timeout 900 -q -ra

dashboard-check: system-deps install  ## app + Ray dashboard in headless Chromium -> docs/dashboard-serve.png
	$(BIN)/python scripts/dashboard_check.py --out docs/dashboard-serve.png

clean:
	rm -rf $(VENV) build *.egg-info
