# The packaged cluster (CLUSTER=packaged, the default): a real single-node Kubernetes on this
# machine, built from package registries (no Docker engine, no image registry); the cluster CI
# runs the e2e suite on. Included by the top Makefile, which declares the cluster verbs, after
# hack/kube.mk, whose helm target and variables it uses.
#   make helm cluster-up cluster-images cluster-deploy cluster-e2e; make cluster-down
# Needs root. Binaries are built once into $(PYEXEC_CLUSTER_CACHE) (outside the repository);
# a running cluster's state is under $(CLUSTER_RUN_DIR). Details: the headers of ci/cluster/*.sh.
# Run sandbox pods under runc with CLUSTER_RUNTIME_CLASS= (empty); the default is the gvisor
# RuntimeClass.

# The release, images, E2E_PORT, K8S_VERSION, ETCD_VERSION and CLUSTER_RUNTIME_CLASS are
# hack/defaults.env's (read by hack/kube.mk), the same as the kind cluster's.
CLUSTER_RUN_DIR ?= /var/lib/pyexec-cluster/run

CLUSTER_ENV = PYEXEC_CLUSTER_CACHE="$(or $(PYEXEC_CLUSTER_CACHE),/var/cache/pyexec-cluster)" \
	K8S_VERSION="$(K8S_VERSION)" ETCD_VERSION="$(ETCD_VERSION)" CLUSTER_RUN_DIR="$(CLUSTER_RUN_DIR)" \
	CLUSTER_RUNTIME_CLASS="$(CLUSTER_RUNTIME_CLASS)" HELM="$(HELM)" HELM_CHART="$(HELM_CHART)" \
	HELM_RELEASE="$(HELM_RELEASE)" HELM_NAMESPACE="$(HELM_NAMESPACE)" SANDBOX_NAMESPACE="$(SANDBOX_NAMESPACE)" \
	IMAGE_TAG="$(IMAGE_TAG)" SERVICE_IMAGE_REPO="$(SERVICE_IMAGE_REPO)" SANDBOX_IMAGE_REPO="$(SANDBOX_IMAGE_REPO)" \
	E2E_PORT="$(E2E_PORT)" CARGO="$(or $(CARGO),cargo)"

ifeq ($(CLUSTER),packaged)
# Builds (once, cached) and starts the control plane, containerd with runc and runsc, the kubelet.
cluster-up:
	@$(CLUSTER_ENV) bash ci/cluster/up.sh

# buildah builds both images (no Docker) and imports them into the cluster's containerd.
cluster-images:
	@$(CLUSTER_ENV) bash ci/cluster/images.sh

cluster-deploy: helm
	@$(CLUSTER_ENV) bash ci/cluster/deploy.sh

cluster-e2e:
	@$(CLUSTER_ENV) bash ci/cluster/e2e.sh

cluster-measure:
	@$(CLUSTER_ENV) bash ci/cluster/measure.sh

# Leaves no process, mount, device, iptables rule or cgroup (ci/cluster/check-down.sh).
cluster-down:
	@$(CLUSTER_ENV) bash ci/cluster/down.sh
endif
