#!/usr/bin/env bash
# Images for the local cluster, without a Docker engine or a registry (make cluster-images):
#   images.sh pause    a pause image from a static pause binary (ci/cluster/pause.c), imported
#                      into containerd as registry.k8s.io/pause:3.10 (up.sh calls this)
#   images.sh base     debian:bookworm-slim made locally out of Debian packages (mmdebstrap),
#                      cached under $PYEXEC_CLUSTER_CACHE/debian-bookworm-slim/, loaded into buildah
#   images.sh build    cargo build --release, then buildah builds images/sandbox/Dockerfile and
#                      images/service/Dockerfile (the Dockerfiles users build with Docker) with
#                      the binary just built (PYEXEC_BINARY=prebuilt), from that base image
#   images.sh import   exports both from buildah and imports them into containerd's k8s.io namespace
#   images.sh          (no argument) base, build, import
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"

CARGO=${CARGO:-cargo}
SERVICE_REF=$(qualify "$SERVICE_IMAGE_REPO:$IMAGE_TAG")
SANDBOX_REF=$(qualify "$SANDBOX_IMAGE_REPO:$IMAGE_TAG")
PAUSE_REF=registry.k8s.io/pause:3.10
BASE_REF=docker.io/library/debian:bookworm-slim
BASE_DIR=$PYEXEC_CLUSTER_CACHE/debian-bookworm-slim

containerd_up() { [ -S "$CONTAINERD_SOCK" ] && ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

cmd_pause() {
  local sum dir
  sum=$(sha256sum "$HERE/pause.c" | cut -c1-12)
  dir=$PYEXEC_CLUSTER_CACHE/pause-$sum
  if [ ! -f "$dir/pause.tar" ]; then
    clog "building the pause image ($PAUSE_REF) from ci/cluster/pause.c"
    mkdir -p "$dir/rootfs"
    gcc -Os -static -s -o "$dir/rootfs/pause" "$HERE/pause.c"
    local c
    c=$(buildah from scratch)
    buildah copy --quiet "$c" "$dir/rootfs/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah commit --quiet --rm "$c" "$PAUSE_REF" >/dev/null
    rm -f "$dir/pause.tar.part"
    buildah push --quiet "$PAUSE_REF" "docker-archive:$dir/pause.tar.part:$PAUSE_REF"
    mv "$dir/pause.tar.part" "$dir/pause.tar"
  fi
  containerd_up || cdie "containerd is not running (make cluster-up)"
  ctr_k8s images import --no-unpack=false "$dir/pause.tar" >/dev/null
  ctr_k8s images label "$PAUSE_REF" io.cri-containerd.pinned=pinned >/dev/null
}

cmd_base() {
  if [ ! -f "$BASE_DIR/rootfs.tar" ]; then
    clog "making $BASE_REF out of Debian packages (mmdebstrap, minbase)"
    mkdir -p "$BASE_DIR"
    mmdebstrap --variant=minbase --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --aptopt='Acquire::Languages "none"' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$BASE_DIR/rootfs.tar.part" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" >&2
    mv "$BASE_DIR/rootfs.tar.part" "$BASE_DIR/rootfs.tar"
    buildah rmi "$BASE_REF" >/dev/null 2>&1 || true
  fi
  if ! buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    local c
    c=$(buildah from scratch)
    buildah add --quiet "$c" "$BASE_DIR/rootfs.tar" / >/dev/null
    buildah config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    buildah commit --quiet --rm "$c" "$BASE_REF" >/dev/null
    clog "loaded $BASE_REF into buildah"
  fi
}

remove_new_containers() {
  local c
  for c in $(buildah containers -q); do
    grep -qxF "$c" <<<"$1" || buildah rm "$c" >/dev/null
  done
}

cmd_build() {
  cmd_base
  clog "cargo build --release --bin pyexec"
  (cd "$REPO" && "$CARGO" build --release --locked --bin pyexec >&2)
  local ctx before
  ctx=$(mktemp -d)
  # buildah 1.28 leaves a mounted working container behind for each stage a COPY --from reads:
  # the ones this build made are removed (and so unmounted) when it ends.
  before=$(buildah containers -q)
  trap 'rm -rf "$ctx"; remove_new_containers "$before"' RETURN
  mkdir -p "$ctx/prebuilt" "$ctx/pip"
  install -m 0755 "${CARGO_TARGET_DIR:-$REPO/target}/release/pyexec" "$ctx/prebuilt/pyexec"
  # pip inside the build reaches PyPI; where the host trusts a TLS-inspecting proxy's CA, the
  # build's RUN steps get the host's CA bundle (bind mounts: nothing of it lands in the image).
  printf '[global]\ncert = /run/pyexec-build-ca.crt\n' >"$ctx/pip/pip.conf"
  local volumes=()
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    volumes=(-v "$ctx/pip/pip.conf:/etc/pip.conf:ro" -v /etc/ssl/certs/ca-certificates.crt:/run/pyexec-build-ca.crt:ro)
  fi
  local flags=(--pull=never --isolation=chroot --network=host --layers --format docker
    "${volumes[@]}" --build-arg PYEXEC_BINARY=prebuilt --build-context "prebuilt=$ctx/prebuilt")
  clog "buildah: images/sandbox/Dockerfile -> $SANDBOX_REF"
  (cd "$REPO" && buildah bud "${flags[@]}" -f images/sandbox/Dockerfile -t "$SANDBOX_REF" . >&2)
  clog "buildah: images/service/Dockerfile -> $SERVICE_REF"
  (cd "$REPO" && buildah bud "${flags[@]}" -f images/service/Dockerfile -t "$SERVICE_REF" . >&2)
}

cmd_import() {
  containerd_up || cdie "containerd is not running (make cluster-up)"
  local tmp ref
  tmp=$(mktemp -d /var/tmp/pyexec-images.XXXXXX)
  trap 'rm -rf "$tmp"' RETURN
  for ref in "$SANDBOX_REF" "$SERVICE_REF"; do
    buildah push --quiet "$ref" "docker-archive:$tmp/image.tar:$ref" >/dev/null
    ctr_k8s images import "$tmp/image.tar" >/dev/null
    rm -f "$tmp/image.tar"
    clog "imported $ref ($(buildah inspect --type image --format '{{.FromImageID}}' "$ref" | cut -c1-12))"
  done
}

case "${1:-all}" in
  pause) cmd_pause ;;
  base) cmd_base ;;
  build) cmd_build ;;
  import) cmd_import ;;
  all) cmd_build; cmd_import ;;
  *) echo "usage: $0 [pause|base|build|import]" >&2; exit 2 ;;
esac
