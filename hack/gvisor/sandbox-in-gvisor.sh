#!/usr/bin/env bash
# Runs the real `pyexec sandbox --isolation gvisor` inside gVisor (runsc, built or reused by
# build-runsc.sh), in a container made the way a sandbox pod is (root with only SYS_ADMIN, SETUID
# and SETGID, no new privileges, read-only root file system, the sandbox image's paths), once per
# case, and records what each run left: OUT/<case>/{stdout,stderr,exit_code,termination_message,ms}
# (and job.json, the document sent on stdin). It asserts nothing: tests/gvisor/gvisor_sandbox.rs reads
# OUT into the real `Envelope` type and checks every case (`make gvisor-test` runs both).
#
# Every case runs twice: `<case>` with the script in the environment (PYEXEC_SCRIPT, the case's
# limits as the settings), and `stdin_<case>` the way a pod started ahead gets it
# (`--job-on-stdin`: the pod's settings are the binary's defaults; once the sandbox's readiness
# line is on stderr, the job document with the case's limits is written to stdin and closed).
# A few cases exist only on stdin (stdin_only_cases below).
#
#   sudo hack/gvisor/sandbox-in-gvisor.sh OUT                       # every case
#   sudo hack/gvisor/sandbox-in-gvisor.sh OUT hello stdin_timeout   # only these
#   PYEXEC_BIN=target/release/pyexec PLATFORM=ptrace sudo hack/gvisor/sandbox-in-gvisor.sh OUT
#   PYEXEC_LOG=pyexec=debug sudo hack/gvisor/sandbox-in-gvisor.sh OUT timeout  # more in stderr
#
# Needs root (runsc run), hack/setup.sh's .tools/nsjail and .tools/python, util-linux's setpriv
# and prlimit in the host's /usr (bound read-only into the container, as Debian images have
# them), and a built pyexec (default: the newer of target/{release,debug}/pyexec). Everything else
# it makes lives in one temporary directory; every container, the directory and the host cgroups
# are removed on exit, failure included. Nothing leaves the sandbox: runsc --network=none, and the
# only address a case connects to is 127.0.0.1; interfaces are listed instead of probing outside.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PLATFORM=${PLATFORM:-systrap}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
export PYEXEC_LOG=${PYEXEC_LOG:-info}
# pyexec::sandbox::READY_MARKER (tests/gvisor/gvisor_sandbox.rs checks the two agree).
READY_MARKER="pyexec-sandbox: ready for one job"
log() { printf '[gvisor-test] %s\n' "$*" >&2; }

[ $# -ge 1 ] || { log "usage: $0 OUT [case...]"; exit 2; }
out=$1; shift
mkdir -p "$out"
out=$(cd "$out" && pwd)

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
mkdir -p "$rootfs"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share,usr/local/bin,etc/pyexec,opt/nsjail,opt/pyexec,proc,dev,sys,tmp}
ln -s usr/bin "$rootfs/bin"; ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"; ln -s usr/sbin "$rootfs/sbin"
: >"$rootfs/usr/local/bin/pyexec"
ln -s /opt/nsjail/lib/bin/nsjail "$rootfs/usr/local/bin/nsjail"
install -m 0644 "$repo/nsjail-gvisor.cfg" "$rootfs/etc/pyexec/nsjail-gvisor.cfg"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

# config.json for one case: what the controller's pod gives the container (src/controller/pod.rs).
# MODE cold: the script in PYEXEC_SCRIPT and the case's limits (env names) as the settings.
# MODE stdin: `--job-on-stdin`, the binary's default settings, and CASE_OUT/job.json, the job
# document (the case's limits, Limits' field names, over JOB_LIMITS) for the runner to send.
make_spec() { # make_spec BUNDLE CASE_OUT SCRIPT_FILE MODE LIMITS_JSON
  python3 - "$@" "$rootfs" "$repo" "$PYEXEC_BIN" "$cgroup_parent" "$JOB_LIMITS" <<'PY'
import json, os, sys
bundle, case_out, script_file, mode, limits, rootfs, repo, pyexec, cgroup_parent, job_limits = sys.argv[1:]
script = open(script_file, encoding="utf-8").read()
caps = ["CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"]
ro = ["bind", "ro", "nosuid", "nodev"]
args = ["pyexec", "sandbox", "--isolation", "gvisor"]
env = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYEXEC_ISOLATION": "gvisor",
    "PYEXEC_NSJAIL": "/opt/nsjail/lib/bin/nsjail",
    "PYEXEC_NSJAIL_CONFIG": "/etc/pyexec/nsjail.cfg",
    "PYEXEC_NSJAIL_GVISOR_CONFIG": "/etc/pyexec/nsjail-gvisor.cfg",
    "PYEXEC_PYTHON_ENV": "/opt/pyexec",
    "PYEXEC_LOG": os.environ["PYEXEC_LOG"],
    # Where Kubernetes puts a container's termination message.
    "PYEXEC_TERMINATION_LOG": "/dev/termination-log",
    # Must not reach the script.
    "SECRET_TOKEN": "must-not-reach-the-jail",
}
if mode == "cold":
    env["PYEXEC_SCRIPT"] = script
    # The controller set each limit and its maximum to the resolved value.
    for name, value in json.loads(limits).items():
        env[f"PYEXEC_{name}"] = str(value)
        env[f"PYEXEC_MAX_{name}"] = str(value)
else:
    args.append("--job-on-stdin")
    job = {"script": script, "limits": {**json.loads(job_limits), **json.loads(limits)}}
    with open(f"{case_out}/job.json", "w", encoding="utf-8") as f:
        json.dump(job, f, ensure_ascii=False)
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
    {"destination": "/opt/pyexec", "type": "bind", "source": f"{repo}/.tools/python", "options": ro},
    # A file of the host, as the kubelet binds /dev/termination-log.
    {"destination": "/dev/termination-log", "type": "bind", "source": f"{case_out}/termination_message", "options": ["bind", "rw"]},
]
spec = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
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

# The limits of every job sent on stdin before a case's own: the binary's defaults (`pyexec
# sandbox --help`), which the ready sandbox of a pod without limit settings starts with.
JOB_LIMITS='{"timeout_ms": 10000, "cpu_seconds": 10, "memory_mb": 512, "max_pids": 64, "tmp_mb": 64, "file_size_mb": 16, "open_files": 256, "stdout_bytes": 1048576, "stderr_bytes": 1048576, "result_bytes": 4194304, "output_files_bytes": 8388608}'

# Cases: name, limits as the cold run's settings (env names), limits of the job on stdin
# (Limits' field names), script. tests/gvisor/gvisor_sandbox.rs has what each must produce.
declare -A COLD_LIMITS STDIN_LIMITS SCRIPT
cases=() stdin_only_cases=()
add_case() { cases+=("$1"); COLD_LIMITS[$1]=$2; STDIN_LIMITS[$1]=$3; SCRIPT[$1]=$4; }
# Only through `--job-on-stdin`: name (without stdin_), job limits, script.
add_stdin_case() { stdin_only_cases+=("$1"); STDIN_LIMITS[$1]=$2; SCRIPT[$1]=$3; }

add_case hello '{}' '{}' '
def main():
    print("hello from main")
    return {"hello": "world"}
'

add_case pandas '{}' '{}' '
def main():
    import pandas as pd
    import numpy as np
    data = {"A": [1, 2, 3], "B": [4, 5, 6]}
    df = pd.DataFrame(data)
    return {"sum": int(np.sum(df["A"]))}
'

add_case network '{"TIMEOUT_SECONDS": 10}' '{"timeout_ms": 10000}' '
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
'

add_case readonly '{}' '{}' '
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
'

add_case environment '{}' '{}' '
import os
def main():
    return dict(os.environ)
'

add_case memory '{"MEMORY_MB": 256}' '{"memory_mb": 256}' '
def main():
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
        # MiB held so far: the last line shows which limit stopped it.
        print(len(hog) * 16, flush=True)
'

add_case timeout '{"TIMEOUT_SECONDS": 1}' '{"timeout_ms": 1000}' '
def main():
    while True:
        pass
'

add_case identity '{}' '{}' '
import os
def main():
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
'

add_case seccomp '{}' '{}' '
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
'

# The script arrives byte for byte (a pod's environment variable turned "$$" into "$"), and
# the preloaded modules are already imported when it starts.
add_stdin_case bytes '{}' '
import sys
TEXT = "$ $$ $(HOME) $$(HOME) ${HOME} é ✓ 日本語 🐍"
def main():
    return {"text": TEXT, "warm": "pandas" in sys.modules}
'
# More memory than the ready sandbox was started with: its RLIMIT_AS can only be lowered, so the
# job runs cold, and succeeds.
add_stdin_case above_ready '{"memory_mb": 768}' '
import sys
def main():
    return {"warm": "pandas" in sys.modules}
'
# stdin closed before any byte: no job ran (the runner sends nothing for this one).
add_stdin_case no_job '{}' ''

# Waits until FILE holds the readiness line, at most RUN_TIMEOUT seconds.
wait_for_marker() { # wait_for_marker FILE
  local deadline=$((SECONDS + RUN_TIMEOUT))
  until grep -qxF "$READY_MARKER" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.02
  done
}

selected=("$@")
wanted() { [ ${#selected[@]} -eq 0 ] || printf '%s\n' "${selected[@]}" | grep -qx "$1"; }
run_case() { # run_case NAME MODE KEY: one runsc run; what it left goes to OUT/NAME
  local name=$1 mode=$2 key=$3 bundle="$work/bundles/$1" case_out="$out/$1" id="pyexec-test-$1-$$" rc=0 start
  rm -rf "$case_out"; mkdir -p "$bundle" "$case_out"
  : >"$case_out/termination_message"
  printf '%s' "${SCRIPT[$key]}" >"$bundle/script.py"
  if [ "$mode" = cold ]; then
    make_spec "$bundle" "$case_out" "$bundle/script.py" cold "${COLD_LIMITS[$key]}"
  else
    make_spec "$bundle" "$case_out" "$bundle/script.py" stdin "${STDIN_LIMITS[$key]}"
  fi
  containers+=("$id")
  start=$(date +%s%N)
  if [ "$mode" = cold ]; then
    timeout --kill-after=5 "$RUN_TIMEOUT" "$RUNSC" --root "$work/state" --network=none --platform="$PLATFORM" \
      run --bundle "$bundle" "$id" >"$case_out/stdout" 2>"$case_out/stderr" </dev/null || rc=$?
  else
    # The job only once the sandbox says it is ready; then stdin closes. no_job gets nothing.
    { if [ "$key" != no_job ] && wait_for_marker "$case_out/stderr"; then cat "$case_out/job.json"; fi; } |
      timeout --kill-after=5 "$RUN_TIMEOUT" "$RUNSC" --root "$work/state" --network=none --platform="$PLATFORM" \
        run --bundle "$bundle" "$id" >"$case_out/stdout" 2>"$case_out/stderr" || rc=$?
  fi
  echo $(( ($(date +%s%N) - start) / 1000000 )) >"$case_out/ms"
  echo "$rc" >"$case_out/exit_code"
  "$RUNSC" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  printf '%-20s exit %3s %6sms  %s\n' "$name" "$rc" "$(cat "$case_out/ms")" "$(grep -m1 -o '"outcome":"[a-z_]*"' "$case_out/stdout" || echo 'no envelope')"
}

mkdir -p "$work/state"
ran=0
for name in "${cases[@]}"; do
  if wanted "$name"; then run_case "$name" cold "$name"; ran=$((ran + 1)); fi
  if wanted "stdin_$name"; then run_case "stdin_$name" stdin "$name"; ran=$((ran + 1)); fi
done
for name in "${stdin_only_cases[@]}"; do
  if wanted "stdin_$name"; then run_case "stdin_$name" stdin "$name"; ran=$((ran + 1)); fi
done
echo "gvisor-test: $ran runs recorded in $out (tests/gvisor/gvisor_sandbox.rs checks them)"
[ "$ran" -gt 0 ]
