#!/usr/bin/env bash
# Runs the repository's nsjail (.tools/nsjail, from hack/setup.sh) with the repository's
# nsjail.cfg inside gVisor (runsc, built by build-runsc.sh), under a matrix of variants, and
# prints one line per variant: works, or the first nsjail/runsc error line.
#
#   hack/gvisor/nsjail-in-gvisor.sh                 # every variant
#   hack/gvisor/nsjail-in-gvisor.sh NAME...         # only these (see `--list`)
#   hack/gvisor/nsjail-in-gvisor.sh --list
#   PLATFORM=ptrace hack/gvisor/nsjail-in-gvisor.sh # default: systrap
#
# Needs root on the host (runsc run). Everything it makes lives in $WORK (default
# /tmp/pyexec-gvisor): the OCI bundles, a read-only rootfs built from read-only bind mounts of the
# host's /usr plus .tools/nsjail, .tools/python and the config, and one log per variant
# ($WORK/logs/PLATFORM/NAME.log). The results table goes to $WORK/results-PLATFORM.tsv (appended
# to when variants are named) and stdout.
# Nothing leaves the sandbox: every run uses `runsc --network=none`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${WORK:-/tmp/pyexec-gvisor}
PLATFORM=${PLATFORM:-systrap}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
log() { printf '[nsjail-in-gvisor] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Variants. Fields, separated by '|':
#   name | user (container uid) | caps added (comma list, '-' none) | cap sets: all = bounding,
#   effective, permitted, inheritable, ambient (what runsc/OCI allows); cri = bounding, effective,
#   permitted only (what containerd's CRI makes of securityContext capabilities.add); nnp = cri
#   plus noNewPrivileges (allowPrivilegeEscalation: false); exact = cri with only the listed caps
#   (capabilities.drop: [ALL] + add); otherwise a root container also gets containerd's defaults | launch: direct = the container process is nsjail; setpriv = the container
#   process is root and drops to 65534 with the listed caps as ambient caps right before exec'ing
#   nsjail (what a root supervisor would do) | nsjail.cfg edits (see edit_cfg) | extra nsjail
#   arguments (-, SECCOMP = a demo policy denying socket(), TL3 = --time_limit 3, CGV1, CGV2: see
#   run_variant) | extra runsc flags | cgroups: none, mount (cgroupfs mounted in the container),
#   v1run (the pod supervisor's per-run memory+pids cgroups, as src/sandbox/cgroup.rs makes them),
#   v1run-ro (the same with the cgroupfs mount marked ro, as containerd's CRI does), v2run (the
#   same with runsc --in-sandbox-cgroup=v2), nsjailv1/nsjailv2 (nsjail's own cgroup_* options,
#   on a parent delegated to 65534), podmem (no in-sandbox cgroup, no RLIMIT_AS, a 384 MiB memory
#   limit on the whole sandbox: the pod's limit) | script: hello, pandas, probe, harness, bench,
#   memhog, forkbomb, cpuburn, sleeper
VARIANTS=$(cat <<'EOF'
full-root-allcaps        |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |-                           |-                      |-                 |none |hello
full-root-cgroupmount    |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |-                           |-                      |-                 |mount|hello
nocgroupns-root          |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0                 |-                      |-                 |none |hello
nocgroupns-nolo0-root    |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,no_lo=0         |-                      |-                 |none |hello
nonet-root               |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0        |-                      |-                 |none |hello
nonet-root-nocaps        |0    |-                              |all|direct |newcgroup=0,newnet=0        |-                      |-                 |none |hello
nouser-root              |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0,newuser=0|-                    |-                 |none |hello
nouser-root-rootless     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0,newuser=0|-                    |--rootless        |none |hello
nouser-root-ignorecg     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0,newuser=0|-                    |--ignore-cgroups  |none |hello
user65534-newuser-nocaps |65534|-                              |all|direct |newcgroup=0,newnet=0        |-                      |-                 |none |hello
user65534-newuser-caps   |65534|SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0        |-                      |-                 |none |hello
user65534-nouser-nocaps  |65534|-                              |all|direct |newcgroup=0,newnet=0,newuser=0|-                    |-                 |none |hello
user65534-nouser-4caps   |65534|SYS_ADMIN,SETUID,SETGID,SETPCAP|all|direct |newcgroup=0,newnet=0,newuser=0|-                    |-                 |none |hello
user65534-nouser-sysadmin|65534|SYS_ADMIN                      |all|direct |newcgroup=0,newnet=0,newuser=0|-                    |-                 |none |hello
user65534-nouser-sysadmin-cri|65534|SYS_ADMIN                  |cri|direct |newcgroup=0,newnet=0,newuser=0|-                    |-                 |none |hello
user65534-nouser-newnet  |65534|SYS_ADMIN                      |all|direct |newcgroup=0,newuser=0       |-                      |-                 |none |hello
user65534-nouser-newcg-mount|65534|SYS_ADMIN                   |all|direct |newnet=0,newuser=0          |-                      |-                 |mount|hello
user65534-nouser-nolo0   |65534|SYS_ADMIN                      |all|direct |newcgroup=0,newnet=0,newuser=0,no_lo=0|-             |-                 |none |hello
user65534-nouser-rootless|65534|SYS_ADMIN                      |all|direct |newcgroup=0,newnet=0,newuser=0|-                    |--rootless        |none |hello
user65534-nouser-ignorecg|65534|SYS_ADMIN                      |all|direct |newcgroup=0,newnet=0,newuser=0|-                    |--ignore-cgroups  |none |hello
gvisor-cfg-hello         |65534|SYS_ADMIN                      |all|direct |gvisor                      |-                      |-                 |none |hello
gvisor-cfg-pandas        |65534|SYS_ADMIN                      |all|direct |gvisor                      |-                      |-                 |none |pandas
gvisor-cfg-probe         |65534|SYS_ADMIN                      |all|direct |gvisor                      |-                      |-                 |none |probe
gvisor-cfg-harness       |65534|SYS_ADMIN                      |all|direct |gvisor                      |-                      |-                 |none |harness
gvisor-cfg-nsjailcgv1    |65534|SYS_ADMIN                      |all|direct |gvisor                      |CGV1                   |-                 |mount|hello
gvisor-cfg-nsjailcgv2    |65534|SYS_ADMIN                      |all|direct |gvisor                      |CGV2                   |-                 |mount|hello
setpriv-gvisor-hello     |0    |SYS_ADMIN                      |all|setpriv|gvisor                      |-                      |-                 |none |hello
setpriv-gvisor-nocaps    |0    |-                              |all|setpriv|gvisor                      |-                      |-                 |none |hello
setpriv-cri-sysadmin     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |hello
setpriv-cri-probe        |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |probe
setpriv-v1run-pandas     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |v1run|pandas
setpriv-v1run-memhog     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |v1run|memhog
setpriv-v1run-forkbomb   |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |v1run|forkbomb
setpriv-nocg-memhog      |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |memhog
setpriv-nocg-forkbomb    |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |forkbomb
setpriv-newuser          |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor+newuser=1            |-                      |-                 |none |hello
v2-setpriv-newcgroup     |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor+newcgroup=1          |-                      |--in-sandbox-cgroup=v2|mount|probe
v2-setpriv-v2run-pandas  |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |--in-sandbox-cgroup=v2|v2run|pandas
v2-setpriv-v2run-memhog  |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |--in-sandbox-cgroup=v2|v2run|memhog
v2-setpriv-v2run-forkbomb|0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |--in-sandbox-cgroup=v2|v2run|forkbomb
setpriv-nsjailcgv1       |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |CGV1                   |-                 |nsjailv1|forkbomb
v2-setpriv-nsjailcgv2    |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |CGV2                   |--in-sandbox-cgroup=v2|nsjailv2|forkbomb
setpriv-noseccomp-probe  |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor+noseccomp           |-                      |-                 |none |probe
setpriv-seccomp-socket   |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor+noseccomp           |SECCOMP                |-                 |none |probe
setpriv-v1run-ro         |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |v1run-ro|hello
setpriv-harness          |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |harness
setpriv-bench            |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |bench
setpriv-exact-4caps      |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|exact|setpriv|gvisor                    |-                      |-                 |v1run|probe
setpriv-exact-3caps      |0    |SYS_ADMIN,SETUID,SETGID        |exact|setpriv|gvisor                    |-                      |-                 |none |probe
setpriv-exact-nosysadmin |0    |SETUID,SETGID,SETPCAP          |exact|setpriv|gvisor                    |-                      |-                 |none |hello
setpriv-exact-nosetuid   |0    |SYS_ADMIN,SETGID,SETPCAP       |exact|setpriv|gvisor                    |-                      |-                 |none |hello
setpriv-rootless         |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |--rootless        |none |hello
setpriv-ignorecg         |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |--ignore-cgroups  |none |hello
setpriv-podmem-memhog    |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |podmem|memhog
setpriv-cpuburn          |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |-                      |-                 |none |cpuburn
setpriv-timelimit        |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|cri|setpriv|gvisor                      |TL3                    |-                 |none |sleeper
setpriv-nnp              |0    |SYS_ADMIN,SETUID,SETGID,SETPCAP|nnp|setpriv|gvisor                      |-                      |-                 |none |hello
EOF
)

list_variants() { printf '%s\n' "$VARIANTS" | cut -d'|' -f1 | tr -d ' '; }
if [ "${1:-}" = "--list" ]; then list_variants; exit 0; fi
[ "$(id -u)" = 0 ] || { log "run as root (runsc run needs it)"; exit 1; }
[ -x "$repo/.tools/nsjail/bin/nsjail" ] && [ -x "$repo/.tools/python/bin/python3" ] || {
  log "run hack/setup.sh first (.tools/nsjail and .tools/python)"; exit 1; }

RUNSC_BIN=$("$here/build-runsc.sh")
RUNSC="$RUNSC_BIN/runsc"
log "runsc: $RUNSC ($("$RUNSC" --version | head -1)), platform $PLATFORM"

mkdir -p "$WORK"/{logs/$PLATFORM,bundles,probe,state,cfg}
# The rootfs: empty directories (mount points) and symlinks only; every file comes from a
# read-only bind mount declared in config.json. Mounted read-only.
rootfs="$WORK/rootfs"
rm -rf "$rootfs"; mkdir -p "$rootfs"/{usr,etc/pyexec,opt/nsjail,opt/pyexec,probe,proc,dev,sys,tmp}
ln -s usr/bin "$rootfs/bin"; ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"; ln -s usr/sbin "$rootfs/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

cp "$here/probe.py" "$WORK/probe/probe.py"
cp "$repo/src/sandbox/harness.py" "$WORK/probe/harness.py"
cat >"$WORK/probe/main.py" <<'PY'
import pandas as pd
def main():
    df = pd.DataFrame({"x": [1, 2, 3]})
    print("stdout from the script")
    return {"sum": int(df.x.sum()), "mean": float(df.x.mean())}
PY
cat >"$WORK/probe/memhog.py" <<'PY'
# Allocates 64 MiB at a time up to 1 GiB and says how far it got.
import sys
chunks = []
for i in range(1, 17):
    chunks.append(bytearray(64 << 20))
    for j in range(0, len(chunks[-1]), 4096):
        chunks[-1][j] = 1
    print(f"allocated {i * 64} MiB", flush=True)
print("memhog: no limit hit at 1 GiB", flush=True)
PY
cat >"$WORK/probe/forkbomb.py" <<'PY'
# Starts up to 200 sleeping processes and says how many it got.
import os, time
n = 0
try:
    for n in range(1, 201):
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
    print("forkbomb: 200 processes started, no limit hit", flush=True)
except OSError as e:
    print(f"forkbomb: fork #{n} failed: {e}", flush=True)
PY

# The container's entry point (/bin/sh is Debian's dash from the host /usr).
cat >"$WORK/probe/entry.sh" <<'SH'
#!/bin/sh
# entry.sh LAUNCH CGROUPS SCRIPT AMBIENT_CAPS RLIMIT_AS [nsjail args...]
launch=$1 cg=$2 script=$3 ambient=$4 rlimit_as=$5; shift 5
echo "ENTRY uid=$(id -u) caps: $(grep -E '^Cap(Eff|Prm|Amb|Bnd)' /proc/self/status | tr '\t\n' ' ')" >&2
if [ "$cg" = v1run ] || [ "$cg" = v1run-ro ]; then
  # What src/sandbox/cgroup.rs + supervisor.rs do per run: make memory and pids groups under
  # pyexec/, set the limits, and move the (future) nsjail process in before exec.
  for c in memory pids; do mkdir -p /sys/fs/cgroup/$c/pyexec/run1 || exit 125; done
  echo $((256 << 20)) >/sys/fs/cgroup/memory/pyexec/run1/memory.limit_in_bytes || echo "ENTRY memory.limit_in_bytes write failed" >&2
  echo 33 >/sys/fs/cgroup/pids/pyexec/run1/pids.max || echo "ENTRY pids.max write failed" >&2
  echo $$ >/sys/fs/cgroup/memory/pyexec/run1/cgroup.procs || exit 125
  echo $$ >/sys/fs/cgroup/pids/pyexec/run1/cgroup.procs || exit 125
  echo "ENTRY cgroup v1 run1: memory.limit_in_bytes=$(cat /sys/fs/cgroup/memory/pyexec/run1/memory.limit_in_bytes) pids.max=$(cat /sys/fs/cgroup/pids/pyexec/run1/pids.max) self=$(cat /proc/self/cgroup | tr '\n' ' ')" >&2
fi
if [ "$cg" = v2run ]; then
  # The same with cgroup v2 (runsc --in-sandbox-cgroup=v2): one group per run under pyexec/.
  c=/sys/fs/cgroup
  echo "ENTRY cgroup v2 root: controllers=$(cat $c/cgroup.controllers) self=$(cat /proc/self/cgroup)" >&2
  echo +memory +pids >$c/cgroup.subtree_control || echo "ENTRY root subtree_control write failed" >&2
  mkdir -p $c/pyexec/run1 || exit 125
  echo +memory +pids >$c/pyexec/cgroup.subtree_control || echo "ENTRY pyexec subtree_control write failed" >&2
  echo $((256 << 20)) >$c/pyexec/run1/memory.max || echo "ENTRY memory.max write failed" >&2
  echo 33 >$c/pyexec/run1/pids.max || echo "ENTRY pids.max write failed" >&2
  echo $$ >$c/pyexec/run1/cgroup.procs || exit 125
  echo "ENTRY cgroup v2 run1: memory.max=$(cat $c/pyexec/run1/memory.max) pids.max=$(cat $c/pyexec/run1/pids.max) self=$(cat /proc/self/cgroup)" >&2
fi
if [ "$cg" = nsjailv1 ]; then
  # nsjail's own cgroup v1 limits need an existing parent (NSJAIL) it can write to: delegate it.
  for c in memory pids; do mkdir -p /sys/fs/cgroup/$c/NSJAIL && chown -R 65534:65534 /sys/fs/cgroup/$c/NSJAIL || echo "ENTRY NSJAIL $c delegation failed" >&2; done
fi
if [ "$cg" = nsjailv2 ]; then
  # nsjail's own cgroup v2 limits: a delegated subtree (owned by 65534) it manages itself.
  c=/sys/fs/cgroup
  echo +memory +pids >$c/cgroup.subtree_control || echo "ENTRY root subtree_control write failed" >&2
  mkdir -p $c/pyexec-nsjail && chown -R 65534:65534 $c/pyexec-nsjail || echo "ENTRY delegation failed" >&2
fi
if [ "$launch" = setpriv ]; then
  if [ "$ambient" = - ]; then
    set -- setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all -- /opt/nsjail/bin/nsjail "$@"
  else
    set -- setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all,+$ambient --ambient-caps=+$ambient --bounding-set=-all,+$ambient -- /opt/nsjail/bin/nsjail "$@"
  fi
else
  set -- /opt/nsjail/bin/nsjail "$@"
fi
if [ "$rlimit_as" != - ]; then
  # nsjail-gvisor.cfg has disable_rl: the parent sets the per-run rlimits (as src/sandbox/nsjail.rs
  # would pass them to nsjail), and nsjail and the script inherit them.
  set -- prlimit --as=$rlimit_as --cpu=10 --fsize=16777216 --nofile=256 --nproc=64 --core=0 --stack=8388608 -- "$@"
fi
if [ "$cg" = nsjailv2 ]; then
  # Only nsjail (not this shell) enters the delegated group, as the supervisor's ENTER_CGROUPS does.
  set -- /bin/sh -c 'echo $$ >/sys/fs/cgroup/pyexec-nsjail/cgroup.procs && exec "$@"' sh "$@"
fi
py=/opt/pyexec/bin/python3
case $script in
  hello)   "$@" -- $py -I -B -c 'import os; print("hello from the jail, uid", os.getuid())' </dev/null ;;
  pandas)  "$@" -- $py -I -B -c 'import pandas, numpy; print("pandas", pandas.__version__, "numpy", numpy.__version__, "sum", int(pandas.DataFrame({"a": [1, 2, 3]}).a.sum()))' </dev/null ;;
  probe)   "$@" -- $py -I -B /probe/probe.py </dev/null ;;
  memhog)  "$@" -- $py -I -B /probe/memhog.py </dev/null ;;
  forkbomb) "$@" -- $py -I -B /probe/forkbomb.py </dev/null ;;
  cpuburn) "$@" -- $py -I -B -c 'import time; t = time.monotonic(); print("cpuburn: starting", flush=True)
while True: pass' </dev/null ;;
  sleeper) "$@" -- $py -I -B -c 'import time; print("sleeper: sleeping 60 s", flush=True); time.sleep(60)' </dev/null ;;
  bench)
    # Per-run cost inside an already running sandbox: 10 jailed hello-worlds vs 10 bare ones.
    t0=$(date +%s%N)
    for i in 1 2 3 4 5 6 7 8 9 10; do "$@" -- $py -I -B -c 'print("hello")' </dev/null >/dev/null 2>&1; done
    t1=$(date +%s%N)
    for i in 1 2 3 4 5 6 7 8 9 10; do $py -I -B -c 'print("hello")' >/dev/null; done
    t2=$(date +%s%N)
    for i in 1 2 3; do "$@" -- $py -I -B -c 'import pandas' </dev/null >/dev/null 2>&1; done
    t3=$(date +%s%N)
    for i in 1 2 3; do $py -I -B -c 'import pandas' >/dev/null; done
    t4=$(date +%s%N)
    echo "BENCH hello in nsjail: $(( (t1 - t0) / 10000000 )) ms/run; bare: $(( (t2 - t1) / 10000000 )) ms/run; import pandas in nsjail: $(( (t3 - t2) / 3000000 )) ms/run; bare: $(( (t4 - t3) / 3000000 )) ms/run" ;;
  harness)
    # The real harness: script on stdin, report on fd 3 (--pass_fd 3), like src/sandbox/nsjail.rs.
    exec 3>/tmp/result.json
    "$@" --pass_fd 3 -- $py -I -B -c "$(cat /probe/harness.py)" 3 </probe/main.py
    rc=$?; exec 3>&-
    echo "HARNESS REPORT: $(cat /tmp/result.json)"
    exit $rc ;;
esac
SH

# nsjail.cfg edits for a variant. gvisor = hack/gvisor/nsjail-gvisor.cfg (the recommendation).
edit_cfg() { # edit_cfg EDITS OUT
  local edits=$1 out=$2
  case $edits in
    gvisor) cp "$here/nsjail-gvisor.cfg" "$out"; return ;;
    gvisor+*) cp "$here/nsjail-gvisor.cfg" "$out"; edits=${edits#gvisor+} ;;
    -) cp "$repo/nsjail.cfg" "$out"; return ;;
    *) cp "$repo/nsjail.cfg" "$out" ;;
  esac
  local e
  for e in ${edits//,/ }; do
    case $e in
      newnet=0)    sed -i 's/^clone_newnet: true/clone_newnet: false/' "$out" ;;
      newuser=0)   sed -i 's/^clone_newuser: true/clone_newuser: false/' "$out" ;;
      newcgroup=0) sed -i 's/^clone_newcgroup: true/clone_newcgroup: false/' "$out" ;;
      newcgroup=1) sed -i 's/^clone_newcgroup: false/clone_newcgroup: true/' "$out" ;;
      newuser=1)   sed -i 's/^clone_newuser: false/clone_newuser: true/' "$out" ;;
      noseccomp)   sed -i '/^seccomp_string:/d' "$out" ;;
      no_lo=0)     sed -i 's/^iface_no_lo: true/iface_no_lo: false/' "$out" ;;
      *) log "unknown edit $e"; exit 1 ;;
    esac
  done
}

# config.json for a variant.
make_spec() { # make_spec BUNDLE USER CAPS CAPSETS CGROUPS CFG ARGS...
  local bundle=$1 user=$2 caps=$3 capsets=$4 cg=$5 cfg=$6; shift 6
  python3 - "$bundle" "$user" "$caps" "$capsets" "$cg" "$cfg" "$rootfs" "$repo" "$WORK" "$@" <<'PY'
import json, sys
bundle, user, caps, capsets, cg, cfg, rootfs, repo, work, *args = sys.argv[1:]
user = int(user)
caps = [] if caps == "-" else ["CAP_" + c for c in caps.split(",")]
# Docker/containerd's default set for a container, plus the variant's additions.
default = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
           "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
           "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
if user == 0 and capsets != "exact":
    bounding = sorted(set(default + caps))
else:
    # A non-root pod normally drops all and adds back what it needs.
    bounding = sorted(set(caps))
capabilities = {"bounding": bounding, "effective": bounding, "permitted": bounding}
if capsets == "all":
    capabilities["inheritable"] = bounding
    capabilities["ambient"] = bounding if user != 0 else []
ro = ["bind", "ro", "nosuid", "nodev"]
mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
    {"destination": "/opt/nsjail", "type": "bind", "source": f"{repo}/.tools/nsjail", "options": ro},
    {"destination": "/opt/pyexec", "type": "bind", "source": f"{repo}/.tools/python", "options": ro},
    {"destination": "/probe", "type": "bind", "source": f"{work}/probe", "options": ro},
    {"destination": "/etc/pyexec/nsjail.cfg", "type": "bind", "source": cfg, "options": ro},
]
if cg in ("mount", "v1run", "v2run", "nsjailv1", "nsjailv2"):
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]})
if cg == "v1run-ro":
    # containerd's CRI mounts /sys/fs/cgroup read-only into a non-privileged container.
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
spec = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": user, "gid": user},
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin", "SECRET_TOKEN=must-not-reach-the-jail", "LANG=C.UTF-8"],
        "cwd": "/",
        "capabilities": capabilities,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        # nnp = Kubernetes allowPrivilegeEscalation: false.
        "noNewPrivileges": capsets == "nnp",
    },
    "root": {"path": rootfs, "readonly": True},
    "hostname": "pyexec-pod",
    "mounts": mounts,
    "linux": {
        # The pod's limits, enforced by the host cgroup runsc puts the whole sandbox in.
        "resources": {"memory": {"limit": (384 << 20) if cg == "podmem" else (2 << 30)}, "pids": {"limit": 512}},
        "cgroupsPath": "/pyexec-gvisor/" + bundle.rstrip("/").split("/")[-1],
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
json.dump(spec, open(f"{bundle}/config.json", "w"), indent=1)
PY
}

# The first line that says why it failed, or "works".
verdict() { # verdict LOG RC SCRIPT
  local f=$1 rc=$2 script=$3 line final
  final=$(grep -E 'exited with status|terminated with signal' "$f" | tail -1 | sed 's/^\[I\]\[[^]]*\] //' || true)
  case $script in
    hello)   grep -q '^hello from the jail' "$f" && { echo "works: $(grep -m1 '^hello from the jail' "$f")"; return; } ;;
    pandas)  grep -q '^pandas ' "$f" && { echo "works: $(grep -m1 '^pandas ' "$f")"; return; } ;;
    probe)   grep -q '^PROBE done' "$f" && { echo "works (probe complete; see log)"; return; } ;;
    harness) grep -Eq '^HARNESS REPORT: \{"ok": ?true' "$f" && { echo "works: $(grep -m1 '^HARNESS REPORT' "$f" | cut -c1-160)"; return; } ;;
    bench)   grep -q '^BENCH' "$f" && { echo "works: $(grep -m1 '^BENCH' "$f" | cut -c7-)"; return; } ;;
    memhog|forkbomb|cpuburn|sleeper)
      line=$(grep -E '^(allocated|memhog|forkbomb|cpuburn|sleeper)|MemoryError' "$f" | tail -1 || true)
      [ -z "$final" ] || { echo "ran: $line | nsjail: $final"; return; } ;;
  esac
  line=$(grep -E '^\[(E|F)\]|^\[W\].*(failed|Operation not permitted|Invalid argument)|^(runsc|Error|error|FATAL)|^[a-zA-Z]*Error|Traceback|setpriv:' "$f" | grep -v 'Launching child process failed\|Couldn.t launch the child' | head -1 || true)
  if [ -n "$line" ]; then
    echo "FAILS (rc=$rc): $(printf '%s' "$line" | sed 's/^\[\(.\)\]\[[^]]*\]/[\1]/' | cut -c1-220)"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 -a -z "$final" ] && [ "$(grep -c . "$f")" -le 3 ]; then
    echo "HANGS: no output, killed by the ${RUN_TIMEOUT}s timeout (rc=$rc)"
  else
    echo "SANDBOX DIED (rc=$rc) before nsjail reported; last output: $(grep -v '^#' "$f" | tail -1 | cut -c1-120)"
  fi
}

run_variant() { # run_variant LINE
  local IFS='|'
  # shellcheck disable=SC2206
  local f=($1)
  IFS=$' \t\n'
  local name user caps capsets launch edits extra rflags cg script
  name=$(echo ${f[0]}); user=$(echo ${f[1]}); caps=$(echo ${f[2]}); capsets=$(echo ${f[3]})
  launch=$(echo ${f[4]}); edits=$(echo ${f[5]}); extra=$(echo ${f[6]}); rflags=$(echo ${f[7]})
  cg=$(echo ${f[8]}); script=$(echo ${f[9]})
  local bundle="$WORK/bundles/$name" cfg="$WORK/cfg/$name.cfg" logf="$WORK/logs/$PLATFORM/$name.log"
  mkdir -p "$bundle"; edit_cfg "$edits" "$cfg"
  # What src/sandbox/nsjail.rs adds per run (default limits), plus /probe for the test scripts.
  # With nsjail-gvisor.cfg (disable_rl) the rlimits are set by entry.sh (prlimit) instead.
  local nsargs=(--config /etc/pyexec/nsjail.cfg --time_limit 11
    --mount none:/tmp:tmpfs:size=67108864,mode=1777 --bindmount_ro /opt/pyexec:/opt/pyexec -R /probe -R /tmp:/rotest)
  local rlimit_as=-
  if [[ $edits == gvisor* ]]; then
    if [ "$cg" = v1run ] || [ "$cg" = v2run ] || [ "$cg" = podmem ]; then rlimit_as=unlimited; else rlimit_as=$((512 << 20)); fi
  else
    nsargs+=(--rlimit_cpu 10 --rlimit_fsize 16 --rlimit_nofile 256)
    if [ "$cg" = v1run ] || [ "$cg" = v2run ]; then nsargs+=(--rlimit_as hard --rlimit_nproc soft)
    else nsargs+=(--rlimit_as 512 --rlimit_nproc 64); fi
  fi
  case $extra in
    -) ;;
    SECCOMP) nsargs+=(--seccomp_string 'ERRNO(1) { ptrace, mount, unshare, setns, sethostname, socket } DEFAULT ALLOW') ;;
    TL3) nsargs+=(--time_limit 3) ;;
    CGV1) nsargs+=(--cgroup_mem_max 268435456 --cgroup_pids_max 32) ;;
    CGV2) nsargs+=(--use_cgroupv2 --cgroupv2_mount /sys/fs/cgroup/pyexec-nsjail --cgroup_mem_max 268435456 --cgroup_pids_max 32) ;;
    *) log "unknown extra $extra"; exit 1 ;;
  esac
  local ambient=-
  # setpriv gives nsjail only CAP_SYS_ADMIN (ambient), if the container has it.
  [ "$launch" = setpriv ] && [[ ,$caps, == *,SYS_ADMIN,* ]] && ambient=sys_admin
  make_spec "$bundle" "$user" "$caps" "$capsets" "$cg" "$cfg" /bin/sh /probe/entry.sh "$launch" "$cg" "$script" "$ambient" "$rlimit_as" "${nsargs[@]}"
  local rfl=()
  [ "$rflags" = - ] || rfl=($rflags)
  local id="pyexec-$name-$$"
  {
    echo "# variant: $name | uid $user | caps $caps ($capsets) | launch $launch | cfg $edits | nsjail+ $extra | runsc+ $rflags | cgroups $cg | $script"
    echo "# runsc --root $WORK/state --network=none --platform=$PLATFORM ${rfl[*]} run --bundle $bundle $id"
  } >"$logf"
  local start rc=0
  start=$(date +%s%N)
  timeout --kill-after=5 "$RUN_TIMEOUT" "$RUNSC" --root "$WORK/state" --network=none --platform="$PLATFORM" \
    "${rfl[@]}" run --bundle "$bundle" "$id" >>"$logf" 2>&1 </dev/null || rc=$?
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  "$RUNSC" --root "$WORK/state" "${rfl[@]}" delete --force "$id" >/dev/null 2>&1 || true
  echo "# rc=$rc wall=${ms}ms" >>"$logf"
  printf '%s\t%s\t%s\n' "$name" "$(verdict "$logf" "$rc" "$script")" "${ms}ms"
}

selected=("$@")
results="$WORK/results-$PLATFORM.tsv"
if [ ${#selected[@]} -gt 0 ] && [ -f "$results" ]; then
  # Re-running named variants replaces their rows.
  grep -v -F -f <(printf '%s\t\n' "${selected[@]}") "$results" >"$results.tmp" || true
  mv "$results.tmp" "$results"
else
  : >"$results"
fi
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=$(echo "${line%%|*}" | tr -d ' ')
  if [ ${#selected[@]} -gt 0 ] && ! printf '%s\n' "${selected[@]}" | grep -qx "$name"; then continue; fi
  result=$(run_variant "$line")
  printf '%s\n' "$result" | tee -a "$results"
done <<<"$VARIANTS"
# runsc removes each container's host cgroups on delete; the parent is left: remove it if empty.
for d in /sys/fs/cgroup/*/pyexec-gvisor; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
log "logs: $WORK/logs/$PLATFORM/, table: $results"
