#!/usr/bin/env python3
"""Load on the API in kubernetes mode, and where the host's CPU goes (make cluster-measure,
MEASURE_WHAT=load). Prints Markdown lines:

- sequential: N requests one after another, GAP seconds apart: p50 and p99 latency;
- steady: RATE requests a second for SECONDS, fired on a fixed schedule (not waiting for answers):
  latency, answers by status, and host CPU per execution, by component, less the idle burn
  measured just before;
- overload: the same at a higher rate: how many were answered, shed (429/503 with Retry-After)
  and how fast, and how many timed out (504) or failed (status 0: no answer, or a 200 whose
  outcome is not success).

CPU by component, two ways. By cgroup, exact: the cluster runs each component in a cpuacct
cgroup of its own (ci/cluster/up.sh), which counts its children too (containerd's: the shims,
runsc commands and CNI plugins), and the kubelet puts every pod's processes under kubepods; the
root cgroup holds the rest (kernel threads, this load). By process: processes alive across the
window count their /proc/<pid>/stat delta; those that exit in it (pods' gVisor sandboxes, runsc
invocations, shims, CNI plugins) are read from BSD process accounting (acct(2)), switched on for
the run and off after, which samples CPU at each timer tick and so misses much of what
short-lived processes use. Needs root. Standard library only.
"""

import argparse
import concurrent.futures
import ctypes
import http.client
import json
import os
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

TICKS = os.sysconf("SC_CLK_TCK")
# struct acct_v3 (linux/acct.h): flag, version, tty, exitcode, uid, gid, pid, ppid, btime, etime,
# then utime, stime and six more comp_t, then the command name.
ACCT_V3 = struct.Struct("<BBHIIIIIIf8H16s")
AHZ = 100

HELLO = 'def main():\n    return {"message": "hello"}\n'
PANDAS = ('import pandas as pd\n\ndef main():\n    df = pd.DataFrame({"a": [1, 2, 3]})\n'
          '    return {"sum": int(df["a"].sum())}\n')


# ---- where the CPU goes

KERNEL = "kernel threads (workqueues: namespace and cgroup teardown; RCU, softirq)"
# Names of kernel threads, for the exits process accounting records (it has no command line).
KERNEL_THREADS = ("kworker/", "ksoftirqd/", "rcu_", "rcuc/", "rcuog/", "rcuop/", "kswapd", "migration/",
                  "kcompactd", "khugepaged", "jbd2/", "kthreadd", "netns", "cpuhp/", "idle_inject/")


def group_of(comm, cmdline, kernel=False):
    """The component a process belongs to, from its name and command line (`kernel`: a kernel
    thread, which has no command line)."""
    if kernel or (not cmdline and comm.startswith(KERNEL_THREADS)):
        return KERNEL
    first = cmdline.split(" ", 1)[0] if cmdline else ""
    if comm == "pyexec":
        return "pyexec API" if " serve" in f" {cmdline}" else "pyexec controller"
    if comm in ("etcd", "kube-apiserver", "kubelet", "containerd"):
        return comm
    if comm in ("kube-scheduler", "kube-controller"):
        return "scheduler + controller-manager"
    if comm.startswith("containerd-shim"):
        return "containerd shims"
    if comm == "runsc":
        return "runsc CLI (create, start, delete)"
    if comm == "exe" or first.startswith("runsc-"):
        return "gVisor sandboxes (sentry, gofer, the script)"
    if comm.startswith("kube-network") or comm in ("bridge", "host-local", "portmap", "loopback", "iptables",
                                                   "ip6tables", "xtables-nft-mul", "nft"):
        return "CNI + network policy"
    if comm == "pause":
        return "pause"
    return "other (this load, builds, the rest)"


def snapshot():
    """pid -> (group, CPU ticks so far, start time in ticks since boot) of every process."""
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # PF_KTHREAD (0x00200000) in the flags field marks a kernel thread.
        kernel = bool(int(fields[6]) & 0x00200000)
        ticks = int(fields[11]) + int(fields[12])
        procs[int(pid)] = (group_of(comm, cmdline, kernel), ticks, int(fields[19]))
    return procs


CPUACCT = "/sys/fs/cgroup/cpuacct"
# ci/cluster/config.sh's ACCT_CGROUP.
COMPONENTS = os.path.join(CPUACCT, "pyexec-cluster")


def cgroup_usage():
    """Nanoseconds of CPU used so far by each accounting cgroup: the cluster's components, all
    pods (kubepods), and everything (the root); empty without a cgroup v1 cpuacct hierarchy."""
    paths = {"everything": CPUACCT, "pods (kubepods: sandboxes, the API and controller)": os.path.join(CPUACCT, "kubepods")}
    if os.path.isdir(COMPONENTS):
        for name in os.listdir(COMPONENTS):
            label = f"{name} and its children" if name == "containerd" else name
            paths[label] = os.path.join(COMPONENTS, name)
    usage = {}
    for label, path in paths.items():
        try:
            with open(os.path.join(path, "cpuacct.usage")) as f:
                usage[label] = int(f.read())
        except (OSError, ValueError):
            pass
    return usage


def comp_t(value):
    return (value & 0x1FFF) << (3 * ((value >> 13) & 7))


def exited(path):
    """(pid, group, CPU seconds in all) of each process accounting recorded."""
    records = []
    with open(path, "rb") as f:
        data = f.read()
    for offset in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
        fields = ACCT_V3.unpack_from(data, offset)
        if fields[1] != 3:
            continue
        pid, utime, stime, comm = fields[6], fields[10], fields[11], fields[18]
        comm = comm.split(b"\0", 1)[0].decode(errors="replace")
        records.append((pid, group_of(comm, ""), (comp_t(utime) + comp_t(stime)) / AHZ))
    return records


class CpuWindow:
    """CPU seconds by component between start() and stop()."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.path = None

    def start(self):
        fd, self.path = tempfile.mkstemp(prefix="pyexec-acct-")
        os.close(fd)
        if self.libc.acct(self.path.encode()) != 0:
            raise OSError(ctypes.get_errno(), "acct(2): process accounting needs root")
        self.before = snapshot()
        self.host_before = host_busy()
        self.cgroups_before = cgroup_usage()
        self.t0 = time.monotonic()

    def stop(self):
        after = snapshot()
        host_after = host_busy()
        cgroups_after = cgroup_usage()
        self.libc.acct(None)
        seconds = time.monotonic() - self.t0
        by_group = {}
        for pid, (group, ticks, start) in after.items():
            old = self.before.get(pid)
            used = ticks - old[1] if old and old[2] == start else ticks
            by_group[group] = by_group.get(group, 0.0) + used / TICKS
        for pid, group, total in exited(self.path):
            old = self.before.get(pid)
            if pid in after:  # a pid reused: the record is of the process before it
                continue
            by_group[group] = by_group.get(group, 0.0) + max(0.0, total - (old[1] / TICKS if old else 0.0))
        os.unlink(self.path)
        host = {state: (host_after[state] - self.host_before[state]) / TICKS for state in BUSY}
        cgroups = {label: (used - self.cgroups_before[label]) / 1e9
                   for label, used in cgroups_after.items() if label in self.cgroups_before}
        return seconds, by_group, host, cgroups


# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice.
# guest and guest_nice are already in user and nice; steal is time the hypervisor gave to others.
BUSY = {"user": 0, "nice": 1, "system": 2, "irq": 5, "softirq": 6}


def host_busy():
    """Ticks the CPUs spent since boot in each busy state of BUSY (not idle, iowait or steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return {state: fields[i] for state, i in BUSY.items()}


# ---- requests

class Api:
    def __init__(self, url, header):
        self.url = urllib.parse.urlsplit(url)
        name, _, value = header.partition(":")
        self.headers = {"Content-Type": "application/json", name.strip(): value.strip()}

    def execute(self, script, timeout=150):
        """(status, seconds, Retry-After or None); a 200 whose outcome is not success counts as
        status 0."""
        body = json.dumps({"script": script})
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection(self.url.hostname, self.url.port or 80, timeout=timeout)
            conn.request("POST", "/execute", body=body, headers=self.headers)
            response = conn.getresponse()
            answer = response.read()
            status, retry = response.status, response.getheader("Retry-After")
            conn.close()
            if status == 200 and json.loads(answer).get("outcome") != "success":
                status = 0
        except (OSError, ValueError):
            status, retry = 0, None
        return status, time.monotonic() - t0, retry


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))]


def ms(seconds):
    return f"{seconds * 1000:.0f}"


def sequential(api, name, script, runs, gap):
    times, failed = [], []
    for _ in range(runs):
        status, seconds, _ = api.execute(script)
        (times if status == 200 else failed).append(seconds if status == 200 else status)
        time.sleep(gap)
    print(f"- {runs} sequential {name}, {gap} s apart: p50 {ms(statistics.median(times))} ms, "
          f"p99 {ms(percentile(times, 99))} ms, max {ms(max(times))} ms"
          + (f"; failed: {failed}" if failed else ""))


def steady(api, script, rate, seconds):
    """Fires rate/s for seconds on a fixed schedule; returns the answers."""
    answers = []
    lock = threading.Lock()

    def one():
        answer = api.execute(script)
        with lock:
            answers.append(answer)

    total = int(rate * seconds)
    with concurrent.futures.ThreadPoolExecutor(max_workers=512) as pool:
        t0 = time.monotonic()
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
    return answers


def report_answers(label, answers):
    ok = [s for status, s, _ in answers if status == 200]
    shed = [(s, r) for status, s, r in answers if status in (429, 503)]
    by_status = {}
    for status, _, _ in answers:
        by_status[status] = by_status.get(status, 0) + 1
    line = f"- {label}: {len(answers)} requests, answers {dict(sorted(by_status.items()))}"
    if ok:
        line += f"; succeeded p50 {ms(statistics.median(ok))} ms, p99 {ms(percentile(ok, 99))} ms"
    if shed:
        with_retry = sum(1 for _, r in shed if r)
        line += (f"; shed {len(shed)} (Retry-After on {with_retry}), answered in at most "
                 f"{ms(max(s for s, _ in shed))} ms")
    print(line)


def net_of(window, idle):
    """The window's CPU less the idle burn scaled to its length: (host by CPU state, by cgroup,
    by process group), in CPU-seconds."""
    seconds, groups, states, cgroups = window
    idle_seconds, idle_groups, idle_states, idle_cgroups = idle
    scale = seconds / idle_seconds
    minus = lambda now, before: {k: now.get(k, 0.0) - before.get(k, 0.0) * scale for k in set(now) | set(before)}
    net_cg = minus(cgroups, idle_cgroups) if cgroups else {}
    if net_cg:
        named = sum(v for g, v in net_cg.items() if g != "everything")
        net_cg[REST] = net_cg.get("everything", 0.0) - named
    return minus(states, idle_states), net_cg, minus(groups, idle_groups)


REST = "the rest (root cgroup: kernel threads, interrupts, this load)"


def report_cpu(label, window, idle, executions, baseline=None):
    """Host CPU per execution, by cgroup (exact) beside `baseline` (per bare gVisor pod, from
    `bare_pods`), and by process (sampled)."""
    states, cgroups, groups = net_of(window, idle)
    per = max(1, executions)
    host = sum(states.values())
    print(f"- {label}: host CPU {sum(window[2].values()):.1f} s over {window[0]:.0f} s, "
          f"idle burn {sum(window[2].values()) - host:.1f} s; per execution {host / per:.2f} CPU-s "
          f"({executions} executions)")
    split = ", ".join(f"{state} {states[state] / per:.3f}" for state in BUSY)
    print(f"  by CPU state, CPU-s per execution: {split}")
    if cgroups:
        base_per, base = (baseline[0], baseline[1]) if baseline else (1, {})
        what = f"a bare gVisor pod (baseline, {base_per} pods)" if baseline else "(no baseline measured)"
        print("  by cgroup (exact; each component's cgroup holds its children):")
        print(f"  | cgroup | CPU-s per execution | {what} |")
        print("  | --- | --- | --- |")
        for group, value in sorted(cgroups.items(), key=lambda kv: -kv[1]):
            beside = f"{base[group] / base_per:.3f}" if group in base and group != REST else "-"
            print(f"  | {group} | {value / per:.3f} | {beside} |")
        if baseline:
            mine = sum(v for g, v in cgroups.items() if g not in ("everything", REST))
            theirs = sum(v for g, v in base.items() if g not in ("everything", REST))
            print(f"  without the root cgroup (this load's own processes, kernel threads): {mine / per:.3f} CPU-s "
                  f"per execution, {theirs / base_per:.3f} per bare gVisor pod")
    print("  by process (sampled at each timer tick for processes that exit, so short-lived ones are undercounted):")
    print("  | component | CPU-s per execution |")
    print("  | --- | --- |")
    for group, value in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  | {group} | {value / per:.3f} |")


# A pod with nothing in it but the pause image, in the sandbox pods' runtime class: what the node
# spends on a gVisor pod's life whatever it runs.
BARE_POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: {runtime_class}
  automountServiceAccountToken: false
  enableServiceLinks: false
  dnsPolicy: None
  dnsConfig: {{nameservers: [127.0.0.1]}}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: pause
    image: {image}
    imagePullPolicy: Never
"""


def settle(busy=0.3, look=5.0, longest=180.0):
    """Waits until the host has used less than `busy` CPUs over `look` seconds (the pools done
    starting and removing pods after earlier load), at most `longest` seconds; returns the
    seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < longest:
        before = sum(host_busy().values())
        time.sleep(look)
        if (sum(host_busy().values()) - before) / TICKS / look < busy:
            break
    return time.monotonic() - t0


def bare_pods(kubectl, namespace, count, runtime_class, image, idle_seconds):
    """CPU by cgroup of `count` bare pods (BARE_POD), each created, waited for until Ready and
    deleted (waiting for its end) before the next: (count, net CPU-s by cgroup). kubectl's own
    CPU lands in the root cgroup, left out of the comparison."""
    kc = shlex.split(kubectl) + ["-n", namespace]
    settle()
    cpu = CpuWindow()
    cpu.start()
    time.sleep(idle_seconds)
    idle = cpu.stop()
    cpu.start()
    for i in range(count):
        name = f"pyexec-bare-{os.getpid()}-{i}"
        manifest = BARE_POD.format(name=name, runtime_class=runtime_class, image=image)
        subprocess.run(kc + ["apply", "-f", "-"], input=manifest, text=True, capture_output=True, check=True)
        subprocess.run(kc + ["wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s"],
                       capture_output=True, check=True)
        subprocess.run(kc + ["delete", "pod", name, "--wait=true"], capture_output=True, check=True)
    time.sleep(3)
    window = cpu.stop()
    return count, net_of(window, idle)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the API, e.g. http://10.88.0.11:8080")
    parser.add_argument("--header", default="X-Pyexec-Measure: 1", help="one request header (the token)")
    parser.add_argument("--runs", type=int, default=30, help="sequential requests per script")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between sequential requests")
    parser.add_argument("--rate", type=float, default=1.0, help="steady requests a second")
    parser.add_argument("--seconds", type=float, default=60, help="length of the steady load")
    parser.add_argument("--overload-rate", type=float, default=4.0, help="requests a second of the overload")
    parser.add_argument("--overload-seconds", type=float, default=30, help="length of the overload")
    parser.add_argument("--idle-seconds", type=float, default=20, help="idle window measured first")
    parser.add_argument("--what", default="sequential,steady,overload", help="parts to run")
    parser.add_argument("--kubectl", help="kubectl with its kubeconfig: the steady part then measures bare "
                        "gVisor pods (pause image, in --namespace) first, as the CPU baseline")
    parser.add_argument("--namespace", default="pyexec-sandbox", help="where the bare pods run")
    parser.add_argument("--bare-pods", type=int, default=20, help="bare pods of the baseline")
    parser.add_argument("--runtime-class", default="gvisor", help="the bare pods' runtime class")
    parser.add_argument("--pause-image", default="registry.k8s.io/pause:3.10", help="the bare pods' image")
    args = parser.parse_args()
    api = Api(args.url, args.header)

    if "sequential" in args.what:
        sequential(api, "hello", HELLO, args.runs, args.gap)
        sequential(api, "pandas", PANDAS, args.runs, args.gap)
    if "steady" in args.what:
        baseline = None
        if args.kubectl:
            baseline = bare_pods(args.kubectl, args.namespace, args.bare_pods, args.runtime_class, args.pause_image,
                                 args.idle_seconds)
        settle()  # the pools refill and shrink back after the sequential runs
        cpu = CpuWindow()
        cpu.start()
        time.sleep(args.idle_seconds)
        idle = cpu.stop()
        cpu.start()
        answers = steady(api, HELLO, args.rate, args.seconds)
        window = cpu.stop()
        report_answers(f"steady {args.rate}/s hello for {args.seconds:.0f} s", answers)
        report_cpu(f"CPU at {args.rate}/s", window, idle, sum(1 for a in answers if a[0] == 200), baseline)
    if "overload" in args.what:
        time.sleep(10)
        answers = steady(api, HELLO, args.overload_rate, args.overload_seconds)
        report_answers(f"overload {args.overload_rate}/s hello for {args.overload_seconds:.0f} s", answers)


if __name__ == "__main__":
    sys.exit(main())
