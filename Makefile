# Consent Broker — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export BROKER_INSTANCE_PATH ?= instance

.DEFAULT_GOAL := help
.PHONY: help install run demo demo-reset test test-unit test-integration test-e2e lint format bench bench-policy soak clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the broker with its test tools

run: $(STAMP) ## create ./instance with the demo data and serve it on http://127.0.0.1:8000
	BROKER_MODE=demo $(BIN)/broker demo --host 127.0.0.1 --port 8000

demo-reset: ## delete the demo instance (database, keys, partner keys)
	rm -rf $(BROKER_INSTANCE_PATH)

test: $(STAMP) ## run the whole test suite (PostgreSQL too when BROKER_TEST_POSTGRES_URL is set)
	$(BIN)/pytest -q

test-unit: $(STAMP) ## unit tests only
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP) ## integration tests (SQLite, and PostgreSQL when configured)
	$(BIN)/pytest -q tests/integration

test-e2e: $(STAMP) ## end-to-end tests against a served broker
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP) ## ruff, and mypy on the pure packages
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP) ## format the code with ruff
	$(BIN)/ruff format .

bench: $(STAMP) ## disclosures per second over HTTP next to /healthz (gunicorn, 2 workers, loopback)
	$(BIN)/python -m bench.http_disclosure

bench-policy: $(STAMP) ## decide() next to cedarpy: p50/p99 and decisions/s with 1, 100 and 10,000 consents
	$(BIN)/python -m bench.policy

soak: $(STAMP) ## decide() against its Cedar oracle on 200,000 generated requests (BROKER_SOAK_REQUESTS, _SEED)
	@seed=$${BROKER_SOAK_SEED:-$$(date +%s)}; echo "BROKER_SOAK_SEED=$$seed"; \
	BROKER_SOAK_REQUESTS=$${BROKER_SOAK_REQUESTS:-200000} BROKER_SOAK_SEED=$$seed \
	$(BIN)/pytest -q tests/unit/test_policy_cedar.py

clean: ## remove caches (keeps .venv and instance/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis htmlcov .coverage
