# freshrec — every target a person or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE   ?= $(or $(FRESHREC_CACHE_DIR),$(HOME)/.cache/freshrec)
VENV    ?= $(CACHE)/venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
SERVERS := bash deploy/local/servers.sh
# Which local servers `make up` / `down` / `status` act on: single (one Redis, one Kafka node)
# or cluster (a Redis Cluster and a 3-node Kafka; docs/scaling.md). `make test` always
# manages the single ones; its cluster tests start (or find) the cluster themselves.
export FRESHREC_TOPOLOGY ?= single
DEPS_STAMP := $(VENV)/.deps-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export PYTHONPATH := $(CURDIR)/libs:$(CURDIR)
export MYPY_CACHE_DIR := $(CACHE)/mypy
export RUFF_CACHE_DIR := $(CACHE)/ruff
export PIP_CACHE_DIR  ?= $(HOME)/.cache/pip

.PHONY: help install up down status run test test-unit lint format chart bench soak eval clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  knobs: FRESHREC_TOPOLOGY=single|cluster picks the servers of up/down/status (README, docs/scaling.md)"

$(DEPS_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,eval]'
	@rm -f $(VENV)/.deps-* && touch $@

install: $(DEPS_STAMP) ## Install freshrec, its pinned deps (venv outside the clone), Debian packages, helm + chart checker
	@bash deploy/local/system-deps.sh
	@bash deploy/helm/tools.sh
	@$(PY) -m pip install -q --no-deps -e . >/dev/null
	@$(SERVERS) fetch

up: install ## Start Redis and Kafka on 127.0.0.1 (FRESHREC_TOPOLOGY=single|cluster)
	@$(SERVERS) up

down: ## Stop the services and servers `make up`/`make run` started (FRESHREC_TOPOLOGY)
	@-$(VENV)/bin/freshrec stack down 2>/dev/null
	@$(SERVERS) down

status: ## Show which servers answer, node by node (FRESHREC_TOPOLOGY)
	@$(SERVERS) status

run: up ## Start the servers and services, replay MovieLens live, print recommendations
	@$(VENV)/bin/freshrec run

lint: install ## ruff check, ruff format --check, mypy --strict on libs/ and services/
	$(VENV)/bin/ruff check libs services tests
	$(VENV)/bin/ruff format --check libs services tests
	$(VENV)/bin/mypy libs/freshrec services

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix libs services tests
	$(VENV)/bin/ruff format libs services tests

chart: ## Render the Helm chart (default and production values) and check every object strictly
	@bash deploy/helm/tools.sh
	@bash deploy/helm/tools.sh check

test-unit: install ## Unit tests only (no servers)
	$(PY) -m pytest tests/unit -q

test: install ## Lint, then unit + integration + e2e tests against real Redis and Kafka (single and cluster)
	@set -u; export FRESHREC_TOPOLOGY=single; was_up=0; $(SERVERS) status >/dev/null 2>&1 && was_up=1; \
	status=0; \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ $$status = 0 ]; then $(SERVERS) up || status=$$?; fi; \
	if [ $$status = 0 ]; then $(PY) -m pytest tests -q --durations=25 || status=$$?; fi; \
	if [ $$was_up = 0 ]; then $(SERVERS) down || true; fi; \
	exit $$status

bench: up ## Benchmarks: print figures and write results/bench/*.json
	$(VENV)/bin/freshrec bench all --out results/bench

soak: install ## 10 minutes of load with a random fault every 30-60 s (results/bench/soak.json)
	$(VENV)/bin/freshrec bench soak --minutes 10 --out results/bench

eval: install ## Prequential MovieLens evaluation into results/eval/
	$(VENV)/bin/freshrec eval --out results/eval

clean: ## Remove build outputs in the clone (not the caches)
	rm -rf results .pytest_cache build *.egg-info libs/*.egg-info
