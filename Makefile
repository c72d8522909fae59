# OneReward pipeline: `make run` runs the whole pipeline (tiny profile, CPU); `make test` runs the tests.
# Both set themselves up: a .venv with torch 2.13.0 (CPU wheel) first, then the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
PROFILE ?= tiny
HOST ?= 127.0.0.1
SELECT ?= *
export PATH := $(BIN):$(PATH)
export DAGSTER_HOME := $(abspath .dagster_home)
export ONEREWARD_PROFILE ?= $(PROFILE)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
MLFLOW_URI ?= sqlite:///$(abspath mlflow/mlflow.db)
# The served stack (`make serve`, docs/TEAM.md): its folder and ports are configuration (orchestration/serve.py reads
# the ONEREWARD_* variables). ONEREWARD_BACKEND=server sends `make run` / `make smoke` to it instead of the embedded
# default (sqlite instance in .dagster_home, sqlite MLflow store in mlflow/): the same graph, the same code.
SERVE_DIR ?= $(abspath .serve)
PG_PORT ?= 5433
MLFLOW_PORT ?= 5001
DAGSTER_PORT ?= 3001
export ONEREWARD_SERVE_DIR := $(SERVE_DIR)
export ONEREWARD_SERVE_HOST := $(HOST)
export ONEREWARD_PG_PORT := $(PG_PORT)
export ONEREWARD_MLFLOW_PORT := $(MLFLOW_PORT)
export ONEREWARD_DAGSTER_PORT := $(DAGSTER_PORT)
export ONEREWARD_BACKEND ?= embedded
ifeq ($(ONEREWARD_BACKEND),server)
export DAGSTER_HOME := $(SERVE_DIR)/dagster_home
export MLFLOW_TRACKING_URI := http://$(HOST):$(MLFLOW_PORT)
MLFLOW_URI := $(MLFLOW_TRACKING_URI)
endif
# Label Studio lives in its own venv: its pins (Django, boto, ...) clash with the project's. Pinned; keep in
# step with LABEL_STUDIO_VERSION in steps/judge/labelstudio.py (the export format and API calls were checked on it).
LS_VENV := .venv-labelstudio
LABEL_STUDIO_VERSION := 1.23.2
LS_PORT ?= 8080

.PHONY: setup run smoke test test-serve lint ui mlflow-ui clean foundations labelstudio annotate postgres serve serve-stop

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a plain `torch` would pull a multi-GB CUDA build (docs/DESIGN.md §10).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

labelstudio: $(LS_VENV)/.installed  ## Label Studio in its own venv (the round-trip tests and `make annotate` use it)

annotate: setup labelstudio  ## Label Studio on 127.0.0.1:$(LS_PORT) with a project of data/$(PROFILE)/candidates
	python -m steps.judge.labelstudio serve --candidates "$$(python -m steps.paths candidates)" \
	  --train "$$(python -m steps.paths train)" --port $(LS_PORT)

setup: $(VENV)/.installed
ifeq ($(ONEREWARD_BACKEND),server)
	@python -m orchestration.serve status >/dev/null || { python -m orchestration.serve status; \
	  echo "ONEREWARD_BACKEND=server, but the served stack is not (all) running: start it with 'make serve'" >&2; exit 1; }
else
	mkdir -p $(DAGSTER_HOME) mlflow
	cp -n orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
endif
	python -m orchestration.instance  # the instance storage, created once; pool slots of killed runs freed

run: setup  ## the whole pipeline in $(PROFILE) (default tiny) on CPU; SELECT='judge_agreement*' re-runs a part
	@dagster asset materialize -m orchestration.definitions --select '$(SELECT)' || { rc=$$?; echo; \
	  echo "The run stopped (exit $$rc): see the failed step above, or the run in 'make ui'."; \
	  agreement="$$(python -m steps.paths agreement_md)"; if [ -f "$$agreement" ]; then \
	    echo "If the judge_agreement gate blocked RL, this is the judge's agreement on the agreement test set:"; \
	    cat "$$agreement"; \
	    echo "Why, and what each part of the judge recipe buys: docs/ABLATIONS.md. To run RL past a failed gate"; \
	    echo "(the fill model then stays 'challenger'): ONEREWARD_GATE_OVERRIDE=\"<your reason>\" make run"; fi; exit $$rc; }
	@echo
	@echo "Done ($(ONEREWARD_PROFILE) profile). Where to look:"
ifeq ($(ONEREWARD_BACKEND),server)
	@echo "  Dagster UI (asset graph, metadata, checks): http://$(HOST):$(DAGSTER_PORT) (served)"
	@echo "  MLflow UI (runs, metrics, registry):        $(MLFLOW_TRACKING_URI) (served)"
else
	@echo "  Dagster UI (asset graph, metadata, checks): make ui         -> http://$(HOST):3000"
	@echo "  MLflow UI (runs, metrics, registry):        make mlflow-ui  -> http://$(HOST):5000"
endif
	@echo "  Pictures and reports:                       $$(python -m steps.paths outputs_dir)/"

foundations: setup  ## rebuild foundations/$(PROFILE) (tiny: hours of CPU; resumable: rerun to continue), one core per part
	@python -m steps.foundations --profile $(PROFILE) --set out_dir=foundations/$(PROFILE) --set part=base --set threads=1 & b=$$!; \
	python -m steps.foundations --profile $(PROFILE) --set out_dir=foundations/$(PROFILE) --set part=judge --set threads=1 && \
	python -m steps.foundations --profile $(PROFILE) --set out_dir=foundations/$(PROFILE) --set part=judge2 --set threads=1; j=$$?; \
	wait $$b; b=$$?; test $$j -eq 0 -a $$b -eq 0

smoke:  ## the whole graph in the smoke profile (what CI materializes)
	$(MAKE) run PROFILE=smoke ONEREWARD_PROFILE=smoke

test: setup labelstudio  ## the tests on the embedded default (the served stack's: make test-serve)
	pytest -q -m "not serve"; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-serve: $(VENV)/.installed postgres  ## the tests against a real PostgreSQL, MLflow server, Dagster webserver and daemon
	pytest -q -m serve tests/orchestration/test_serve.py; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

postgres:  # PostgreSQL's server programs (Debian's package), installed when missing and we are root
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian's postgresql (apt-get)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL's server is not installed: sudo apt-get install postgresql (or set ONEREWARD_PG_BIN)" >&2; exit 1; fi

serve: $(VENV)/.installed postgres  ## PostgreSQL, MLflow server, Dagster webserver + daemon in $(SERVE_DIR) (docs/TEAM.md)
	python -m orchestration.serve start

serve-stop:  ## stops what `make serve` started, by pid
	python -m orchestration.serve stop

lint: setup  ## what CI checks (formatting is not enforced yet)
	ruff check .

ui: setup
	dagster dev -m orchestration.definitions -h $(HOST) -p 3000

mlflow-ui: setup
	mlflow ui --backend-store-uri $(MLFLOW_URI) --default-artifact-root $(abspath mlflow/artifacts) --host $(HOST) --port 5000

clean:  ## local state only (Dagster instance, MLflow store, outputs); data stays in DVC
	rm -rf .dagster_home mlflow/mlflow.db mlflow/artifacts outputs
