# The two commands: `make run` starts the whole service locally, `make test` runs every test.
# Each sets up what it needs first (a virtual environment per tool set, rebuilt when its requirements change):
# .venv for the app, the tests and the local runtime; .venv-sam for SAM CLI, whose SAM translator the local runtime
# also uses to deploy template.yaml as `sam deploy` would.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_SAM := .venv-sam
PY := $(VENV)/bin/python
SAM := $(VENV_SAM)/bin/sam
SAM_CLI_VERSION := 1.170.0
export SAM_CLI_TELEMETRY := 0

.PHONY: run test fuzz lint validate openapi record-watch check clean bench bench-cost bench-fanout bench-latency bench-push-latency bench-cold-start bench-memory bench-scheduling load

$(VENV)/.installed: requirements-dev.txt layers/longrun/requirements.txt client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV_SAM)/.installed:
	$(PYTHON) -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/pip install --quiet --upgrade pip
	$(VENV_SAM)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

## run: the whole service on 127.0.0.1 (API on $$PORT, default 3000; WebSocket API on $$WS_PORT, default 3001;
##      AWS edge on $$EDGE_PORT, default 4566)
run: $(VENV)/.installed $(VENV_SAM)/.installed
	exec $(PY) -m local_runtime

## test: unit, integration (moto) and end-to-end (local runtime over HTTP) tests
test: $(VENV)/.installed $(VENV_SAM)/.installed
	$(PY) -m pytest

## lint: ruff and mypy
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	for handler in functions/*/app.py; do $(PY) -m mypy $$handler || exit 1; done

## validate: the template passes sam validate --lint and cfn-lint, and sam build succeeds (its layer compiled)
validate: $(VENV)/.installed $(VENV_SAM)/.installed
	$(SAM) validate --lint
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM) build
	$(PY) -m tools.layer_bytecode .aws-sam/build/SharedLayer

## openapi: regenerate docs/openapi.json from the API's code and docs/task-event.schema.json from the models
openapi: $(VENV)/.installed
	$(PY) -m tools.openapi > docs/openapi.json
	$(PY) -m tools.event_schema > docs/task-event.schema.json

## fuzz: schemathesis against every REST route of a local runtime, as two callers, and 200 fault runs (tasks under
##       injected AWS faults); seeded (FUZZ_SEED); not in `make test`, CI runs both
fuzz: $(VENV)/.installed $(VENV_SAM)/.installed
	$(PY) -m pytest fuzz

## bench: every benchmark (about 25 minutes); results in bench/results/, figures in docs/benchmarks/
$(VENV)/.bench: $(VENV)/.installed $(VENV_SAM)/.installed bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: bench-cold-start bench-cost bench-fanout bench-latency bench-push-latency bench-memory bench-scheduling load

bench-cost: $(VENV)/.bench
	$(PY) -m bench.cost_model

bench-fanout: $(VENV)/.bench
	$(PY) -m bench.fanout_overhead

bench-latency: $(VENV)/.bench
	$(PY) -m bench.progress_latency

bench-push-latency: $(VENV)/.bench
	$(PY) -m bench.push_latency

bench-cold-start: $(VENV)/.bench
	$(PY) -m bench.cold_start

bench-memory: $(VENV)/.bench
	$(PY) -m bench.memory

bench-scheduling: $(VENV)/.bench
	$(PY) -m bench.scheduling

## load: 200 simultaneous submits and 5,000 status polls against a local runtime on loopback (about 2 minutes)
load: $(VENV)/.bench
	$(PY) -m bench.load

## record-watch: record `longrun watch` on a 50-device task in tmux, rendered to docs/longrun-watch*.svg
record-watch: $(VENV)/.installed $(VENV_SAM)/.installed
	$(PY) -m tools.record_watch

## check: everything CI checks
check: lint validate test fuzz

clean:
	rm -rf $(VENV) $(VENV_SAM) .aws-sam .pytest_cache .mypy_cache .ruff_cache
