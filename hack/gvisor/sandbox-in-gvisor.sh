#!/usr/bin/env bash
# Runs the real `pyexec sandbox --isolation gvisor` inside gVisor (runsc, built or reused by
# build-runsc.sh), in a container made the way a sandbox pod is (root with only SYS_ADMIN, SETUID
# and SETGID, no new privileges, read-only root file system, the sandbox image's paths), once per
# case, and checks each printed envelope. Prints `gvisor-test: N passed, M failed`.
#
#   sudo hack/gvisor/sandbox-in-gvisor.sh                 # every case
#   sudo hack/gvisor/sandbox-in-gvisor.sh hello timeout   # only these
#   PYEXEC_BIN=target/release/pyexec PLATFORM=ptrace sudo hack/gvisor/sandbox-in-gvisor.sh
#   VERBOSE=1 PYEXEC_LOG=pyexec=debug sudo hack/gvisor/sandbox-in-gvisor.sh timeout  # + logs
#
# Needs root (runsc run), hack/setup.sh's .tools/nsjail and .tools/python, util-linux's setpriv
# and prlimit in the host's /usr (bound read-only into the container, as Debian images have
# them), and a built pyexec (default: the newer of target/{release,debug}/pyexec). Everything it
# makes lives in one temporary directory; every container, the directory and the host cgroups
# are removed on exit, failure included. Nothing leaves the sandbox: runsc --network=none, and the
# only address a case connects to is 127.0.0.1; interfaces are listed instead of probing outside.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PLATFORM=${PLATFORM:-systrap}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
VERBOSE=${VERBOSE:-}
export PYEXEC_LOG=${PYEXEC_LOG:-info}
log() { printf '[gvisor-test] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (runsc run needs it)"; exit 2; }
[ -x "$repo/.tools/nsjail/lib/bin/nsjail" ] && [ -x "$repo/.tools/python/bin/python3" ] || {
  log "run hack/setup.sh first (.tools/nsjail and .tools/python)"; exit 2; }
for tool in setpriv prlimit; do
  [ -x "/usr/bin/$tool" ] || { log "/usr/bin/$tool missing (util-linux)"; exit 2; }
done
if [ -z "${PYEXEC_BIN:-}" ]; then
  PYEXEC_BIN=$(ls -t "$repo"/target/{release,debug}/pyexec 2>/dev/null | head -1 || true)
fi
[ -n "$PYEXEC_BIN" ] && [ -x "$PYEXEC_BIN" ] || { log "no pyexec binary: cargo build --bin pyexec, or set PYEXEC_BIN"; exit 2; }
PYEXEC_BIN=$(readlink -f "$PYEXEC_BIN")

RUNSC="$("$here/build-runsc.sh")/runsc"
log "runsc: $("$RUNSC" --version | head -1), platform $PLATFORM; pyexec: $PYEXEC_BIN"

work=$(mktemp -d /tmp/pyexec-gvisor-test.XXXXXX)
cgroup_parent="pyexec-gvisor-test-$$"
containers=()
cleanup() {
  local id
  for id in "${containers[@]}"; do
    "$RUNSC" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  done
  # runsc removes each container's host cgroups on delete; their parent is ours to remove.
  for d in /sys/fs/cgroup/"$cgroup_parent" /sys/fs/cgroup/*/"$cgroup_parent"; do
    [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
  done
  # runsc --network=none keeps a bind mount of an empty network namespace in its root directory.
  if mountpoint -q "$work/state/null-netns" 2>/dev/null; then umount "$work/state/null-netns" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The rootfs: mount points, symlinks and the configuration, laid out as images/sandbox/Dockerfile
# lays out the image; every binary comes from a read-only bind mount declared in config.json.
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share,usr/local/bin,etc/pyexec,opt/nsjail,opt/pyexec-python,proc,dev,sys,tmp}
ln -s usr/bin "$rootfs/bin"; ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"; ln -s usr/sbin "$rootfs/sbin"
: >"$rootfs/usr/local/bin/pyexec"
ln -s /opt/nsjail/lib/bin/nsjail "$rootfs/usr/local/bin/nsjail"
install -m 0644 "$repo/nsjail-gvisor.cfg" "$rootfs/etc/pyexec/nsjail-gvisor.cfg"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

# config.json for one case: what the controller's pod gives the container (src/controller/pod.rs).
make_spec() { # make_spec BUNDLE SCRIPT_FILE LIMITS_JSON
  python3 - "$@" "$rootfs" "$repo" "$PYEXEC_BIN" "$cgroup_parent" <<'PY'
import json, os, sys
bundle, script_file, limits, rootfs, repo, pyexec, cgroup_parent = sys.argv[1:]
caps = ["CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"]
ro = ["bind", "ro", "nosuid", "nodev"]
env = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYEXEC_ISOLATION": "gvisor",
    "PYEXEC_NSJAIL": "/opt/nsjail/lib/bin/nsjail",
    "PYEXEC_NSJAIL_CONFIG": "/etc/pyexec/nsjail.cfg",
    "PYEXEC_NSJAIL_GVISOR_CONFIG": "/etc/pyexec/nsjail-gvisor.cfg",
    "PYEXEC_PYTHON_ENV": "/opt/pyexec-python",
    "PYEXEC_SCRIPT": open(script_file).read(),
    "PYEXEC_LOG": os.environ["PYEXEC_LOG"],
    # Must not reach the script.
    "SECRET_TOKEN": "must-not-reach-the-jail",
}
# The controller sets each limit and its maximum to the resolved value.
for name, value in json.loads(limits).items():
    env[f"PYEXEC_{name}"] = str(value)
    env[f"PYEXEC_MAX_{name}"] = str(value)
mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    # The pod's scratch emptyDir.
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=16384k"]},
]
for sub in ("bin", "sbin", "lib", "lib64", "share"):
    mounts.append({"destination": f"/usr/{sub}", "type": "bind", "source": f"/usr/{sub}", "options": ro})
mounts += [
    {"destination": "/usr/local/bin/pyexec", "type": "bind", "source": pyexec, "options": ro},
    {"destination": "/opt/nsjail", "type": "bind", "source": f"{repo}/.tools/nsjail", "options": ro},
    {"destination": "/opt/pyexec-python", "type": "bind", "source": f"{repo}/.tools/python", "options": ro},
]
spec = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["pyexec", "sandbox", "--isolation", "gvisor"],
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": "/tmp",
        # What containerd's CRI makes of capabilities drop [ALL] + add [...] for a root container.
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        # allowPrivilegeEscalation: false.
        "noNewPrivileges": True,
    },
    "root": {"path": rootfs, "readonly": True},
    "hostname": "pyexec-sandbox-pod",
    "mounts": mounts,
    "linux": {
        # The pod's limits, enforced on the whole sandbox by the host cgroup runsc makes.
        "resources": {"memory": {"limit": 1 << 30}, "pids": {"limit": 1024}},
        "cgroupsPath": f"/{cgroup_parent}/" + bundle.rstrip("/").split("/")[-1],
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
json.dump(spec, open(f"{bundle}/config.json", "w"), indent=1)
PY
}

# Cases: name, limits (JSON), script, and a Python check of the envelope `e` (and `ms`, the wall
# time of the whole `runsc run`) that returns "" when it holds, else what went wrong.
declare -A LIMITS SCRIPT CHECK
names=()
add_case() { names+=("$1"); LIMITS[$1]=$2; SCRIPT[$1]=$3; CHECK[$1]=$4; }

add_case hello '{}' '
def main():
    print("hello from main")
    return {"hello": "world"}
' '
"" if e["outcome"] == "success" and e["result"] == {"hello": "world"} and e["stdout"] == "hello from main\n" and e["returncode"] == 0 else "not a success with the dict"'

add_case pandas '{}' '
def main():
    import pandas as pd
    import numpy as np
    data = {"A": [1, 2, 3], "B": [4, 5, 6]}
    df = pd.DataFrame(data)
    return {"sum": int(np.sum(df["A"]))}
' '
"" if e["outcome"] == "success" and e["result"] == {"sum": 6} else "no {\"sum\": 6}"'

add_case network '{"TIMEOUT_SECONDS": 10}' '
import socket
def attempt(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, 80))
        return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        s.close()
def main():
    # By index (an ioctl): the seccomp policy refuses the netlink socket if_nameindex() needs.
    interfaces = []
    for index in range(1, 64):
        try:
            interfaces.append(socket.if_indextoname(index))
        except OSError:
            pass
    interfaces.sort()
    return {"loopback": attempt("127.0.0.1"), "interfaces": ",".join(interfaces)}
' '
"" if e["outcome"] == "success" and e["result"]["loopback"] != "connected" and "timed out" not in e["result"]["loopback"] and e["result"]["interfaces"] == "lo" else "a connection succeeded or hung, or an interface other than lo exists"'

add_case readonly '{}' '
import os
def attempt(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"
def main():
    paths = ["/escape", "/usr/lib/escape", "/opt/pyexec/escape", "/dev/shm/../escape", "/etc/escape"]
    result = {p: attempt(p) for p in paths}
    result["/tmp/ok"] = attempt("/tmp/ok")
    return result
' '
"" if e["outcome"] == "success" and e["result"].pop("/tmp/ok") == "written" and all(v != "written" for v in e["result"].values()) else "a write outside /tmp succeeded, or /tmp is not writable"'

add_case environment '{}' '
import os
def main():
    return dict(os.environ)
' '
"" if e["outcome"] == "success" and "SECRET_TOKEN" not in e["result"] and not any(k.startswith("PYEXEC") for k in e["result"]) and set(e["result"]) <= {"LANG", "LC_ALL", "PYTHONIOENCODING", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "HOME", "TMPDIR", "PATH", "MPLCONFIGDIR"} else "unexpected variables"'

add_case memory '{"MEMORY_MB": 256}' '
def main():
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
' '
"" if e["outcome"] == "memory_limit" and e["error"].startswith("Memory limit of 256 MiB exceeded") or e["outcome"] == "exception" and e["error"].startswith("MemoryError") else "no clear memory outcome"'

add_case timeout '{"TIMEOUT_SECONDS": 1}' '
def main():
    while True:
        pass
' '
"" if e["outcome"] == "timeout" and e["error"] == "Execution timed out after 1 s (wall-clock limit)" and e["duration_ms"] < 1900 else "no timeout within 1.9 s (nsjail'"'"'s own time limit is 2 s)"'

add_case identity '{}' '
import os
def main():
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
' '
"" if e["outcome"] == "success" and e["result"] == {"uid": 65534, "euid": 65534, "gid": 65534, "groups": []} else "not uid/gid 65534 without groups"'

add_case seccomp '{}' '
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(nr, *args):
    return 0 if libc.syscall(nr, *args) == 0 else ctypes.get_errno()
def family(af):
    try:
        socket.socket(af, socket.SOCK_RAW if af == 16 else socket.SOCK_STREAM).close()
        return 0
    except OSError as exc:
        return exc.errno
def main():
    # x86-64 numbers: unshare 272 (CLONE_NEWUSER), clone3 435, personality 135 (ADDR_NO_RANDOMIZE).
    return {"unshare": errno_of(272, 0x10000000), "clone3": errno_of(435, 0, 0),
            "personality": errno_of(135, 0x0040000), "netlink": family(16), "alg": family(38),
            "unix": family(1)}
' '
"" if e["outcome"] == "success" and e["result"] == {"unshare": 1, "clone3": 38, "personality": 1, "netlink": 1, "alg": 1, "unix": 0} else "a call the seccomp policy denies was not refused with its errno"'

selected=("$@")
passed=0 failed=0 failures=()
mkdir -p "$work/state"
for name in "${names[@]}"; do
  if [ ${#selected[@]} -gt 0 ] && ! printf '%s\n' "${selected[@]}" | grep -qx "$name"; then continue; fi
  bundle="$work/bundles/$name"
  mkdir -p "$bundle"
  printf '%s' "${SCRIPT[$name]}" >"$bundle/script.py"
  make_spec "$bundle" "$bundle/script.py" "${LIMITS[$name]}"
  id="pyexec-test-$name-$$"
  containers+=("$id")
  rc=0 start=$(date +%s%N)
  timeout --kill-after=5 "$RUN_TIMEOUT" "$RUNSC" --root "$work/state" --network=none --platform="$PLATFORM" \
    run --bundle "$bundle" "$id" >"$bundle/stdout" 2>"$bundle/stderr" </dev/null || rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  "$RUNSC" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  verdict=$(python3 - "$bundle/stdout" "${CHECK[$name]}" "$ms" <<'PY' 2>&1 || true
import json, sys
path, check, ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
if not lines:
    print("FAIL: no envelope on stdout")
    sys.exit()
e = json.loads(lines[-1])
problem = eval(check.strip(), {"e": dict(e, result=dict(e["result"] or {}) if e.get("result") is not None else None), "ms": ms})
short = {k: e[k] for k in ("outcome", "result", "returncode", "error", "duration_ms") if k in e}
print(("FAIL: " + problem + " | " if problem else "ok | ") + json.dumps(short)[:400])
PY
)
  if [[ $verdict == ok* ]]; then
    passed=$((passed + 1))
    [ -z "$VERBOSE" ] || { log "$name: runsc rc=$rc; stderr:"; tail -n 15 "$bundle/stderr" | sed 's/^/    /' >&2; }
  else
    failed=$((failed + 1)); failures+=("$name")
    log "$name: runsc rc=$rc; stderr:"; tail -n 15 "$bundle/stderr" | sed 's/^/    /' >&2
  fi
  printf '%-12s %6sms  %s\n' "$name" "$ms" "$verdict"
done
echo "gvisor-test: $passed passed, $failed failed${failures:+ (${failures[*]})}"
[ "$failed" = 0 ]
