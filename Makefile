# pyexec: `make run` starts the service, `make test` runs every test. Both install what they
# need (nsjail, a pandas/numpy Python environment) into .tools/ first; see hack/setup.sh.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
TOOLS := $(CURDIR)/.tools

# The sandbox's installation, passed to the binary as environment (see `pyexec serve --help`).
export PYEXEC_NSJAIL ?= $(TOOLS)/nsjail/bin/nsjail
export PYEXEC_NSJAIL_CONFIG ?= $(CURDIR)/nsjail.cfg
export PYEXEC_PYTHON_ENV ?= $(TOOLS)/python

.PHONY: all setup build run test unit-test integration-test client-test container-test lint crd-check docs docs-check check-leftovers bench client-bench crd help

all: build

##@ Use

# `##@ Section` lines head the sections of `make help`; a section named twice (in an included
# file too) is listed once, where it first appears.
help: ## List the targets, by section
	@awk -F':.*## ' '/^##@ / { s = substr($$0, 5); if (!(s in seen)) { seen[s]; order[++n] = s }; next } \
	  /^[a-zA-Z0-9_-]+:.*## / { items[s] = items[s] sprintf("  %-18s %s\n", $$1, $$2) } \
	  END { for (i = 1; i <= n; i++) printf "%s%s\n%s", (i > 1 ? "\n" : ""), order[i], items[order[i]] }' $(MAKEFILE_LIST)

setup: ## Install nsjail and the sandbox Python environment into .tools/ (pinned)
	@bash hack/setup.sh

build: setup ## Build the release binary
	$(CARGO) build --release --locked

run: build ## Start the service on $(LISTEN) (local placement)
	./target/release/pyexec serve --listen $(LISTEN)

##@ Test

test: setup lint crd-check docs-check helm-lint unit-test integration-test client-test gvisor-test container-test check-leftovers ## Run every test
	@echo "make test: all checks passed"

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit-test: ## Unit tests of the pure functions
	$(CARGO) test --locked --lib --bins

integration-test: setup ## Real server, real nsjail, real Python over HTTP (hostile cases with the pool on and off)
	$(CARGO) test --locked --tests -- --test-threads=4

# The Python client (clients/python) and the MCP server, tested through real clients: a virtual
# environment in .venv-client/ (git-ignored) with the hash-pinned test requirements, the package
# installed from the checkout, mypy --strict over it, then pytest against real `pyexec serve`s.
CLIENT_PYTHON ?= /usr/bin/python3
CLIENT_VENV := $(CURDIR)/.venv-client
CLIENT_REQUIREMENTS := clients/python/requirements-test.txt

$(CLIENT_VENV)/.installed: $(CLIENT_REQUIREMENTS)
	rm -rf $(CLIENT_VENV)
	$(CLIENT_PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --require-hashes -r $(CLIENT_REQUIREMENTS)
	touch $@

client-test: setup $(CLIENT_VENV)/.installed ## The Python client and the MCP server, through real clients (pytest, mypy)
	$(CARGO) build --locked
	$(CLIENT_VENV)/bin/pip install --quiet --no-deps --no-build-isolation --force-reinstall ./clients/python
	cd clients/python && $(CLIENT_VENV)/bin/mypy
	cd clients/python && PYEXEC_BIN=$(CURDIR)/target/debug/pyexec $(CLIENT_VENV)/bin/pytest -q

crd-check: ## Fail when crds/ or the chart's CRD is stale
	$(CARGO) test --locked --test crd
	bash hack/sync-chart-crd.sh --check

docs-check: ## Fail when docs/configuration.md, docs/metrics.md or docs/openapi.json differs from what the code generates
	@$(CARGO) run --locked --quiet -- docs configuration | diff -u docs/configuration.md - || { echo "docs/configuration.md is stale: run make docs"; exit 1; }
	@$(CARGO) run --locked --quiet -- docs metrics | diff -u docs/metrics.md - || { echo "docs/metrics.md is stale: run make docs"; exit 1; }
	@$(CARGO) run --locked --quiet -- docs openapi | diff -u docs/openapi.json - || { echo "docs/openapi.json is stale: run make docs"; exit 1; }

# Both images built from their Dockerfiles (buildah, the tags `make cluster-images` reuses) and
# run by podman exactly as images/README.md tells a Docker user; podman is installed with apt-get
# and configured for the run only (hack/container/container-test.sh). Needs root.
container-test: setup ## Run the images with podman as images/README.md says (installs podman)
	@CARGO="$(CARGO)" bash hack/container/container-test.sh

container-cluster-test: ## Run the service image with podman against the running cluster, as images/README.md says
	@bash hack/container/service-on-cluster.sh

check-leftovers: ## Assert no sandbox process, cgroup or temp file outlived the tests
	@bash hack/check-leftovers.sh

# The sandbox inside gVisor (runsc built from the Go module proxy, cached outside the repository).
include hack/gvisor.mk

##@ Kubernetes

# The Kubernetes placement's tooling: helm and kind, the chart's checks, the defaults both clusters
# share (see the file).
include hack/kube.mk

##@ Cluster for the e2e suite (CLUSTER=packaged, the default, or CLUSTER=kind)

# Which cluster the verbs below act on:
#   packaged  a real single-node Kubernetes built from package registries, as root, without a
#             Docker engine or an image registry; what CI runs (ci/cluster/)
#   kind      kind with gVisor, images built with docker; needs a Docker engine (hack/kind/)
# Either way: make helm cluster-up cluster-images cluster-deploy cluster-e2e; make cluster-down
CLUSTER ?= packaged
ifneq ($(filter cluster-%,$(MAKECMDGOALS)),)
ifeq ($(filter $(CLUSTER),packaged kind),)
$(error CLUSTER=$(CLUSTER): the cluster is packaged (the default) or kind)
endif
endif

.PHONY: cluster-up cluster-images cluster-deploy cluster-e2e cluster-measure cluster-down
# The recipes are in the two files included below, each for its own value of CLUSTER.
cluster-up: ## Start the cluster with gVisor (runsc) and the gvisor RuntimeClass
cluster-images: ## Build the sandbox and service images and put them into the cluster's node
cluster-deploy: ## helm upgrade --install the chart into the cluster with those images
cluster-e2e: ## Run the e2e suite against the deployed API (E2E_TESTS=part-of-a-name picks cases; prints the cluster's state on failure)
cluster-measure: ## (packaged) Pod start, control-plane memory, API latencies, load and CPU (MEASURE_WHAT=memory,pods,api,burst,executions,load,runsc picks parts)
cluster-down: ## Delete the cluster (packaged: fails if any process, mount or rule is left)

include ci/cluster/cluster.mk
include hack/kind/cluster.mk

##@ Development

crd: ## Regenerate crds/ and the chart's copy from the Rust types
	$(CARGO) run --locked --quiet -- crd > crds/pythonexecution.yaml
	bash hack/sync-chart-crd.sh

# The reference pages generated from the code by `pyexec docs`, a hidden subcommand.
docs: ## Regenerate docs/configuration.md, docs/metrics.md and docs/openapi.json from the code
	$(CARGO) run --locked --quiet -- docs configuration > docs/configuration.md
	$(CARGO) run --locked --quiet -- docs metrics > docs/metrics.md
	$(CARGO) run --locked --quiet -- docs openapi > docs/openapi.json

client-bench: build $(CLIENT_VENV)/.installed ## Latency of one call through the Python client, MCP stdio and MCP HTTP, beside raw HTTP (RUNS=100)
	$(CLIENT_VENV)/bin/pip install --quiet --no-deps --no-build-isolation --force-reinstall ./clients/python
	PYEXEC_BIN=$(CURDIR)/target/release/pyexec $(CLIENT_VENV)/bin/python clients/python/bench.py $(or $(RUNS),100)

bench: build ## Latency and throughput against bare python3, side by side (MODE=mixed: hello under hostile load)
	$(CARGO) run --release --locked --example bench -- $(MODE)
