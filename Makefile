# spotrun: one entry point. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PYTHONPATH := lambdas:worker:local:cli:.

.PHONY: help install test check synth lint run bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install everything spotrun needs

test: $(STAMP) ## run the whole test suite (unit, integration, infrastructure)
	$(BIN)/pytest -p no:cacheprovider --timeout=600

check: $(STAMP) ## lint
	$(BIN)/ruff check lambdas worker local cli stacks tests bench app.py

synth: $(STAMP) ## synthesize the CloudFormation template into cdk.out/ and lint it
	CDK_OUTDIR=cdk.out $(BIN)/python app.py
	$(BIN)/cfn-lint cdk.out/*.template.json

run: $(STAMP) ## run spotrun locally (moto server, real agents as local processes, replayed spot market)
	$(BIN)/python -m spotrun_local

bench: $(STAMP) ## run the benchmarks and write bench/results/
	$(BIN)/python -m bench.policy

clean: ## remove generated files
	rm -rf cdk.out .spotrun .pytest_cache
