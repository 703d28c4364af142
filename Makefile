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

run: $(STAMP)
	$(BIN)/meshclaw serve --demo

# Tests run in parallel (pytest-xdist), one process per core by default: every test has
# its own database, queue and ports. `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

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
