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

# bandit scans the shipped packages ([tool.bandit] in pyproject.toml: tests/ and bench/ are excluded, B101 skipped).
BANDIT_PATHS := broker policies schemas audit

# pip-audit's default vulnerability service is PyPI's JSON API, asked about one release at a time. A mirror that
# serves the package index but not that API makes pip-audit skip every package and still print "No known
# vulnerabilities found": hence this probe (it asks about the installed pip) and --strict (a package that could not
# be checked fails the audit).
define PIP_AUDIT_PROBE
import json, sys, urllib.request
from importlib.metadata import version
url = f"https://pypi.org/pypi/pip/{version('pip')}/json"
try:
    answer = json.load(urllib.request.urlopen(url, timeout=20))
except Exception as error:
    sys.exit(f"pip-audit: {url}: {error}")
if "vulnerabilities" not in answer:
    sys.exit(f"pip-audit: {url}: the answer has no vulnerabilities")
endef
export PIP_AUDIT_PROBE

# pip-audit's JSON report: every known vulnerability is listed; the audit fails on those a newer release fixes.
define PIP_AUDIT_REPORT
import json, sys
report = json.load(sys.stdin)
found = [(d["name"], d["version"], v) for d in report["dependencies"] for v in d.get("vulns", [])]
for name, installed, vuln in found:
    fix = "fixed in " + ", ".join(vuln["fix_versions"]) if vuln["fix_versions"] else "no fix released"
    print(f"  {name} {installed}: {vuln['id']} ({fix})")
fixable = sum(1 for *_, vuln in found if vuln["fix_versions"])
print(f"pip-audit: {len(report['dependencies'])} packages, {len(found)} known vulnerabilities, {fixable} with a fix")
sys.exit(1 if fixable else 0)
endef
export PIP_AUDIT_REPORT

lint: $(STAMP) ## ruff, mypy (pure packages), bandit, pip-audit (BROKER_LINT_OFFLINE=1: skip it offline)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@echo "bandit: every finding, any severity (informational):"
	@$(BIN)/bandit -q -c pyproject.toml -r $(BANDIT_PATHS) --exit-zero -f custom \
		--msg-template '  {relpath}:{line}: {test_id} [{severity}/{confidence}] {msg}'
	$(BIN)/bandit -q -c pyproject.toml -r $(BANDIT_PATHS) --severity-level high
	@echo "bandit: no high-severity findings"
	@if $(BIN)/python -c "$$PIP_AUDIT_PROBE"; then \
		out=$$(mktemp); \
		echo "$(BIN)/pip-audit --strict --skip-editable"; \
		$(BIN)/pip-audit --strict --skip-editable --progress-spinner off --format json --output $$out \
			|| [ -s $$out ] || { rm -f $$out; exit 1; }; \
		$(BIN)/python -c "$$PIP_AUDIT_REPORT" < $$out; status=$$?; rm -f $$out; exit $$status; \
	elif [ "$$BROKER_LINT_OFFLINE" = 1 ]; then \
		echo "pip-audit: SKIPPED (BROKER_LINT_OFFLINE=1): its vulnerability service cannot be reached from here,"; \
		echo "           so the installed packages were NOT checked for known vulnerabilities."; \
	else \
		echo "pip-audit: cannot reach its vulnerability service (PyPI's JSON API, pypi.org/pypi/<name>/<version>/json),"; \
		echo "           so the installed packages cannot be checked for known vulnerabilities. Run make lint where"; \
		echo "           it can, or set BROKER_LINT_OFFLINE=1 to skip this step (with this warning)."; \
		exit 1; \
	fi

format: $(STAMP) ## format the code with ruff
	$(BIN)/ruff format .

# The benchmarks of issue #7 (docs/benchmarks.md, docs/scaling.md): never part of `make test`. `make bench` runs them
# all in sequence; each bench-* target runs alone too. PostgreSQL: BROKER_BENCH_POSTGRES_URL, or the scratch
# database broker_bench on the local server, created when missing. The HTTP benchmarks create databases of their own
# next to it and drop them (the seeded sets of bench-scale are kept in bench/seeded/ for the next run); the URL's
# own database is only connected to. Options for one benchmark: BENCH_HTTP_ARGS, BENCH_SCALE_ARGS,
# BENCH_SCALING_ARGS (e.g. "--rounds 1 --duration 5").
BENCH_POSTGRES_DEFAULT := postgresql+psycopg://postgres@127.0.0.1:5432/broker_bench
BENCH_SCALE_PERSONS ?= 10000,1000000
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

.PHONY: bench bench-http bench-scale bench-scaling bench-plots bench-tools
bench bench-http bench-scale bench-scaling bench-webhooks: export BROKER_BENCH_POSTGRES_URL ?= $(BENCH_POSTGRES_DEFAULT)

bench: $(STAMP) $(MO) ## every benchmark in sequence (HTTP, scale, scaling, policy, audit, portal, webhooks), then the plots
	$(MAKE) bench-http
	$(MAKE) bench-scale
	$(MAKE) bench-scaling
	$(MAKE) bench-policy
	$(MAKE) bench-audit
	$(MAKE) bench-portal
	$(MAKE) bench-webhooks
	$(MAKE) bench-plots

bench-tools: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq wrk; } || echo "could not install wrk"
	@if [ -n "$$BROKER_BENCH_POSTGRES_URL" ]; then $(BIN)/python -m bench.harness ensure-database "$$BROKER_BENCH_POSTGRES_URL"; fi

bench-http: bench-tools ## disclosures/s over HTTP next to /healthz and a bare durable insert, SQLite and PostgreSQL
	$(BIN)/python -m bench.http_disclosure --backend both $(BENCH_HTTP_ARGS)

bench-scale: bench-tools ## disclosure p50/p95/p99 at 10,000 and 1,000,000 persons on PostgreSQL (seeds once, then reuses)
	$(BIN)/python -m bench.scale --persons $(BENCH_SCALE_PERSONS) $(BENCH_SCALE_ARGS)

bench-scaling: bench-tools ## one broker instance vs two on one PostgreSQL, each with a CPU budget; the log verified
	$(BIN)/python -m bench.scaling $(BENCH_SCALING_ARGS)

bench-plots: $(BENCH_STAMP) ## SVG plots of the newest HTTP, scale and scaling results into docs/images/
	$(BIN)/python -m bench.plots

bench-policy: $(STAMP) ## decide() next to cedarpy: p50/p99 and decisions/s with 1, 100 and 10,000 consents
	$(BIN)/python -m bench.policy

.PHONY: bench-webhooks
bench-webhooks: $(STAMP) bench-tools ## partner events: deliveries a second by one worker, CPU per delivery, send latency (SQLite, PostgreSQL)
	$(BIN)/python -m bench.webhooks

.PHONY: bench-audit
bench-audit: $(STAMP) ## audit log: offline verification of 1,000,000 entries, proofs at 1,000,000, sequencer rate
	$(BIN)/python -m bench.audit_offline
	$(BIN)/python -m bench.audit_db

.PHONY: bench-portal
bench-portal: $(STAMP) $(MO) ## server time of every portal page, fi/sv/en, 1,000 disclosures (BROKER_BENCH_POSTGRES_URL)
	$(BIN)/python -m bench.portal

# The withdrawal race is evidence on PostgreSQL (docs/security.md): without BROKER_TEST_POSTGRES_URL the soak would
# skip it, so it stops before it starts.
soak: $(STAMP) $(MO) ## decide() against Cedar on 200,000 requests (BROKER_SOAK_REQUESTS, _SEED); 1,000 withdrawal races; API fuzz; 10,000 disclosures under SIGKILL
	@[ -n "$$BROKER_TEST_POSTGRES_URL" ] || { echo "make soak: set BROKER_TEST_POSTGRES_URL" >&2; exit 1; }
	@seed=$${BROKER_SOAK_SEED:-$$(date +%s)}; echo "BROKER_SOAK_SEED=$$seed"; \
	BROKER_SOAK_REQUESTS=$${BROKER_SOAK_REQUESTS:-200000} BROKER_SOAK_SEED=$$seed \
	$(BIN)/pytest -q tests/unit/test_policy_cedar.py
	BROKER_SOAK=1 $(BIN)/pytest -q tests/integration/test_withdrawal_race.py
	@seed=$${BROKER_SOAK_SEED:-$$(date +%s)}; echo "BROKER_SOAK_SEED=$$seed (API fuzz)"; \
	BROKER_SOAK=1 BROKER_SOAK_SEED=$$seed $(BIN)/pytest -q tests/integration/test_api_fuzz.py
	@seed=$${BROKER_SOAK_SEED:-$$(date +%s)}; echo "BROKER_SOAK_SEED=$$seed (crash)"; \
	BROKER_SOAK=1 BROKER_SOAK_SEED=$$seed $(BIN)/pytest -q -rA tests/e2e/test_crash.py

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
