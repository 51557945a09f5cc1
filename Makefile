# gridflex — one entry point for people. `make demo` runs the system; `make test` proves it.
# Everything runs on this machine: Kafka from Maven Central jars, PostgreSQL from Debian packages.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GRIDFLEX := $(BIN)/gridflex
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap up down status topics test unit integration schemas-check lint demo bench prometheus dashboards clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gridflex needs Python 3.11+"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "python venv missing: installing python3-venv"; apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,demo]'
	@touch $@

bootstrap: $(BIN)/.installed ## Create the virtualenv and install pinned dependencies

up: bootstrap ## Start Kafka and PostgreSQL on 127.0.0.1, create the catalogue's topics, apply the database migrations (idempotent)
	$(GRIDFLEX) stack up
	$(GRIDFLEX) db migrate

down: ## Stop what `make up` started
	@test -x $(GRIDFLEX) && $(GRIDFLEX) stack down || $(PYTHON) -m gridflex.stack down

status: bootstrap ## What runs, where, which versions
	$(GRIDFLEX) stack status

schemas-check: bootstrap ## Every schema parses and stays backward compatible with every committed version
	$(GRIDFLEX) schemas check

lint: bootstrap ## Static checks (ruff): undefined and unused names, likely bugs
	$(BIN)/ruff check gridflex services bench demo tests scripts deploy/grafana

unit: bootstrap ## Pure-logic tests only (no broker)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test: up schemas-check lint ## Everything: unit, integration and end-to-end tests against the real stack
	$(BIN)/pytest tests -q $(PYTEST_ARGS)

demo: up ## Bring the system up and run it on realistic data
	$(BIN)/python -m demo

bench: up ## Benchmarks: print a table, write JSON to bench/results/
	$(BIN)/python -m bench

prometheus: up ## Prometheus with deploy/prometheus/ (scrape config, alert rules) against the local services, until Ctrl-C
	$(BIN)/python -m gridflex.prometheus

dashboards: bootstrap ## Regenerate the Grafana dashboards (deploy/grafana/dashboards/*.json) from their builder
	$(BIN)/python deploy/grafana/build_dashboards.py

clean: ## Stop the stack and delete its data, logs and the virtualenv
	-@$(MAKE) --no-print-directory down
	rm -rf var $(VENV)
