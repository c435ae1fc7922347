# FlightDeck: two commands do all the set-up on a fresh machine: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

export FLIGHTDECK_HOME ?= $(CURDIR)/.flightdeck
export AIRFLOW_HOME ?= $(FLIGHTDECK_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM ?= 4
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL ?= 30
export MLFLOW_DISABLE_TELEMETRY := true
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export GX_ANALYTICS_ENABLED := false

SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)

DEMO_START ?= 2013-01-01
DEMO_END ?= 2013-01-31

.PHONY: install init browser demo test test-deps up cluster clean bench lint

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(BIN)/.installed  ## create the virtualenv and install the pinned stack

init: install  ## create and migrate every store once (Airflow metadata DB, warehouse, MLflow), before any DAG runs
	$(BIN)/flightdeck init

demo: install  ## replay a month of flights: data, training, gate and scoring DAGs through the real scheduler
	$(BIN)/flightdeck demo --start $(DEMO_START) --end $(DEMO_END)

browser:  ## headless Chromium for the UI tests: the Debian package, installed only when missing (no browser download)
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# docker-compose (the Debian package) lets tests/unit/test_compose.py run `docker-compose config`;
# if it cannot be installed (no root, no network), only that one check skips, saying why.
test-deps:  ## install what the tests need beyond the virtualenv (docker-compose, to validate docker-compose.yaml)
	@command -v docker-compose >/dev/null 2>&1 || { \
	  echo "installing docker-compose (Debian package) to validate docker-compose.yaml"; \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker-compose \
	    >/dev/null; } \
	  || echo "warning: could not install docker-compose: the 'docker-compose config' check will skip"; }

test: install browser test-deps  ## run the whole test suite (and record its ML Test Score evidence in the warehouse)
	FLIGHTDECK_EVIDENCE_URL=$${FLIGHTDECK_EVIDENCE_URL:-sqlite:///$(abspath $(FLIGHTDECK_HOME))/warehouse.db} $(BIN)/python -m pytest

up: init  ## start the Airflow UI (standalone) and the MLflow UI; Ctrl-C stops both
	@mkdir -p $(FLIGHTDECK_HOME)/logs
	@set -m; \
	$(BIN)/airflow standalone > $(FLIGHTDECK_HOME)/logs/standalone.log 2>&1 & AF=$$!; \
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(FLIGHTDECK_HOME)/mlflow.db \
	  --default-artifact-root $(FLIGHTDECK_HOME)/mlartifacts --host 127.0.0.1 --port 5000 \
	  > $(FLIGHTDECK_HOME)/logs/mlflow.log 2>&1 & ML=$$!; \
	trap 'kill -TERM -$$AF -$$ML 2>/dev/null; wait' INT TERM EXIT; \
	for i in $$(seq 120); do test -f $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated && break; sleep 1; done; \
	echo "Airflow UI: http://localhost:8080  login: admin / $$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated 2>/dev/null)"; \
	echo "FlightDeck: http://localhost:8080/flightdeck/  (models, data, predictions, monitoring; also in the Airflow UI's menu)"; \
	echo "MLflow UI:  http://127.0.0.1:5000"; \
	echo "logs: $(FLIGHTDECK_HOME)/logs  (Ctrl-C stops both)"; \
	wait $$AF

cluster: install  ## the production topology natively: CeleryExecutor (2 workers), PostgreSQL, Redis, MLflow server, S3; Ctrl-C stops it
	$(BIN)/flightdeck cluster $(CLUSTER_ARGS)

bench: install  ## benchmarks (results in BENCHMARKS.md): data pipeline, training, scoring, monitoring, UI, service, ONNX, queue (about 95 minutes)
	$(BIN)/python benchmarks/bench_data_pipeline.py
	cd benchmarks && ../$(BIN)/python bench_training.py
	$(BIN)/python benchmarks/bench_scoring.py --rows 1000000 3000000 10000000 --db sqlite postgres
	$(BIN)/python benchmarks/bench_monitoring.py --rows 1000000
	$(BIN)/python benchmarks/bench_ui.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_onnx.py
	$(BIN)/python benchmarks/bench_queue.py

lint: install  ## ruff everywhere; mypy on the library and the plugin (strict on core/ and data/, see pyproject.toml)
	$(BIN)/ruff check include plugins dags tests benchmarks
	$(BIN)/mypy

clean:  ## remove all local state (the virtualenv stays; `make clean-all` removes it too)
	rm -rf $(FLIGHTDECK_HOME) .pytest_cache

clean-all: clean
	rm -rf $(VENV)
