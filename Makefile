# Two commands: `make run` (both services on a SQLite file) and `make test` (the whole suite).
SHELL  := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
export OCR_DATABASE_URL ?= sqlite:///./data/ocr.db

.PHONY: run test install install-dev migrate lint typecheck clean lock

# The lock: every package, transitive ones too, pinned with hashes, compiled by `make lock`
# from pyproject.toml's dependencies and extras (the ranges people edit). One lock per image
# and one per environment here: LOCK_INPUT_<name> is what lock/<name>.txt is compiled from.
# The API image leaves Tesseract out, the OCR image the web stack; runtime (what `make install`
# installs) is everything, the client library too. mypy39 is a tool of its own (see typecheck).
LOCKS             := dev runtime api ocr mypy39
LOCK_INPUT_dev    := pyproject.toml --extra dev
LOCK_INPUT_runtime:= pyproject.toml --extra api --extra ocr --extra client --extra build
LOCK_INPUT_api    := pyproject.toml --extra api --extra build
LOCK_INPUT_ocr    := pyproject.toml --extra ocr --extra build
LOCK_INPUT_mypy39 := requirement-mypy39.txt
# --universal: one lock for every platform (markers where they differ); --native-tls: the
# system's CA store, as pip uses it. A lock rewritten keeps its other pins (uv prefers them).
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
              --native-tls --custom-compile-command "make lock"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Hashes on every line put pip in hash-checking mode; --no-deps: the lock is the whole set.
# The client (client/, a distribution of its own) is installed beside the services, after them:
# an older install of this project that still held ocr-client removes its copy when replaced.
$(VENV)/.installed: $(BIN)/python lock/runtime.txt pyproject.toml client/pyproject.toml
	$(BIN)/pip install --quiet --require-hashes --no-deps -r lock/runtime.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ./client
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed lock/dev.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r lock/dev.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/ocr-migrate

# Both services in the foreground; Ctrl-C stops both (each finishes its running work first).
# set -m puts each service in a process group of its own: the terminal's Ctrl-C reaches only
# this shell, which sends each service one SIGTERM. (Not setsid: with the kernel's autogroup
# scheduling a session of its own would cap the OCR engines at one session's CPU share.)
run: migrate
	@echo "API server on http://$${OCR_API_BIND:-127.0.0.1:5000}, OCR server on $${OCR_SERVER_BIND:-127.0.0.1:5001} (Ctrl-C stops both)"
	@set -m; stopped=0; stop() { [ $$stopped = 1 ] && return; stopped=1; kill -TERM $$api $$ocr 2>/dev/null; }; \
	trap stop INT TERM; \
	$(BIN)/ocr-server & ocr=$$!; \
	$(BIN)/ocr-api & api=$$!; \
	wait -n; stop; wait

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy 2 checks code for Python 3.10 and newer only: the client, for 3.9 and newer, is checked
# by mypy 1.20 (lock/mypy39.txt) in a venv of its own, with .venv's packages (its dependencies'
# types), as client/pyproject.toml says.
MYPY39 := $(VENV)/mypy39/bin/mypy
$(MYPY39): $(BIN)/python lock/mypy39.txt
	$(PYTHON) -m venv --without-pip $(VENV)/mypy39
	$(BIN)/pip --python $(VENV)/mypy39/bin/python install --quiet --require-hashes --no-deps \
	    -r lock/mypy39.txt
	@touch $@

typecheck: install-dev $(MYPY39)
	$(BIN)/mypy
	cd client && $(abspath $(MYPY39)) --python-executable $(abspath $(BIN)/python)

# The whole suite: lint, types, unit, integration (real database, real Tesseract), end to end.
test: install-dev lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Needs the package index (the registry pip uses). The dev lock first: the others then take
# its pins, so that every lock names the same version of a package.
lock: $(addprefix lock-,$(LOCKS))

# uv alone, at the version the dev extra pins: a lock can be made before anything else is
# installed (a new requirement has no lock line yet).
$(BIN)/uv: | $(BIN)/python
	$(BIN)/pip install --quiet "$$(grep -oE '"uv==[^"]+' pyproject.toml | tr -d '"')"

lock-dev: $(BIN)/uv
	$(UV_COMPILE) -o lock/dev.txt $(LOCK_INPUT_dev)

# Not constrained by the dev lock: it pins another mypy.
lock-mypy39: $(BIN)/uv
	$(UV_COMPILE) -o lock/mypy39.txt $(LOCK_INPUT_mypy39)

lock-%: lock-dev
	$(UV_COMPILE) -o lock/$*.txt $(LOCK_INPUT_$*) -c lock/dev.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis client/.mypy_cache client/.ruff_cache
