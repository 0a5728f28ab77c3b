# The README's commands. Each target does its own set-up (`setup` is idempotent).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

.PHONY: setup report test test-fast bench bench-recovery lint lab pretrain clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)  # a venv cut short has python but no pip
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "setup: $(VENV) ready"

report: setup
	$(BIN)/workbench report --config $(CONFIG)

# The unit/integration suite and the committed notebooks with their (small) default parameters, on
# TEST_WORKERS processes (pytest-xdist; one test file per work unit, the notebooks in order on one
# worker; shared fixtures are built once per run, tests/conftest.py); the 25 slowest tests and
# fixtures are listed at the end (exports dominate: 20 s or more each, whatever the image size).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest tests --nbval-lax notebooks -n $(TEST_WORKERS) --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup bench-recovery
	$(BIN)/python benchmarks/targets.py
	$(BIN)/python benchmarks/run.py

# int8 recovery recipes on ST's SSD, then on yolo11n-pose (the targets; needs ../shared weights and
# data; skips without them)
bench-recovery: setup
	$(BIN)/python benchmarks/recovery_ssd.py
	$(BIN)/python benchmarks/recovery.py

# Style, then the layers (import-linter contracts in pyproject.toml), then sizes and file-level import
# cycles (tools/check_sizes.py).
lint: setup
	$(BIN)/ruff check workbench tests benchmarks tools
	$(BIN)/ruff format --check workbench tests benchmarks tools
	$(BIN)/lint-imports
	$(BIN)/python tools/check_sizes.py workbench

# JupyterLab on the notebooks with this environment's kernel (the one `make report` executes with).
lab: setup
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "workbench (.venv)" >/dev/null
	cd notebooks && ../$(BIN)/jupyter lab --notebook-dir=. $(LAB_ARGS)

pretrain: setup
	$(BIN)/workbench train --config configs/pretrain.yaml

clean:
	rm -rf .cache .pytest_cache build *.egg-info
