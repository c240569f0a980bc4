# spotrun: one entry point. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PYTHONPATH := lambdas:worker:local:cli:.
# DMTCP, built once from the vendored source and spotrun's patch into a cache keyed by the checksum of
# both (the tarball's bytes, then the patch's: rebuilt only when either changes, so an unpatched build
# is never used) by the same script the worker image uses; the tests and the local runtime use it.
DMTCP_TARBALL ?= $(abspath ../shared/vendor/dmtcp-4.2.0.tar.gz)
DMTCP_PATCH_FILE := worker/image/dmtcp-gang.patch
DMTCP_SHA := $(shell test -f "$(DMTCP_TARBALL)" && cat "$(DMTCP_TARBALL)" $(DMTCP_PATCH_FILE) | sha256sum | cut -c1-16)
DMTCP_PREFIX := $(if $(DMTCP_SHA),$(CURDIR)/.cache/dmtcp/$(DMTCP_SHA))
DMTCP_STAMP := $(if $(DMTCP_PREFIX),$(DMTCP_PREFIX)/.spotrun-dmtcp)
ifneq ($(DMTCP_PREFIX),)
export SPOTRUN_DMTCP_BIN ?= $(DMTCP_PREFIX)/bin
endif

.PHONY: help install dmtcp browser test check synth run serve stop soak bench bench-policy bench-agent bench-overlap bench-boot bench-local bench-logs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@printf '#!/bin/sh\nPYTHONPATH="%s/lambdas:%s/cli$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s/python" -m spotrun_cli "$$@"\n' \
		"$(CURDIR)" "$(CURDIR)" "$(CURDIR)/$(BIN)" > $(BIN)/spotrun && chmod +x $(BIN)/spotrun
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install everything spotrun needs

$(DMTCP_PREFIX)/.spotrun-dmtcp: worker/image/install-dmtcp.sh worker/image/dmtcp.pin $(DMTCP_PATCH_FILE)
	@rm -rf "$(DMTCP_PREFIX)"
	worker/image/install-dmtcp.sh --prefix "$(DMTCP_PREFIX)" --tarball "$(DMTCP_TARBALL)"

dmtcp: $(DMTCP_STAMP) ## build DMTCP from ../shared/vendor once into .cache/dmtcp/ (about a minute)
	@test -n "$(DMTCP_STAMP)" || echo "DMTCP: $(DMTCP_TARBALL) is absent; the real-DMTCP tests will skip"

# The console's browser test drives Debian's own Chromium (no browser download): installed here when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser: ## Debian's chromium and chromium-driver for the console's browser test (apt-get, when missing)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

test: $(STAMP) $(DMTCP_STAMP) browser ## type-check the control plane, then run the whole test suite
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider --timeout=600

check: $(STAMP) ## lint (ruff) and type-check the control plane (mypy; its settings are in pyproject.toml)
	$(BIN)/ruff check lambdas worker local cli stacks tests bench app.py
	$(BIN)/mypy

synth: $(STAMP) ## synthesize the CloudFormation template into cdk.out/ and lint it
	CDK_OUTDIR=cdk.out $(BIN)/python app.py
	$(BIN)/cfn-lint cdk.out/*.template.json

run: $(STAMP) $(DMTCP_STAMP) ## the demo: a sample problem solved locally through replayed interruptions (ARGS=--help)
	$(BIN)/python -m spotrun_local $(ARGS)

serve: $(STAMP) $(DMTCP_STAMP) ## start spotrun locally in the background, state kept in .spotrun/; returns once it answers
	$(BIN)/python -m spotrun_local --serve --background $(ARGS)

stop: $(STAMP) ## stop what `make serve` started (its state stays for the next `make serve`)
	$(BIN)/python -m spotrun_local --stop $(ARGS)

soak: $(STAMP) ## chaos soak: problems under injected faults, checked for losses (SEED=6, ARGS=...) -> bench/results/soak.json
	$(BIN)/python -m spotrun_local.soak --seed $(or $(SEED),6) --out bench/results/soak.json $(ARGS)

bench: bench-policy bench-agent bench-overlap bench-boot bench-local bench-logs ## run every benchmark and write bench/results/

bench-policy: $(STAMP) ## the spot policy on the real traces -> bench/results/policy.json
	$(BIN)/python -m bench.policy

bench-agent: $(STAMP) $(DMTCP_STAMP) ## interruption cost, checkpoint throughput and DMTCP on the local runtime -> bench/results/agent.json
	$(BIN)/python -m bench.agent

bench-overlap: $(STAMP) $(DMTCP_STAMP) ## save while capturing, parallel restore, compression: real DMTCP, 1 GiB -> bench/results/agent.json
	$(BIN)/python -m bench.agent.overlap $(ARGS)

bench-boot: $(STAMP) ## a worker's boot on the worker image vs building that image -> bench/results/boot.json
	$(BIN)/python -m bench.boot

bench-local: $(STAMP) $(DMTCP_STAMP) ## the local state journal's cost and the time to restart -> bench/results/local_state.json
	$(BIN)/python -m bench.local_state $(ARGS)

bench-logs: $(STAMP) $(DMTCP_STAMP) ## a running program's line to `spotrun logs --follow`, locally -> bench/results/log_latency.json
	$(BIN)/python -m bench.logs

clean: ## remove generated files (not the local deployment: `make stop; rm -rf .spotrun` drops it)
	rm -rf cdk.out .spotrun/demo .spotrun/last-run.json .spotrun/soak .pytest_cache .cache
