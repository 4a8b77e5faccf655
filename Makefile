# Two commands for a new user: `make up` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test check lint typecheck unit integration bench lock clean browser

# The browser tests drive Debian's chromium (Playwright, headless); installed when missing.
CHROMIUM := /usr/bin/chromium

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

env: $(STAMP)

up: $(STAMP)
	$(BIN)/bazar up

browser:
	test -x $(CHROMIUM) || (apt-get update -qq && apt-get install -y -qq chromium)

test: $(STAMP) browser lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/bazar bench

# Regenerate the lock file from pyproject.toml (needs network to PyPI).
lock:
	$(PYTHON) -m venv /tmp/bazar-lock && /tmp/bazar-lock/bin/pip install --quiet pip-tools
	/tmp/bazar-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --extra dev --strip-extras \
		-o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
