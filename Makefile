# Two commands: `make run` (both services on a SQLite file) and `make test` (the whole suite).
SHELL  := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
export OCR_DATABASE_URL ?= sqlite:///./data/ocr.db

.PHONY: run test install install-dev migrate lint typecheck check clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirement.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirement.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirement-dev.txt
	$(BIN)/pip install --quiet -r requirement-dev.txt
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

typecheck: install-dev
	$(BIN)/mypy

# The whole suite: lint, types, unit, integration (real database, real Tesseract), end to end.
test: install-dev lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
