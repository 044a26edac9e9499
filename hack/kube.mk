# The Kubernetes placement's tooling: helm and kind (pinned builds), the Helm chart's checks, and
# the variables both clusters for the e2e suite use (CLUSTER=packaged: ci/cluster/cluster.mk;
# CLUSTER=kind: hack/kind/cluster.mk). Included by the top Makefile (`include hack/kube.mk`),
# before those two; every variable below is a default that the command line or the environment
# can override, e.g.
#   make cluster-deploy CLUSTER=kind IMAGE_TAG=v0.1.0 KIND_CLUSTER=other
# The targets here work without a Docker engine.

# The defaults both clusters share (the release, namespaces, images, E2E_PORT, versions):
# hack/defaults.env, whose KEY=value lines are read here as `KEY ?= value`, as bash reads them
# (hack/lib.sh), so the command line and the environment override them alike.
$(foreach kv,$(shell grep -E '^[A-Z_][A-Z0-9_]*=' $(CURDIR)/hack/defaults.env),\
  $(eval $(firstword $(subst =, ,$(kv))) ?= $(patsubst $(firstword $(subst =, ,$(kv)))=%,%,$(kv))))

KUBE_TOOLS_BIN ?= $(CURDIR)/.tools/bin

# Pinned tools, built from the Go module proxy into $(KUBE_TOOLS_BIN) (hack/go-tool.sh).
HELM_VERSION ?= v3.21.4
# client-go v0.36 inside helm v3.21: the Kubernetes version `helm template` and `helm lint`
# assume (otherwise v1.20, older than the chart's kubeVersion).
HELM_KUBE_MINOR ?= 36
KIND_VERSION ?= v0.33.0
HELM ?= $(KUBE_TOOLS_BIN)/helm
KIND ?= $(KUBE_TOOLS_BIN)/kind
# kubectl is not built here: it comes with Docker Desktop, or from your package manager.
KUBECTL ?= kubectl
DOCKER ?= docker

KIND_CONFIG ?= $(CURDIR)/kind-config.yaml
# The kind cluster's images: built with docker and loaded into kind by `make cluster-images CLUSTER=kind`.
SERVICE_IMAGE ?= $(SERVICE_IMAGE_REPO):$(IMAGE_TAG)
SANDBOX_IMAGE ?= $(SANDBOX_IMAGE_REPO):$(IMAGE_TAG)
# More `docker build` flags, e.g. --provenance=false where `kind load` trips over attestations.
DOCKER_BUILD_FLAGS ?=

# Where hack/gvisor/build-runsc.sh caches runsc and its containerd shim (outside the repository).
PYEXEC_CLUSTER_CACHE ?= $(if $(filter 0,$(shell id -u)),/var/cache/pyexec-cluster,$(HOME)/.cache/pyexec-cluster)

HELM_LDFLAGS = -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR)

# Passed to hack/helm-lint.sh and hack/kind/cluster.sh, which hold the logic.
KUBE_ENV = HELM="$(HELM)" KIND="$(KIND)" KUBECTL="$(KUBECTL)" DOCKER="$(DOCKER)" \
	KIND_CLUSTER="$(KIND_CLUSTER)" KIND_CONFIG="$(KIND_CONFIG)" HELM_CHART="$(HELM_CHART)" \
	HELM_RELEASE="$(HELM_RELEASE)" HELM_NAMESPACE="$(HELM_NAMESPACE)" SANDBOX_NAMESPACE="$(SANDBOX_NAMESPACE)" \
	SERVICE_IMAGE_REPO="$(SERVICE_IMAGE_REPO)" SANDBOX_IMAGE_REPO="$(SANDBOX_IMAGE_REPO)" IMAGE_TAG="$(IMAGE_TAG)" \
	SERVICE_IMAGE="$(SERVICE_IMAGE)" SANDBOX_IMAGE="$(SANDBOX_IMAGE)" E2E_PORT="$(E2E_PORT)" \
	CLUSTER_RUNTIME_CLASS="$(CLUSTER_RUNTIME_CLASS)" DOCKER_BUILD_FLAGS="$(DOCKER_BUILD_FLAGS)" \
	PYEXEC_CLUSTER_CACHE="$(PYEXEC_CLUSTER_CACHE)" CARGO="$(or $(CARGO),cargo)"

.PHONY: helm kind helm-lint kind-config-check sync-chart-crd

##@ Kubernetes

helm: ## Build helm (pinned) into .tools/bin (skipped when already there)
	@TOOLS_BIN="$(KUBE_TOOLS_BIN)" bash hack/go-tool.sh helm helm.sh/helm/v3/cmd/helm $(HELM_VERSION) "$(HELM_LDFLAGS)"

kind: ## Build kind (pinned) into .tools/bin (skipped when already there)
	@TOOLS_BIN="$(KUBE_TOOLS_BIN)" bash hack/go-tool.sh kind sigs.k8s.io/kind $(KIND_VERSION) "-s -w"

helm-lint: helm kind-config-check ## Lint the chart, check its CRD copy, run tests/hermetic/chart.rs (every value set)
	@$(KUBE_ENV) bash hack/helm-lint.sh

kind-config-check: ## Read kind-config.yaml with kind's own v1alpha4 types, strictly (Go; no Docker needed)
	@command -v go >/dev/null || { echo "kind-config-check: Go is needed (https://go.dev/dl/)" >&2; exit 1; }
	@cd hack/kind/check-config && GOFLAGS=-buildvcs=false go run . "$(KIND_CONFIG)"

sync-chart-crd: ## Copy crds/pythonexecution.yaml into the chart
	@bash hack/sync-chart-crd.sh
