# The harness's ready sandbox (see common.py): imports the preloaded modules, waits for one job
# on stdin and applies its limits before any of its code runs.

_MIB = 1024 * 1024


def _wait_for_job():
    """A ready sandbox (of the pool, or of a sandbox pod): import the preloaded modules, tell the
    supervisor (one byte on the result pipe), then wait for exactly one job, a JSON
    `sandbox::Job`, on stdin; its input files and output-files cap are kept for files.py. Its
    limits are put in place before any of its code runs: the CPU
    limit counts from now (the CPU spent importing is added), and the file-size and open-file
    limits are lowered, soft and hard, so the script cannot raise them again; so are memory
    (RLIMIT_AS) and processes (RLIMIT_NPROC) when `_LOWER` names them (no cgroups, as inside
    gVisor). Otherwise memory and processes are the supervisor's cgroup's, set from outside when
    it hands over the job; the deadline and the output caps are always the supervisor's."""
    import json
    import resource

    global _INPUT_FILES, _OUT_BYTES
    for name in _PRELOAD:
        __import__(name)
    _write(_result_fd, b"R")
    raw = sys.stdin.buffer.read()
    try:
        job = json.loads(raw)
        source = job["script"]
        limits = job["limits"]
        cpu_seconds = int(limits["cpu_seconds"])
        file_size = int(limits["file_size_mb"]) * _MIB
        open_files = int(limits["open_files"])
        memory = int(limits["memory_mb"]) * _MIB
        processes = int(limits["max_pids"])
        _OUT_BYTES = int(limits.get("output_files_bytes", 0))
        _INPUT_FILES = job.get("files", {})
        if not isinstance(source, str) or not isinstance(_INPUT_FILES, dict):
            raise TypeError("script")
    except (ValueError, KeyError, TypeError, AttributeError):
        # No job (the pool is shutting down) or not one the supervisor writes: run nothing.
        _exit(125)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    lowered = [
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, file_size),
        (resource.RLIMIT_NOFILE, open_files),
    ]
    if "as" in _LOWER:
        lowered.append((resource.RLIMIT_AS, memory))
    if "nproc" in _LOWER:
        lowered.append((resource.RLIMIT_NPROC, processes))
    for which, value in lowered:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:
            # Never run the job above its limits; the supervisor checked they fit, so this is
            # the sandbox's failure, not the script's.
            _fail("sandbox_failure", f"The ready sandbox could not apply the job's limits ({exc})")
    return source.encode("utf-8", "surrogatepass")


