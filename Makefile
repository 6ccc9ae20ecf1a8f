# The verbs a newcomer and CI need. Everything runs from a local .venv that these targets create.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
BENCH_STAMP   := $(VENV)/.bench-installed
# TypeScript (pinned in tools/jscheck/package-lock.json) type-checks the dashboard's JavaScript.
JSCHECK       := tools/jscheck
JSCHECK_STAMP := $(JSCHECK)/node_modules/.installed
PYTEST_ARGS ?=
# pytest processes for `make test` (pytest-xdist; each has its own embedded server): one per core.
TEST_WORKERS ?= auto
ARGS ?=

.PHONY: run test stress-test lint fmt clean bench bench-quick vendor lock prometheus

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "livestats needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

## run: embedded server + worker + gateway + a demo run shown live (Ctrl-C stops everything)
run: $(RUNTIME_STAMP)
	$(BIN)/livestats up $(ARGS)

## prometheus: `make run` plus a local Prometheus scraping it, with the alert rules (Debian's `prometheus`)
prometheus: $(RUNTIME_STAMP)
	$(BIN)/livestats up --prometheus

## test: the whole suite against a private server on a free port
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## stress-test: `make test` three times in a row beside two CPU-bound processes, 10 minutes each at most
stress-test: $(DEV_STAMP)
	PYTEST_ARGS='$(PYTEST_ARGS)' tools/stress-test.sh

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(RUNTIME_STAMP)

## bench: the benchmark suite, livestats side by side with the alternatives (~15 min; ARGS=--quick: < 2 min)
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(ARGS)

$(JSCHECK_STAMP): $(JSCHECK)/package.json $(JSCHECK)/package-lock.json
	@command -v npm >/dev/null || { echo "make lint needs node and npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	cd $(JSCHECK) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## lint: ruff, mypy (strict; relaxed on tests), tsc over the dashboard's JavaScript
lint: $(DEV_STAMP) $(JSCHECK_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench
	$(JSCHECK)/node_modules/.bin/tsc -p $(JSCHECK)

## fmt: apply ruff's fixes and formatting
fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## lock: resolve requirements.lock (the image's hash-checked runtime dependencies) from pyproject.toml
## again, keeping the pins it has (ARGS=--upgrade: the newest allowed versions)
lock: $(DEV_STAMP)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet $(ARGS) -o requirements.lock

## vendor: fetch the vendored browser assets (uPlot; Swagger UI and ReDoc for /docs, /redoc) again from npm, verified against each VENDOR.json (needs npm)
vendor:
	$(PYTHON) deploy/vendor_assets.py

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache $(JSCHECK)/node_modules
