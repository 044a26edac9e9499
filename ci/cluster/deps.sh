#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs (containerd, runc, CNI plugins, buildah,
# mmdebstrap, nftables, ...) with apt-get, only when one of their commands is missing.
set -euo pipefail
# shellcheck source=ci/cluster/config.sh
. "$(dirname "$0")/config.sh"
missing=0
for c in containerd ctr runc buildah mmdebstrap iptables nft ip openssl curl gcc perl; do
  command -v "$c" >/dev/null 2>&1 || { clog "missing command: $c"; missing=1; }
done
[ -x "$CNI_BIN_DIR/bridge" ] && [ -x "$CNI_BIN_DIR/host-local" ] || missing=1
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing=1
if [ "$missing" = 1 ]; then
  clog "installing Debian packages: $DEBIAN_PACKAGES"
  apt-get update -qq
  # shellcheck disable=SC2086 # a word list
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBIAN_PACKAGES >&2
fi
