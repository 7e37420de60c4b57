# Every target creates the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services demo test test-unit clean broker-stop

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

broker-stop: $(STAMP)
	$(BIN)/tombstone broker stop

clean:
	rm -rf $(VENV) build var .pytest_cache
