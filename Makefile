# agentflow: developer entry points.  `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export AGENTFLOW_CACHE ?= $(HOME)/.cache/agentflow
export AGENTFLOW_BIN_DIR ?= $(AGENTFLOW_CACHE)/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(AGENTFLOW_BIN_DIR):$(PATH)
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# Two distributions, both editable: the operator with its dev tools, and agentflow-devcluster (the
# local cluster and `agentflow dev`), which the operator's wheel and images leave out.
$(VENV)/.installed: pyproject.toml devcluster/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./devcluster
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the operator, its dev tools and the dev cluster

.PHONY: binaries
binaries: ## Build etcd, kube-apiserver, kube-controller-manager, helm, promtool, kubeconform (cached)
	hack/build-binaries.sh all

.PHONY: images
images: ## Build the operator and agent-runner images with the local Docker engine, offline (cached)
	hack/containers/images.sh

.PHONY: crds
crds: install ## Regenerate crds/, the chart's CRDs and docs/api.md from the pydantic models
	$(PY) -m agentflow.api.crdgen --out crds --chart charts/agentflow/crds --docs docs/api.md

.PHONY: lint
lint: install ## ruff, mypy --strict and the import-linter layer contracts
	$(VENV)/bin/ruff check operator devcluster tests bench
	$(VENV)/bin/ruff format --check operator devcluster tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict bench
	$(VENV)/bin/lint-imports

.PHONY: fmt
fmt: install ## Format and autofix with ruff
	$(VENV)/bin/ruff format operator devcluster tests bench
	$(VENV)/bin/ruff check --fix operator devcluster tests bench

.PHONY: test-unit
test-unit: install ## Unit tests only (no cluster)
	$(PY) -m pytest -m 'not integration and not soak and not e2e' $(PYTEST_ARGS)

.PHONY: test
test: install binaries lint ## Everything: lint, unit, integration (local control plane), then e2e (real containers on kind)
	cd hack/capdrop && GOTOOLCHAIN=local go test ./...
	$(PY) -m pytest --ignore=tests/e2e $(PYTEST_ARGS)
	$(MAKE) e2e-images
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

.PHONY: cluster-up
cluster-up: install binaries ## Start the local control plane and local node (kubeconfig in .agentflow/)
	$(PY) -m agentflow_devcluster up

.PHONY: cluster-down
cluster-down: install ## Stop the operator started by `make dev`, the local node and control plane
	$(VENV)/bin/agentflow dev --stop

.PHONY: dev
dev: install binaries ## Local cluster + operator + the finance-feature example, watched to the end
	$(VENV)/bin/agentflow dev

.PHONY: soak
soak: install binaries ## Load: 1,000 Workflows in one burst on a cluster of its own (minutes)
	$(PY) -m pytest tests/soak -m soak -s $(PYTEST_ARGS)

.PHONY: bench
bench: install binaries ## Benchmarks (slow); writes docs/benchmarks.md
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: kind-up
kind-up: install ## A kind cluster from agentflow's node image, built here with no registry (needs Docker; cached)
	hack/kind/cluster.sh up

.PHONY: kind-down
kind-down: ## Delete the kind cluster of `make kind-up` and its Docker network
	hack/kind/cluster.sh down

# Built before pytest starts: the first build takes longer than a test may (pytest-timeout), and
# cached it takes seconds.
.PHONY: e2e-images
e2e-images: ## The e2e's images: agentflow's, the kind node image, Prometheus Operator's, local-path-provisioner's (cached)
	hack/containers/engine.sh
	hack/containers/images.sh
	hack/kind/node-image.sh
	hack/monitoring/images.sh
	hack/storage/images.sh

.PHONY: e2e
e2e: install binaries ## End to end on real containers: images, a kind cluster of its own, the chart, Prometheus Operator
	$(MAKE) e2e-images
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the venv and local state (the binary cache in ~/.cache/agentflow stays)
	rm -rf $(VENV) .agentflow .pytest_cache .mypy_cache .ruff_cache
