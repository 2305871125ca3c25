# The two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CHAOS_ARGS ?=

.PHONY: help venv protos run test test-fast check lint typecheck buflint protos-check wheel-check bench chaos clean devstack-up devstack-down

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with its dev extras

protos: $(STAMP) ## Regenerate generated/ from protos/
	$(PY) scripts/gen_protos.py

run: $(STAMP) ## Start both servers (embedded backends unless REDIS_URL/DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS are set)
	$(PY) -m launcher

test: $(STAMP) ## Install everything, start the throwaway backends, run every test tier and the short chaos run, stop the backends
	@set -o pipefail; scripts/devstack up >&2 || exit 1; \
	source "$${DEVSTACK_STATE_DIR:-.devstack}/env"; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; fi; \
	$(PY) -m chaos --short; chaos=$$?; \
	scripts/devstack down >&2; \
	if [ $$rc -eq 0 ]; then rc=$$chaos; fi; exit $$rc

test-fast: $(STAMP) ## Unit and service tests only (no backends)
	$(PY) -m pytest tests/unit tests/service $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

buflint: $(STAMP)
	$(VENV)/bin/buf lint

protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

wheel-check: $(STAMP) ## Build the wheel, install it in a clean venv, import the generated stubs from it
	scripts/check_wheel.sh

check: lint typecheck buflint protos-check wheel-check test ## Everything CI cares about, plus lint and types

bench: $(STAMP) ## Run every benchmark and refresh docs/benchmarks.md
	@set -o pipefail; scripts/devstack up >&2 || exit 1; source "$${DEVSTACK_STATE_DIR:-.devstack}/env"; \
	$(PY) scripts/bench_report.py $(BENCH_ARGS); rc=$$?; scripts/devstack down >&2; exit $$rc

chaos: $(STAMP) ## Fault scenarios on the throwaway backends, checked from PostgreSQL, Redis and Kafka (CHAOS_ARGS=--short: the CI form)
	@set -o pipefail; scripts/devstack up >&2 || exit 1; source "$${DEVSTACK_STATE_DIR:-.devstack}/env"; \
	$(PY) -m chaos $(CHAOS_ARGS); rc=$$?; scripts/devstack down >&2; exit $$rc

devstack-up: ## Start throwaway Redis, PostgreSQL and Kafka (prints the env to source)
	scripts/devstack up

devstack-down: ## Stop them
	scripts/devstack down

clean: ## Remove build artefacts (keeps .venv and caches)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
