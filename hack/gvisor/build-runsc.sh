#!/usr/bin/env bash
# Builds runsc and containerd-shim-runsc-v1 from the Go module proxy at the pinned gVisor
# pseudo-version GVISOR_VERSION (hack/defaults.env) and caches them OUTSIDE the repository
# (go_build_cached, hack/lib.sh):
#   ${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/gvisor-<version>/bin/{runsc,containerd-shim-runsc-v1}
# A second run finds them there and returns at once. Prints the bin directory on stdout.
#
# The module gvisor.dev/gvisor is served from gVisor's generated `go` branch (the tree with the
# *_autogen.go files). The proxy refuses the query `@go` (403); `@latest` resolves to the `go`
# branch head; GVISOR_VERSION pins one such head as a pseudo-version
# (v0.0.0-20260905035102-160fafc42237 is commit 160fafc42237 of the go branch).
# A cold build takes minutes.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/../lib.sh"
go_build_cached --ldflags "-X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
  "${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/gvisor-$GVISOR_VERSION" gvisor.dev/gvisor "$GVISOR_VERSION" \
  runsc=gvisor.dev/gvisor/runsc containerd-shim-runsc-v1=gvisor.dev/gvisor/shim
