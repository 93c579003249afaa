# Shardkeeper developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml devenv/pyproject.toml | sha1sum | cut -c1-12)
QUICK ?=

.PHONY: help setup venv tools dev down status lint test test-realnode test-unit bench soak crds lock image clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): requirements-dev.lock pyproject.toml devenv/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements-dev.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e . -e devenv
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)  ## create .venv from requirements-dev.lock

setup: venv tools  ## everything a fresh machine needs: .venv and the Go tools

tools: venv  ## build etcd, kube-apiserver, kube-controller-manager, kubectl, kubelet, MinIO, helm (cached)
	$(PY) -m shardkeeper dev tools

dev: setup  ## run the product locally: control plane, MinIO, PostgreSQL, operator, example pipeline
	$(PY) -m shardkeeper dev up --with-operator
	$(PY) -m shardkeeper dev demo

down: venv  ## stop what `make dev` started
	$(PY) -m shardkeeper dev down

status: venv  ## health of the local environment
	$(PY) -m shardkeeper dev status

lint: venv  ## ruff, ruff format, mypy --strict on operator/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint tools  ## lint, then every test against the real local environment
	$(VENV)/bin/pytest

test-realnode: venv tools  ## the real node's tests: kubelet, containerd, runc (root; docs/real-node.md)
	$(VENV)/bin/pytest -m realnode tests/realnode

test-unit: venv  ## only the tests of pure logic (no environment)
	$(VENV)/bin/pytest tests/unit

bench: setup  ## run the benchmarks, write .bench/results.json (QUICK=1 for small sizes)
	$(PY) -m bench $(if $(QUICK),--quick)

soak: setup  ## a long run of ingest, pruning, a failover and a restore: .bench/soak.json (MINUTES=30)
	$(PY) -m bench.soak --minutes $(or $(MINUTES),30)

crds: venv  ## regenerate crds/, the chart's CRDs and docs/api.md from the API models
	$(PY) -m shardkeeper.api.generate

image: venv  ## build the OCI image into .build/shardkeeper-<version>.oci.tar (mmdebstrap, umoci; root)
	$(PY) -m shardkeeper dev image

lock:  ## re-resolve the locks from pyproject.toml: runtime (image) and dev
	$(VENV)/bin/uv pip compile -q pyproject.toml --python-version 3.11 -o requirements.lock
	$(VENV)/bin/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements-dev.lock

clean:  ## remove .venv, .build and caches in the checkout (the tool cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .bench .build
