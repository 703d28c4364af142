# MeshClaw: `make run` sets everything up and starts the platform; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench bench-quick install clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The demo's mailbox is Debian's dovecot: installed first when it is missing and apt-get
# can run without a password prompt (else the script says how, and the demo has no mail).
run: $(STAMP)
	@sh scripts/demo-mail-server
	$(BIN)/meshclaw serve --demo

# Tests run in parallel (pytest-xdist), one process per core by default: every test has
# its own database, queue and ports. `make test TEST_WORKERS=0` runs them in one process.
# Then, in CI (CI=true) or with TEST_POSTGRES=1, the store-dependent tests (every test
# whose platform `make_world` builds) run once more on PostgreSQL: ~6 more minutes here,
# so a local run leaves it out to stay under 15 minutes.
TEST_WORKERS ?= auto
TEST_POSTGRES ?= $(if $(filter true,$(CI)),1,0)

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS)
	@if [ "$(TEST_POSTGRES)" = 1 ]; then \
	  echo "store-dependent tests again, on PostgreSQL (MESHCLAW_TEST_STORE=postgresql)"; \
	  MESHCLAW_TEST_STORE=postgresql $(BIN)/python -m pytest -n $(TEST_WORKERS); \
	fi

# What the connector tests run against, installed once (again only when its pins change):
# third-party MCP servers from npm and a Synapse in its own virtualenv. Without npm or the
# package index the step says so and those tests skip with a reason (with CI=true, fail).
NPM_STAMP := tests/connectors/thirdparty/node_modules/.installed
SYNAPSE_STAMP := tests/.cache/synapse-venv/.installed

.PHONY: test-deps
test-deps: $(NPM_STAMP) $(SYNAPSE_STAMP)

$(NPM_STAMP): tests/connectors/thirdparty/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/connectors/thirdparty --no-audit --no-fund --loglevel=error \
	    && touch $@; \
	else echo "note: npm not found: the third-party MCP server tests will skip"; fi

$(SYNAPSE_STAMP): tests/connectors/synapse-requirements.txt $(STAMP)
	@$(BIN)/python -m tests.connectors.synapsepeer && touch $@ \
	  || echo "note: Synapse could not be installed: the Matrix tests will skip"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/policy_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/audit_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/metering_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/analytics_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/api_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/scale_bench.py --write docs/benchmarks.md
	$(BIN)/python benchmarks/integrity_quality.py --write docs/integrity.md
	$(BIN)/python benchmarks/integrity_speed.py --write docs/integrity.md
	$(BIN)/python benchmarks/agentdojo_replay.py --write docs/security.md

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --quick
	$(BIN)/python benchmarks/policy_bench.py --quick
	$(BIN)/python benchmarks/agentdojo_replay.py --direct

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
