#!/usr/bin/python3 -IS
"""The CPU of every `runsc` command the gVisor shim runs, exactly (make cluster-measure, part
`runsc`).

Installed as `runsc` in a directory of its own, beside a file `real` that holds the path of the
real runsc and that the shim's `binary_name` points at for the measurement, it runs the real
runsc with the same arguments and file descriptors, waits for it, and appends its user and
system CPU (from wait4, so short-lived commands are counted in full, unlike process
accounting), its wall time and its arguments to `calls.log` beside it; it exits as runsc did.

`runsc_timing.py --summarize LOG EXECUTIONS` prints the calls per runsc command: how many,
their CPU per execution and per call.
"""

import os
import sys
import time

COMMANDS = ("create", "start", "state", "wait", "kill", "delete", "events", "ps", "exec", "update", "pause",
            "resume", "checkpoint", "restore", "list", "spec", "debug", "pid")


def run_timed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "real")) as f:
        real = f.read().strip()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.execv(real, [real] + sys.argv[1:])
    _, status, usage = os.wait4(pid, 0)
    with open(os.path.join(here, "calls.log"), "a") as log:
        log.write("%.6f %.6f %.3f %s\n" % (usage.ru_utime, usage.ru_stime, time.monotonic() - started,
                                            " ".join(sys.argv[1:])))
    sys.exit(os.waitstatus_to_exitcode(status))


def summarize(path: str, executions: int) -> None:
    per_command = {}
    containers = set()
    with open(path) as log:
        for line in log:
            user, system, _wall, args = line.rstrip("\n").split(" ", 3)
            words = args.split()
            command = next((w for w in words if w in COMMANDS), "other")
            count, cpu = per_command.get(command, (0, 0.0))
            per_command[command] = (count + 1, cpu + float(user) + float(system))
            if words and len(words[-1]) == 64:
                containers.add(words[-1])
    calls = sum(count for count, _ in per_command.values())
    cpu = sum(seconds for _, seconds in per_command.values())
    print(f"- {calls} runsc calls for {executions} executions ({len(containers)} containers): "
          f"{calls / executions:.1f} calls and {cpu / executions:.3f} CPU-s per execution")
    print("  | runsc command | calls per execution | CPU-s per execution | CPU ms per call |")
    print("  | --- | --- | --- | --- |")
    for command, (count, seconds) in sorted(per_command.items(), key=lambda kv: -kv[1][1]):
        print(f"  | {command} | {count / executions:.1f} | {seconds / executions:.3f} | {1000 * seconds / count:.1f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summarize"]:
        summarize(sys.argv[2], int(sys.argv[3]))
    else:
        run_timed()
