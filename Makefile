# `make test` and `make demo` are the two commands a newcomer types; both set everything up themselves.
# Both install into .venv: `make demo` the project alone, `make test` the project and its test tools. pip runs again
# only when pyproject.toml (or this file) changed since the last install: the stamp files record that install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install redis-server test demo lint bench

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

lint: install
	$(BIN)/ruff check arq supervisor tests demo
	$(BIN)/ruff format --check arq supervisor tests demo
	@mkdir -p .cache/typecheck && ln -sfn ../../supervisor .cache/typecheck/arq_supervise
	$(BIN)/mypy

demo: $(VENV)/.installed-demo redis-server
	$(BIN)/python -m demo

bench: install
	$(BIN)/python -m tests.bench.run
