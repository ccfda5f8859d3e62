# `make test` and `make demo` are the two commands a newcomer types; both set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install redis-server test demo lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python redis-server
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'

# the tests start their own redis-server processes; they only need the binary
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo 'installing redis-server (Debian package)'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check arq supervisor tests
	$(BIN)/ruff format --check arq supervisor tests
	@mkdir -p .cache/typecheck && ln -sfn ../../supervisor .cache/typecheck/arq_supervise
	$(BIN)/mypy

demo: install
	$(BIN)/python -m demo

bench: install
	$(BIN)/python -m tests.bench.run
