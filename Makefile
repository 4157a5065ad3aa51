# The two commands of a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= ./data

.PHONY: run test lint chromium bench soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

run: $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	$(BIN)/smarty-emulator serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: $(BIN)/python chromium
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Benchmarks (about 3 minutes): writes bench/RESULTS.md.
bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	BENCH_VIA_MAKE=1 $(BIN)/python bench/run.py

# The soak (10 minutes, 8 clients, two workers): writes its figures into bench/RESULTS.md (its own section).
soak: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	SMARTY_SOAK_RESULTS=bench/RESULTS.md $(BIN)/python -m pytest -m soak tests/ops/test_soak.py -s -q

lint: $(BIN)/python
	$(BIN)/ruff check .

# Debian's chromium for the demo page's browser tests, installed where missing if this is root with apt-get.
# Otherwise those tests skip (and fail in CI, where CI=true). Playwright never downloads a browser of its own.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the browser tests will skip (and fail in CI)"; \
	else \
		echo "skipping the chromium install (needs root and apt-get): the browser tests will skip (and fail in CI)"; \
	fi
