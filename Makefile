# Jiedao — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test bench lint browser install serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests (Debian package; no browser download).
browser:
	@scripts/ensure-chromium.sh

## Build (or reuse) the synthetic demo district and serve the cockpit on $(HOST):$(PORT).
demo: $(STAMP)
	$(BIN)/jiedao demo
	$(BIN)/jiedao serve --host $(HOST) --port $(PORT)

## Run the whole test suite (SQLite, or PostgreSQL when JIEDAO_TEST_DATABASE_URL is set).
test: $(STAMP) browser
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/jiedao bench all

lint: $(STAMP)
	$(BIN)/ruff check jiedao tests bench

serve: $(STAMP)
	$(BIN)/jiedao serve --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) var .pytest_cache
