# A real single-node Kubernetes on this machine, built from package registries (no Docker
# engine, no image registry): the CI flow for the e2e suite. Included by the top Makefile
# (`include hack/cluster.mk`, after hack/kube.mk, whose helm target and variables it uses).
#   make cluster-up cluster-images cluster-deploy cluster-e2e; make cluster-down
# Needs root. Binaries are built once into $(PYEXEC_CLUSTER_CACHE) (outside the repository);
# a running cluster's state is under $(CLUSTER_RUN_DIR). Details: the headers of hack/cluster/*.sh.
# Run sandbox pods under runc with CLUSTER_RUNTIME_CLASS= (empty); the default is the gvisor
# RuntimeClass.

# The release, images, E2E_PORT, K8S_VERSION, ETCD_VERSION and CLUSTER_RUNTIME_CLASS are
# hack/defaults.env's (read by hack/kube.mk), the same as the kind path's.
CLUSTER_RUN_DIR ?= /var/lib/pyexec-cluster/run

CLUSTER_ENV = PYEXEC_CLUSTER_CACHE="$(or $(PYEXEC_CLUSTER_CACHE),/var/cache/pyexec-cluster)" \
	K8S_VERSION="$(K8S_VERSION)" ETCD_VERSION="$(ETCD_VERSION)" CLUSTER_RUN_DIR="$(CLUSTER_RUN_DIR)" \
	CLUSTER_RUNTIME_CLASS="$(CLUSTER_RUNTIME_CLASS)" HELM="$(HELM)" HELM_CHART="$(HELM_CHART)" \
	HELM_RELEASE="$(HELM_RELEASE)" HELM_NAMESPACE="$(HELM_NAMESPACE)" SANDBOX_NAMESPACE="$(SANDBOX_NAMESPACE)" \
	IMAGE_TAG="$(IMAGE_TAG)" SERVICE_IMAGE_REPO="$(SERVICE_IMAGE_REPO)" SANDBOX_IMAGE_REPO="$(SANDBOX_IMAGE_REPO)" \
	E2E_PORT="$(E2E_PORT)" CARGO="$(or $(CARGO),cargo)"

.PHONY: cluster-up cluster-images cluster-deploy cluster-e2e cluster-down cluster-measure

cluster-up: ## Build (once, cached) and start a single-node Kubernetes with containerd, runc and gVisor
	@$(CLUSTER_ENV) bash hack/cluster/up.sh

cluster-images: ## buildah-build the sandbox and service images (no Docker) and import them into the cluster
	@$(CLUSTER_ENV) bash hack/cluster/images.sh

cluster-deploy: helm ## helm install charts/pyexec into the local cluster with the local images
	@$(CLUSTER_ENV) bash hack/cluster/deploy.sh

cluster-e2e: ## Run the e2e suite against the local cluster (prints pod and controller logs on failure)
	@$(CLUSTER_ENV) bash hack/cluster/e2e.sh

cluster-measure: ## Pod start latency (runc, gVisor), control-plane memory, API p50 latencies
	@$(CLUSTER_ENV) bash hack/cluster/measure.sh

cluster-down: ## Stop the local cluster; leaves no process, mount, device, iptables rule or cgroup
	@$(CLUSTER_ENV) bash hack/cluster/down.sh
