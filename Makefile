# hotsvc: `make run` starts the service, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Debian packages for the Go client (toolchain, generators, grpc-go sources). The 1-5
# protobuf package must be named: grpc-go alone pulls 1.3, which can't marshal our stubs.
GO_PKGS := golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev \
           golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev

.PHONY: setup run test proto docs lint bench soak clean

# Idempotent; each step re-runs only when its inputs changed.
setup: $(VENV)/.installed node_modules/.package-lock.json \
       clients/typescript/node_modules/.package-lock.json clients/go/vendor/modules.txt

# tools/ is the dev-only hotsvc-tools (hotsvc-emulator, bench, soak, codegen), installed
# in the same command so its `hotsvc` dependency resolves to this checkout.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml tools/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e clients/python -e '.[dev]' -e tools
	touch $@

# The real Claude Code CLI, pinned in package-lock.json, when none is on PATH.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

clients/typescript/node_modules/.package-lock.json: clients/typescript/package-lock.json
	npm ci --prefix clients/typescript --no-audit --no-fund
	touch $@

clients/go/vendor/modules.txt: clients/go/go.mod $(wildcard clients/go/hotsession/v1/*.go)
	dpkg -s $(GO_PKGS) >/dev/null 2>&1 || { apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y $(GO_PKGS); }
	clients/go/debian-vendor.sh

# The pinned CLI comes after PATH: a `claude` the user has is used first.
run: setup
	PATH="$$PATH:$(CURDIR)/node_modules/.bin" $(BIN)/hotsvc serve --local-model auto

test: setup
	$(BIN)/pytest -q

# Regenerate every language's committed stubs; tests/test_clients.py fails when they drift.
proto: setup
	$(PY) -m hotsvc_tools.codegen

LINTED := hotsvc tools tests clients/python/src/hotsession/client.py

# README's configuration table, from hotsvc/settings.py (tests/test_settings.py checks it).
docs: setup
	$(PY) -m hotsvc_tools.readme

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy $(LINTED)

bench: setup
	$(PY) -m hotsvc_tools.bench

# Many sessions and turns with injected faults; prints leaks, lost results, memory.
soak: setup
	$(PY) -m hotsvc_tools.soak

clean:
	rm -rf $(VENV) node_modules clients/typescript/node_modules clients/go/vendor build *.egg-info \
	  tools/build tools/*.egg-info
