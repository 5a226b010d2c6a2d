# hotsvc: `make run` starts the service, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PROTO  := protos/hotsession/v1/hotsession.proto
PY_OUT := clients/python/src

.PHONY: setup run test proto lint bench clean

setup: $(STAMP)

# Re-install only when the packaging changes; the installs are editable.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e clients/python -e '.[dev]'
	touch $@

run: setup
	$(BIN)/hotsvc serve

test: setup
	$(BIN)/pytest -q

# Regenerate the committed stubs; tests/test_generated.py fails when they drift.
proto: setup
	$(PY) -m hotsvc.codegen $(PY_OUT)

lint: setup
	$(BIN)/ruff check hotsvc tests
	$(BIN)/mypy hotsvc tests

bench: setup
	$(PY) -m hotsvc.bench

clean:
	rm -rf $(VENV) build *.egg-info
