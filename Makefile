# Consent Broker — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export BROKER_INSTANCE_PATH ?= instance
# The client portal's message catalogues (fi, sv, en): the .po files are the source, the .mo files are compiled
# from them (and committed, so that an installed package needs no build step).
LOCALES := broker/translations
PO     := $(wildcard $(LOCALES)/*/LC_MESSAGES/messages.po)
MO     := $(PO:.po=.mo)

.DEFAULT_GOAL := help
.PHONY: help install run demo demo-reset test test-unit test-integration test-e2e lint format bench bench-policy soak clean translations

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) $(MO) ## create .venv and install the broker with its test tools

run: $(STAMP) $(MO) ## create ./instance with the demo data and serve it on http://127.0.0.1:8000
	BROKER_MODE=demo $(BIN)/broker demo --host 127.0.0.1 --port 8000

demo-reset: ## delete the demo instance (database, keys, partner keys)
	rm -rf $(BROKER_INSTANCE_PATH)

test: $(STAMP) $(MO) ## run the whole test suite (PostgreSQL too when BROKER_TEST_POSTGRES_URL is set)
	$(BIN)/pytest -q

test-unit: $(STAMP) ## unit tests only
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP) $(MO) ## integration tests (SQLite, and PostgreSQL when configured)
	$(BIN)/pytest -q tests/integration

test-e2e: $(STAMP) $(MO) ## end-to-end tests against a served broker
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP) ## ruff, and mypy on the pure packages
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP) ## format the code with ruff
	$(BIN)/ruff format .

bench: $(STAMP) ## disclosures per second over HTTP next to /healthz (gunicorn, 2 workers, loopback)
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq wrk; } || echo "could not install wrk"
	$(BIN)/python -m bench.http_disclosure

bench-policy: $(STAMP) ## decide() next to cedarpy: p50/p99 and decisions/s with 1, 100 and 10,000 consents
	$(BIN)/python -m bench.policy

.PHONY: bench-audit
bench-audit: $(STAMP) ## audit log: offline verification of 1,000,000 entries, proofs at 1,000,000, sequencer rate
	$(BIN)/python -m bench.audit_offline
	$(BIN)/python -m bench.audit_db

.PHONY: bench-portal
bench-portal: $(STAMP) $(MO) ## server time of every portal page, fi/sv/en, 1,000 disclosures (BROKER_BENCH_POSTGRES_URL)
	$(BIN)/python -m bench.portal

soak: $(STAMP) ## decide() against its Cedar oracle on 200,000 generated requests (BROKER_SOAK_REQUESTS, _SEED)
	@seed=$${BROKER_SOAK_SEED:-$$(date +%s)}; echo "BROKER_SOAK_SEED=$$seed"; \
	BROKER_SOAK_REQUESTS=$${BROKER_SOAK_REQUESTS:-200000} BROKER_SOAK_SEED=$$seed \
	$(BIN)/pytest -q tests/unit/test_policy_cedar.py

translations: $(STAMP) ## extract the portal's texts, update the fi/sv/en catalogues (.po) and compile them (.mo)
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext --sort-by-file --add-location file --width 120 \
		--project "Consent Broker" --copyright-holder "Consent Broker" -o $(LOCALES)/messages.pot .
	for lang in fi sv en; do \
		[ -f $(LOCALES)/$$lang/LC_MESSAGES/messages.po ] || \
		$(BIN)/pybabel -q init -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$lang --width 120; \
	done
	$(BIN)/pybabel -q update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-fuzzy-matching --ignore-obsolete \
		--width 120 --ignore-pot-creation-date
	$(BIN)/python -m broker.http.portal.i18n fill-source $(LOCALES)/en/LC_MESSAGES/messages.po
	$(BIN)/pybabel compile --statistics -d $(LOCALES)
	rm -f $(LOCALES)/messages.pot

%.mo: %.po | $(STAMP)
	$(BIN)/pybabel -q compile -i $< -o $@

clean: ## remove caches (keeps .venv and instance/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis htmlcov .coverage
