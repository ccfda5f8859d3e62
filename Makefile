# `make test` and `make demo` are the two commands a newcomer types; both set everything up themselves.
# Both install into .venv: `make demo` the project alone, `make test` the project and its test tools. pip runs again
# only when pyproject.toml (or this file) changed since the last install: the stamp files record that install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install redis-server test test-py313 demo lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e .
	@touch $@

# the test extra is a superset of what the demo needs, so it stands for both installs
$(VENV)/.installed-test: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-test

# the tests and the demo start their own redis-server processes; they only need the binary ($REDIS_URL: the demo
# uses that Redis instead)
redis-server:
	@[ -n "$$REDIS_URL" ] || command -v redis-server >/dev/null 2>&1 || { \
		echo 'installing redis-server (Debian package)'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# tests.support.decoys puts decoy `arq` and `arq-supervise` first on PATH: a test that runs one of ours by bare name
# instead of this environment's fails the run
test: install redis-server
	$(BIN)/python -m pytest -q -p no:cacheprovider -p tests.support.decoys

# CI's second step: the worker and integration suites again on Python 3.13, in a venv of their own under .cache/
# (arq itself breaks on 3.14's asyncio, arq #512; we support 3.11-3.13). No 3.13 on the machine: a skip line, exit 0.
PY313 ?= $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
VENV313 := .cache/venv-py313

test-py313: redis-server
	@if [ -z "$(PY313)" ] || ! "$(PY313)" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then \
		echo 'test-py313: SKIPPED, no Python 3.13 interpreter on this machine'; exit 0; fi; \
	set -e; \
	if [ ! -x $(VENV313)/bin/python ] || [ pyproject.toml -nt $(VENV313)/.installed ]; then \
		"$(PY313)" -m venv $(VENV313); \
		$(VENV313)/bin/pip install -q --disable-pip-version-check -e '.[test]'; \
		touch $(VENV313)/.installed; fi; \
	$(VENV313)/bin/python -VV; \
	$(VENV313)/bin/python -m pytest -q -p no:cacheprovider -p tests.support.decoys tests/worker tests/integration

lint: install
	$(BIN)/ruff check arq supervisor tests demo
	$(BIN)/ruff format --check arq supervisor tests demo
	@mkdir -p .cache/typecheck && ln -sfn ../../supervisor .cache/typecheck/arq_supervise
	$(BIN)/mypy

demo: $(VENV)/.installed-demo redis-server
	$(BIN)/python -m demo

bench: install
	$(BIN)/python -m tests.bench.run
