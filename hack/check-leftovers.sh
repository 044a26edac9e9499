#!/usr/bin/env bash
# Fails if anything a sandbox run creates outlived it: processes of a sandbox uid (65534, the
# pool's templates, or one of the sandbox id range), nsjail processes, per-run cgroups of the
# tests' parents, or files a sandbox uid left in /tmp.
set -uo pipefail
status=0
fail() { printf 'leftover: %s\n' "$*" >&2; status=1; }
# The default sandbox id range (--sandbox-id-first, --sandbox-id-count).
ID_FIRST=${PYEXEC_SANDBOX_ID_FIRST:-2000000000}
ID_COUNT=${PYEXEC_SANDBOX_ID_COUNT:-65536}

# Each search keeps its first five finds but reads its input to the end: a reader that stopped
# early would end the writer with SIGPIPE, and under pipefail the failed pipe would hide the finds.
first5() { awk 'NR <= 5'; }
leased=$(ps -eo uid=,pid=,args= | awk -v first="$ID_FIRST" -v count="$ID_COUNT" '$1 >= first && $1 < first + count' | first5)
if [ -n "$leased" ]; then
  fail "processes of sandbox ids still running: $leased"
fi

if pids=$(pgrep -u 65534 2>/dev/null); then
  fail "processes of uid 65534 still running: $(ps -o pid=,args= -p "$(echo $pids | tr ' ' ',')" | first5)"
fi
if pgrep -x nsjail >/dev/null 2>&1; then
  fail "nsjail processes still running: $(pgrep -ax nsjail | first5)"
fi
for hierarchy in /sys/fs/cgroup/memory /sys/fs/cgroup/pids /sys/fs/cgroup/cpu /sys/fs/cgroup; do
  for dir in "$hierarchy"/pyexec-test-*; do
    [ -d "$dir" ] && fail "cgroup left behind: $dir"
  done
done
# nsjail's two fixed work directories (/tmp/nsjail.0.root, /tmp/nsjail.0.tmp) are mount points
# it reuses for every run; they must stay empty. Anything else the sandbox uid owns is a leftover.
for dir in /tmp/nsjail.0.root /tmp/nsjail.0.tmp; do
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then fail "nsjail work directory not empty: $dir"; fi
done
# find's status is not used: a directory it may not read must not hide the files it did find.
files=$(find /tmp -maxdepth 2 \( -user 65534 -o -uid +$((ID_FIRST - 1)) \) ! -path /tmp/nsjail.0.root ! -path /tmp/nsjail.0.tmp 2>/dev/null | first5)
if [ -n "$files" ]; then
  fail "files owned by a sandbox uid in /tmp: $files"
fi
[ "$status" -eq 0 ] && echo "check-leftovers: no sandbox process, cgroup or temp file left behind"
exit "$status"
