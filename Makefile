# The two commands: `make run` and `make test`. Each does all of its own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?= -n 2 --dist loadfile
# Extra arguments for `kilnbase serve`: make run ARGS="--port 8000 --data-dir ./other"
ARGS ?=

.PHONY: run test lint bench clean

# Each step that takes a while says what it does first: on a fresh machine the install takes a minute or more,
# and a silent terminal looks like a hang. pip's own lines show it getting on.
$(BIN)/python:
	@echo "==> Creating a virtual environment in $(VENV) and updating its pip (a few seconds)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> Installing Kilnbase and its dependencies into $(VENV) (this can take a minute the first time)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	@echo "==> Installing Kilnbase with its test tools into $(VENV) (this can take a few minutes the first time)"
	$(BIN)/pip install -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/kilnbase serve $(ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.storage

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
