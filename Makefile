# tokentree: `make demo` runs the main job on the bundled demo model; `make test` runs every test.
# Both set up a virtualenv first (.venv), taking the CPU build of torch that our machines carry.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= Once upon a time

.PHONY: setup demo test test-fast services format lint typecheck check bench docs-images clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/tokentree tree "$(PROMPT)" -o tree.json

# Everything the suite needs: Debian's chromium for the browser tests, Postgres and Redis running.
services:
	scripts/ensure_test_services.sh

test: setup services lint
	$(BIN)/pytest

# The README's screenshots, taken from the real service by the browser tests.
docs-images: setup services
	TOKENTREE_DOCS_IMAGES=1 $(BIN)/pytest tests/browser/test_real_service.py

test-fast: setup
	$(BIN)/pytest -m "not services and not browser and not slow"

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

bench: setup
	$(BIN)/python bench/engine_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
