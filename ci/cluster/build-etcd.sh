#!/usr/bin/env bash
# Builds etcd (>= 3.5.11, which Kubernetes requires; Debian bookworm has only 3.4) from the Go module
# proxy at the pinned ETCD_VERSION (hack/defaults.env) and caches it OUTSIDE the repository:
#   $PYEXEC_CLUSTER_CACHE/etcd-<version>/bin/etcd
# go.etcd.io/etcd/server/v3 is the etcd command (package main). Its go.mod replaces the sibling
# modules with ../api etc., which `go install pkg@version` refuses, so it is built from a small
# consumer module that requires it (its requirements name the siblings at the same version): the
# way go_build_cached (hack/lib.sh) builds every binary. Prints the bin directory on stdout.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/../../hack/lib.sh"
go_build_cached "${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/etcd-$ETCD_VERSION" \
  go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd=go.etcd.io/etcd/server/v3
