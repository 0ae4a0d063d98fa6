# One entry for each habit. The real work is in scripts/ (see `scripts/stack --help`).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python

.DEFAULT_GOAL := help
.PHONY: help venv lock up up-infra down status logs reset test lint fmt bench soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 22

venv: ## create .venv and install what uv.lock pins (again only when uv.lock or pyproject.toml changed)
	@scripts/venv

lock: ## update uv.lock after a change to pyproject.toml (UPGRADE=1: every dependency to its newest allowed version)
	@scripts/venv $(if $(UPGRADE),--upgrade,--lock)

up: ## start Kafka, PostgreSQL, topics, migrations, simulator, callbacks and consumer
	@scripts/stack up

up-infra: ## start only Kafka and PostgreSQL (plus topics and migrations)
	@scripts/stack up --infra

down: ## stop everything `make up` started
	@scripts/stack down

status: ## what runs, where it listens, where it logs
	@scripts/stack status

logs: ## list the logs (scripts/stack logs NAME [-f] shows one)
	@scripts/stack logs

reset: ## stop and delete the local Kafka and PostgreSQL data
	@scripts/stack reset

test: ## the suite against the local stack: all but chaos on parallel workers, then chaos alone (ARGS="-k name": pytest arguments)
	@scripts/test $(ARGS)

lint: venv ## ruff check, ruff format --check, mypy --strict, import-linter (the layers of docs/architecture.md)
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy --strict . && .venv/bin/lint-imports

fmt: venv ## ruff format (rewrites files)
	$(PY) -m ruff format .

bench: venv ## benchmarks -> bench/results/, BENCHMARKS.md (~25 min; ARGS=--quick: ~3 min)
	@scripts/stack up --infra && . .stack/env && $(PY) -m bench $(ARGS)

soak: venv ## the delivery core's deterministic simulation for many seeds (SEEDS=100000, or SEED=n for one)
	@if [[ -n "$${SEED:-}" ]]; then $(PY) -m tests.dst --seed "$$SEED"; else $(PY) -m tests.dst --seeds "$${SEEDS:-100000}"; fi
