# The two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
NPM ?= npm
# Go and npm keep their downloads and builds in the repository's cache (git-ignored, CI can keep it).
CACHE := $(CURDIR)/.cache
export GOMODCACHE := $(CACHE)/go/mod
export GOCACHE := $(CACHE)/go/build
export GOFLAGS := -modcacherw -buildvcs=false
export npm_config_cache := $(CACHE)/npm
# The pinned protoc plugins of buf.gen.yaml (protoc-gen-es is pinned in clients/ts/package-lock.json).
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GO_PLUGINS := .cache/bin/protoc-gen-go .cache/bin/protoc-gen-go-grpc
TS_STAMP := clients/ts/node_modules/.installed
CHAOS_ARGS ?=

.PHONY: help venv protos run test test-fast check lint typecheck contracts protos-check wheel-check bench chaos clean devstack-up devstack-down sdk-tools sdk-deps deploy-tools deploy-check

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with its dev extras

.cache/bin/protoc-gen-go: Makefile
	GOBIN=$(CACHE)/bin $(GO) install $(PROTOC_GEN_GO)
	@touch $@

.cache/bin/protoc-gen-go-grpc: Makefile
	GOBIN=$(CACHE)/bin $(GO) install $(PROTOC_GEN_GO_GRPC)
	@touch $@

$(TS_STAMP): clients/ts/package.json clients/ts/package-lock.json
	cd clients/ts && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $(TS_STAMP)

sdk-tools: $(GO_PLUGINS) $(TS_STAMP) ## Install the pinned protoc plugins (Go into .cache/bin) and the TypeScript SDK's packages

sdk-deps: sdk-tools ## Also fetch the Go SDK's modules (what the SDK tests need)
	cd clients/go && $(GO) mod download

deploy-tools: ## Install promtool (Debian's prometheus package) if it is missing
	scripts/install_promtool.sh

deploy-check: $(STAMP) deploy-tools ## Alert rules and their unit tests, the dashboard, the Kubernetes manifests (offline)
	$(PY) -m pytest tests/unit/test_deploy.py $(PYTEST_ARGS)

protos: $(STAMP) sdk-tools ## Regenerate generated/, clients/go/gen/ and clients/ts/src/gen/ from protos/
	$(PY) scripts/gen_protos.py

run: $(STAMP) ## Start both servers (embedded backends unless REDIS_URL/DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS are set)
	$(PY) -m launcher

test: $(STAMP) sdk-deps deploy-tools ## Install everything, start the throwaway backends, run every test tier and the short chaos run, stop the backends
	@set -o pipefail; scripts/devstack up >&2 || exit 1; \
	source "$${DEVSTACK_STATE_DIR:-.devstack}/env"; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; fi; \
	$(PY) -m chaos --short; chaos=$$?; \
	scripts/devstack down >&2; \
	if [ $$rc -eq 0 ]; then rc=$$chaos; fi; exit $$rc

test-fast: $(STAMP) sdk-tools deploy-tools ## Unit and service tests only (no backends)
	$(PY) -m pytest tests/unit tests/service $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

contracts: $(STAMP) ## buf lint, buf format and buf breaking against the last released contract
	scripts/check_contracts.sh

protos-check: $(STAMP) sdk-tools
	$(PY) scripts/gen_protos.py --check

wheel-check: $(STAMP) ## Build the wheel, install it in a clean venv, import the generated stubs from it
	scripts/check_wheel.sh

check: lint typecheck contracts protos-check wheel-check test ## Everything CI cares about, plus lint and types

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
