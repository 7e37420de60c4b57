# Every target creates the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services demo test test-unit faults bench clean broker-stop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL and Redis on loopback, and Prometheus's binaries, from Debian packages (needs root).
services:
	bash deploy/local/services.sh start

demo: $(STAMP)
	$(BIN)/tombstone demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# Fault scenarios on a broker of their own, PostgreSQL and Redis from `make services`;
# writes build/fault-report.json. FAULTS=id1,id2 runs only those scenarios.
faults: $(STAMP)
	$(BIN)/python -m tests.faults --report build/fault-report.json $(if $(FAULTS),--only $(FAULTS))

# Ratio benchmarks B1-B10 against a local broker (started and stopped by the run unless
# KAFKA_BOOTSTRAP_SERVERS is set); writes build/bench.json. Needs `make services` for the
# PostgreSQL and Redis stores. BENCH_SCALE multiplies the event counts, BENCH_ROUNDS sets
# the measured rounds; see docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench

broker-stop: $(STAMP)
	$(BIN)/tombstone broker stop

clean:
	rm -rf $(VENV) build var .pytest_cache
