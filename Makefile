# hotsvc: `make run` starts the service, `make test` runs the whole suite.
#
# Two setups: `setup` is what running the service needs (any user, no root, no apt-get);
# `setup-dev` is everything the tests, linters and client toolchains need (CI, as root).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Extra flags for `hotsvc serve`: make run ARGS='--listen 127.0.0.1:0 --pool-size 1'
ARGS   ?=

# Every Debian package the suite needs, installed by one apt-get step in setup-dev (the
# one place to add one). The Go client's generators (its toolchain and grpc-go sources are
# newer than Debian 12's: build/go-debian, below). systemd: `systemd-analyze verify` of
# deploy/systemd/hotsvc.service. postgresql: a throwaway cluster per test run
# (hotsvc_tools/postgres.py) for the session store's tests and `make fleet`. curl: the HTTP
# face's tests and README recipes. prometheus: its promtool checks and unit-tests
# deploy/prometheus's alert rules (the package's daemon is not started). nginx, haproxy:
# the balancers of deploy/ in front of a fleet (tests/test_fleet.py, `make fleet`).
DEV_APT_PKGS := protoc-gen-go protoc-gen-go-grpc \
                systemd postgresql bubblewrap socat curl prometheus nginx haproxy

# A `claude` the user already has is used first; the pinned one is installed otherwise.
HAVE_CLAUDE := $(shell command -v claude 2>/dev/null)

.PHONY: setup setup-dev dev-apt run fleet test proto docs lint bench soak pressure clean

# Idempotent; each step re-runs only when its inputs changed.
setup: $(VENV)/.runtime $(if $(HAVE_CLAUDE),,node_modules/.package-lock.json)

# The suite also runs an older Claude Code (users run whatever claude is on their PATH).
OLD_CLAUDE := tests/claude-versions/2.1.197

setup-dev: setup dev-apt $(VENV)/.dev node_modules/.package-lock.json \
           clients/typescript/node_modules/.package-lock.json build/go-debian/fetched \
           $(OLD_CLAUDE)/node_modules/.package-lock.json

# The service and its runtime dependencies only (pyproject's `dependencies`), editable.
$(VENV)/.runtime: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: hotsvc needs Python 3.11 or newer as $(PYTHON) (Debian/Ubuntu:" \
	    "sudo apt-get install python3; or make PYTHON=/path/to/python3.11)" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "make: cannot create $(VENV); on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; \
	  rm -rf $(VENV); exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -qq -e .
	touch $@

# Dev extras, the client helper, and tools/ (the dev-only hotsvc-tools: hotsvc-emulator,
# bench, soak, codegen), in one command so tools' `hotsvc` dependency is this checkout.
$(VENV)/.dev: $(VENV)/.runtime pyproject.toml clients/python/pyproject.toml tools/pyproject.toml
	$(PY) -m pip install -qq -e clients/python -e '.[dev]' -e tools
	touch $@

# The real Claude Code CLI, pinned in package-lock.json (node is needed to install it only).
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { \
	  echo "make: npm not found; it installs the pinned Claude Code CLI. Install Node.js" \
	    "and npm (Debian/Ubuntu: sudo apt-get install nodejs npm; or https://nodejs.org)," \
	    "or put a \`claude\` on PATH" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

clients/typescript/node_modules/.package-lock.json: clients/typescript/package-lock.json
	npm ci --prefix clients/typescript --no-audit --no-fund
	touch $@

$(OLD_CLAUDE)/node_modules/.package-lock.json: $(OLD_CLAUDE)/package-lock.json
	npm ci --prefix $(OLD_CLAUDE) --no-audit --no-fund
	touch $@

# The only apt-get in this file; needs root (CI runs as root). A no-op when all are there.
dev-apt:
	@dpkg -s $(DEV_APT_PKGS) >/dev/null 2>&1 || { apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEV_APT_PKGS); }

# The Go client's offline build: Go 1.23 (bookworm-backports) and grpc-go 1.64 sources
# (trixie) from Debian's archive, unpacked under build/ by apt-get download; the system's
# apt sources stay as they are (tools/hotsvc_tools/godeps.py).
build/go-debian/fetched: tools/hotsvc_tools/godeps.py | $(VENV)/.dev
	$(PY) -m hotsvc_tools.godeps fetch

# The pinned CLI comes after PATH: a `claude` the user has is used first. Prometheus
# metrics on 127.0.0.1:9464/metrics; ARGS may move them (--metrics-listen).
run: setup
	PATH="$$PATH:$(CURDIR)/node_modules/.bin" $(BIN)/hotsvc serve --local-model auto \
	  --metrics-listen 127.0.0.1:9464 $(ARGS)

# A fleet on this machine: a throwaway PostgreSQL, three replicas, nginx on 127.0.0.1:50051
# (deploy/nginx/hotsvc.conf); Ctrl-C stops it all. make fleet ARGS='-- --pool-size 1'
fleet: setup-dev
	$(PY) -m hotsvc_tools.fleet $(ARGS)

test: setup-dev
	$(BIN)/pytest -q

# Regenerate every language's committed stubs and stamp VERSION into every package;
# .ci/run fails when that changes a committed file.
proto: setup-dev
	$(PY) -m hotsvc_tools.codegen

LINTED := hotsvc tools tests clients/python/src/hotsession/client.py \
          clients/python/src/hotsession/errors.py clients/python/src/hotsession/session.py \
          clients/python/src/hotsession/turns.py

# README's configuration table, from hotsvc/settings.py (tests/test_settings.py checks it).
docs: setup-dev
	$(PY) -m hotsvc_tools.readme

lint: setup-dev
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy $(LINTED)

bench: setup-dev
	$(PY) -m hotsvc_tools.bench

# The pressure suite at full size (the suite runs it small); prints the figures for
# docs/benchmarks.md.
pressure: setup-dev
	HOTSVC_PRESSURE=full $(BIN)/pytest -q -s tests/test_pressure.py

# Many sessions and turns with injected faults; prints leaks, lost results, memory.
soak: setup-dev
	$(PY) -m hotsvc_tools.soak

clean:
	rm -rf $(VENV) node_modules clients/typescript/node_modules clients/typescript/dist build dist \
	  *.egg-info tools/build tools/*.egg-info
