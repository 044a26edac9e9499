#!/usr/bin/env bash
# `make container-test`: both images run by a container engine the way images/README.md tells a
# Docker user to run them (tests/container/images.rs), with podman, as root:
#   1. podman from Debian's archive (apt-get, like hack/setup.sh), with slirp4netns; buildah and
#      mmdebstrap for the image build (ci/cluster/deps.sh's way);
#   2. both images built from their Dockerfiles by ci/cluster/images.sh build (buildah, whose
#      storage podman shares; the base image made locally with mmdebstrap; the pyexec binary
#      prebuilt by cargo) under the tags `make cluster-images` builds again from the same cache,
#      and tagged pyexec-sandbox and pyexec-service, the names the README's commands use;
#   3. podman configured for this run only (CONTAINERS_CONF, a file in a temporary directory that
#      also holds podman's own database and run state): containers get the slirp4netns network
#      (a user-mode stack inside the container's namespace: no bridge, no iptables rule, no
#      route on the host, so nothing can collide with the cluster's 10.88.0.0/16), and their
#      default ulimits are this machine's hard limits (runc cannot raise them here);
#   4. the tests, then the host checked against what it was before: no container, no process
#      of podman's, no network device, route, forwarding setting, iptables chain or cgroup
#      added, and hack/check-leftovers.sh.
# Needs root. Idempotent; everything it adds is removed on exit, failure included.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$REPO/ci/cluster/config.sh"
CARGO=${CARGO:-cargo}
log() { printf '[container-test] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (podman runs the containers as root)"; exit 2; }

missing=()
for c in podman slirp4netns buildah mmdebstrap; do command -v "$c" >/dev/null || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { log "missing ${missing[*]}: install them with your package manager"; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "$(podman --version), $(slirp4netns --version | head -1), $(buildah --version)"

started=$(date +%s)
bash "$REPO/ci/cluster/images.sh" build
for repo in "$SANDBOX_IMAGE_REPO" "$SERVICE_IMAGE_REPO"; do
  buildah tag "$(qualify "$repo:$IMAGE_TAG")" "$repo" >/dev/null
done
log "images built in $(($(date +%s) - started)) s; tagged $SANDBOX_IMAGE_REPO and $SERVICE_IMAGE_REPO"

work=$(mktemp -d /var/tmp/pyexec-podman.XXXXXX)
# shellcheck source=hack/container/podman-conf.sh
. "$HERE/podman-conf.sh"
podman_conf "$work"

snapshot() {
  echo "== network devices"; ip -o link show | awk -F': ' '{print $2}' | grep -v '^veth' | sort
  echo "== routes"; ip route show | grep -v ' dev veth' | sort
  echo "== forwarding"; sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding 2>/dev/null || true
  echo "== iptables chains"
  for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
      "$cmd" -t "$table" -S 2>/dev/null | awk -v t="$cmd $table" '$1 == "-N" && $2 !~ /^KUBE-/ {print t, $2}'
    done
  done | sort
  echo "== top-level cgroups"
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | grep -vE '/(kubepods|k8s\.io)' | sort
}
before=$(snapshot)

cleanup() {
  local status=$?
  podman ps --all --quiet | while read -r id; do podman rm --force --time 5 "$id" >/dev/null 2>&1 || true; done
  podman_cgroups_remove "$before"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "podman configuration ($CONTAINERS_CONF):"
grep -v '^#' "$CONTAINERS_CONF" | sed '/^$/d; s/^/  /' >&2
(cd "$REPO" && PYEXEC_CONTAINER_ENGINE=podman "$CARGO" test --locked --test container_images -- --test-threads=1)

remaining=$(podman ps --all --quiet)
[ -z "$remaining" ] || { log "containers left behind: $remaining"; exit 1; }
podman_cgroups_remove "$before"
# A process of podman's names its run state (conmon, slirp4netns, rootlessport); zombies are
# only waiting for init to reap them.
strays=$(ps -eo pid=,stat=,args= | awk -v w="$work" '$2 !~ /^Z/ && index($0, w) && !/awk/' || true)
[ -z "$strays" ] || { log "processes of podman left running: $strays"; exit 1; }
after=$(snapshot)
if [ "$before" != "$after" ]; then
  log "the host changed:"; diff <(echo "$before") <(echo "$after") >&2 || true; exit 1
fi
bash "$REPO/hack/check-leftovers.sh"
log "passed in $(($(date +%s) - started)) s (images included); nothing left on the host"
