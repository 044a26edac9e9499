# The kind cluster (CLUSTER=kind): kind with gVisor (runsc), images built with docker and loaded
# into its node; needs a Docker engine. Included by the top Makefile, which declares the cluster
# verbs, after hack/kube.mk (the kind and helm targets, KUBE_ENV); hack/kind/cluster.sh holds the
# logic.
#   make helm cluster-up cluster-images cluster-deploy cluster-e2e CLUSTER=kind; make cluster-down CLUSTER=kind

ifeq ($(CLUSTER),kind)
# The cluster from kind-config.yaml, runsc installed into its node, the gvisor RuntimeClass.
cluster-up: kind kind-config-check
	@$(KUBE_ENV) bash hack/kind/cluster.sh up

cluster-images: kind
	@$(KUBE_ENV) bash hack/kind/cluster.sh images
	@$(KUBE_ENV) bash hack/kind/cluster.sh load

# Into the current kubectl context.
cluster-deploy: helm
	@$(KUBE_ENV) bash hack/kind/cluster.sh deploy

cluster-e2e:
	@$(KUBE_ENV) bash hack/kind/cluster.sh e2e

cluster-measure:
	@echo "cluster-measure measures the packaged cluster only (CLUSTER=packaged)" >&2; exit 1

cluster-down: kind
	$(KIND) delete cluster --name $(KIND_CLUSTER)
endif
