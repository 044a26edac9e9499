# pyexec harness: runs inside the sandbox as `python3 -I -S -B -c <this file> RESULT_FD`, or
# `... RESULT_FD preload=<modules>` in a ready sandbox of the pool (see _wait_for_job).
#
# Start-up time is most of a small script's cost, so the happy path imports only json; the
# modules for tracebacks and signatures load when they are needed.
#
# Reads the user's script from stdin, compiles and runs it, calls main(), converts the value to
# JSON and writes one report to RESULT_FD, a pipe the user's stdout and stderr never share. The
# supervisor decides everything else (exit status, signals, limits) from the outside.
import sys
import os

_RESULT_FD = int(sys.argv[1])
# Processes the script forks inherit the harness: only the original process reports.
_getpid = os.getpid
_HARNESS_PID = _getpid()
# Keep the result pipe away from fd 3 onwards that user code might close or write by accident,
# and out of any subprocess the script starts.
_result_fd = os.dup(_RESULT_FD)
os.close(_RESULT_FD)
os.set_inheritable(_result_fd, False)

# -S skipped the site module, which is also what finds a virtual environment: add the
# environment's packages (numpy, pandas) by hand. sys.executable is <env>/bin/python3.
_env = os.path.dirname(os.path.dirname(sys.executable))
sys.path.append(f"{_env}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")

# A ready sandbox imports these before its job arrives; None on the cold path. Without cgroups
# (inside gVisor) it also lowers RLIMIT_AS and RLIMIT_NPROC to its job's ("lower=as,nproc").
# The pool's template ("template=<control fd> filter=<hex>") forks ready sandboxes instead of
# running a script (_serve_template).
_PRELOAD = None
_LOWER = ()
_TEMPLATE = None
_FILTER = ""
for _arg in sys.argv[2:]:
    if _arg.startswith("preload="):
        _PRELOAD = [name for name in _arg[len("preload="):].split(",") if name]
    elif _arg.startswith("lower="):
        _LOWER = _arg[len("lower="):].split(",")
    elif _arg.startswith("template="):
        _TEMPLATE = int(_arg[len("template="):])
    elif _arg.startswith("filter="):
        _FILTER = _arg[len("filter="):]

import math
import faulthandler
# The C encoders of the json package, without importing json itself (json.decoder pulls in re
# and enum: 6 ms of a 20 ms run).
from _json import encode_basestring as _encode_str, make_encoder as _make_encoder

_SCRIPT_NAME = "script.py"
_MAX_DEPTH = 100
_exit = os._exit
_write = os.write
# Values that are their own JSON data: a list of many of them converts without a call each.
_PLAIN = frozenset((int, bool, type(None)))


def _not_converted(value):
    raise TypeError(f"{type(value).__name__} is not converted data")


# json.dumps's own C encoder, for converted data only (str keys, no cycles, finite floats): a
# large result encodes several times faster, into far less memory, than a list of parts.
_encoder = _make_encoder(None, _not_converted, _encode_str, None, ":", ",", False, False, False)


def _dumps(value):
    """JSON text of converted data (dicts with str keys, lists, str, int, finite float, bool, None)."""
    return "".join(_encoder(value, 0))


def _report(payload, code):
    """Flush the user's streams, write the report, and end at once (threads left running
    cannot keep the process alive)."""
    if _getpid() != _HARNESS_PID:
        _exit(code)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        text = _dumps(payload)
    except ValueError as exc:
        # int too large to print (sys.set_int_max_str_digits): report it like any other value.
        text = _dumps({"ok": False, "kind": "unserializable", "message": f"result: {exc}"})
        code = 1
    # The newline ends the report: the supervisor answers once it has it, before this
    # interpreter's memory is freed at exit (milliseconds with pandas loaded).
    data = text.encode("utf-8", "replace") + b"\n"
    view = memoryview(data)
    try:
        while view:
            written = _write(_result_fd, view)
            view = view[written:]
    except BaseException:
        pass
    _exit(code)


def _fail(kind, message, code=1):
    _report({"ok": False, "kind": kind, "message": message}, code)


class _Unconvertible(Exception):
    pass


def _type_name(value):
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _valid_text(text):
    """The string, with lone surrogates (which UTF-8 cannot carry) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _key(key, path):
    if isinstance(key, str):
        return key if key.isascii() else _valid_text(key)
    if key is None or isinstance(key, (bool, int, float)):
        return _dumps(_convert(key, path, 0))
    converted = _convert(key, path, 0)
    if isinstance(converted, str):
        return converted
    if converted is None or isinstance(converted, (bool, int, float)):
        return _dumps(converted)
    raise _Unconvertible(f"{path}: dict key of type {_type_name(key)} cannot be a JSON object key")


def _convert(value, path, depth):
    """main()'s value as plain JSON data; the table in README.md ('Result conversion')."""
    if depth > _MAX_DEPTH:
        raise _Unconvertible(f"{path}: nested more than {_MAX_DEPTH} levels deep (a cycle?)")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if value.isascii() else _valid_text(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = _key(k, path)
            out[name] = _convert(v, f"{path}[{name!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN else _convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            pass
        return [_convert(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(items)]

    # pandas' missing values first: NaT is also a datetime.
    pd = sys.modules.get("pandas")
    if pd is not None and (value is pd.NaT or value is getattr(pd, "NA", None)):
        return None

    import datetime
    import decimal
    import uuid

    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)

    # numpy and pandas are only consulted when the script imported them: the harness never
    # pays their import time itself.
    if pd is not None:
        if isinstance(value, pd.DataFrame):
            return _convert(value.to_dict(orient="records"), path, depth + 1)
        if isinstance(value, (pd.Series, pd.Index)):
            return _convert(value.tolist(), path, depth + 1)
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if isinstance(value, pd.Timedelta):
            return value.total_seconds()
        if isinstance(value, pd.Period):
            return str(value)
        if isinstance(value, pd.Interval):
            return str(value)
        if isinstance(value, pd.Categorical):
            return _convert(list(value), path, depth + 1)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.ndarray):
            return _convert(value.tolist(), path, depth + 1)
        if isinstance(value, np.datetime64):
            return None if np.isnat(value) else str(value)
        if isinstance(value, np.timedelta64):
            return None if np.isnat(value) else value / np.timedelta64(1, "s")
        if isinstance(value, np.generic):
            return _convert(value.item(), path, depth + 1)
    raise _Unconvertible(
        f"{path}: value of type {_type_name(value)} cannot be converted to JSON"
        " (return dicts, lists, strings, numbers, booleans, None, or numpy/pandas data)"
    )


def _user_traceback(exc):
    """The traceback without the harness's own frames."""
    import linecache
    import traceback

    # Tracebacks of the user's code show its source lines.
    linecache.cache[_SCRIPT_NAME] = (len(_source), None, _source.splitlines(True), _SCRIPT_NAME)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != _SCRIPT_NAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _one_line(exc):
    import traceback

    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _run_user_code(call, *args):
    try:
        return call(*args)
    except SystemExit:
        # sys.exit() ends the run the way it ends a Python program; the supervisor reports it.
        raise
    except BaseException as exc:
        try:
            sys.stderr.write(_user_traceback(exc))
        except BaseException:
            pass
        _fail("exception", _one_line(exc))


# Code flags of `async def` functions and async generators (inspect.CO_COROUTINE, ...).
_ASYNC_FLAGS = 0x80 | 0x200


def _check_plain_call(main):
    """main must be callable as main(): not async, no required arguments."""
    code = getattr(main, "__code__", None)
    if code is not None and code.co_flags & _ASYNC_FLAGS:
        _fail("invalid_main", "main() must be a plain function: define it with 'def', not 'async def'")
    if code is not None and type(main).__name__ == "function":
        defaults = len(main.__defaults__ or ())
        kw_defaults = main.__kwdefaults__ or {}
        required = code.co_varnames[: code.co_argcount - defaults]
        required_kw = [
            name
            for name in code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
            if name not in kw_defaults
        ]
        missing = list(required) + required_kw
        if missing:
            _fail("invalid_main", f"main() must be callable without arguments: missing a required argument: '{missing[0]}'")
        return
    import inspect

    try:
        inspect.signature(main).bind()
    except TypeError as exc:
        _fail("invalid_main", f"main() must be callable without arguments: {exc}")
    except ValueError:
        pass


_MIB = 1024 * 1024


def _wait_for_job():
    """A ready sandbox (of the pool, or of a sandbox pod): import the preloaded modules, tell the
    supervisor (one byte on the result pipe), then wait for exactly one job, a JSON
    `sandbox::Job`, on stdin. Its limits are put in place before any of its code runs: the CPU
    limit counts from now (the CPU spent importing is added), and the file-size and open-file
    limits are lowered, soft and hard, so the script cannot raise them again; so are memory
    (RLIMIT_AS) and processes (RLIMIT_NPROC) when `_LOWER` names them (no cgroups, as inside
    gVisor). Otherwise memory and processes are the supervisor's cgroup's, set from outside when
    it hands over the job; the deadline and the output caps are always the supervisor's."""
    import json
    import resource

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
        if not isinstance(source, str):
            raise TypeError("script")
    except (ValueError, KeyError, TypeError):
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


# Linux constants (x86-64) for the template's system calls, made through ctypes.
_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV = 2, 4
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 24, 38, 22, 2
_CAPABILITY_VERSION_3 = 0x20080522
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096
_PR_SET_DUMPABLE = 4
# What a fork request carries: "<tmp bytes> <backstop seconds> <host id>" and six fds (stdin,
# stdout, stderr, result, status, and the id's lease, which the keeper holds while it lives).
_FORK_FDS = 6
# The template jail's /proc (nsjail.rs, TEMPLATE_PROC) and the device nodes of every sandbox id
# (TEMPLATE_IDS): inside its /tmp, which every forked sandbox covers with its own.
_TEMPLATE_PROC = "/tmp/.proc"
_TEMPLATE_IDS = "/tmp/.ids"
# The uid and gid of the script inside its user namespace (ids.rs, ID_IN_SANDBOX).
_NOBODY = 65534


def _serve_template():
    """The pool's template (src/sandbox/warm/template/): imports the preloaded modules once, then forks
    one ready sandbox per request on the control socket, for ever. It never reads or runs a
    script, and it stays single-threaded (a fork copies only the calling thread). Returns only in
    a forked sandbox, which then waits for its one job like any ready sandbox."""
    import ctypes
    import signal
    import socket

    for name in _PRELOAD:
        __import__(name)
    # Forks share nothing writable with it or each other unless a mapping is shared: refuse to
    # serve if an import made one (a fork would write into the template's pages).
    with open(f"{_TEMPLATE_PROC}/{_getpid()}/maps") as maps:
        shared = [line.strip() for line in maps if line.split()[1][1] == "w" and line.split()[1][3] == "s"]
    if shared:
        os.write(2, f"pyexec template: writable shared mappings after the imports: {shared}\n".encode())
        _exit(70)
    libc = ctypes.CDLL(None, use_errno=True)
    proc = os.open(_TEMPLATE_PROC, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # A full collection in a fork would write to every tracked object's header, copying the
    # template's whole heap into the sandbox: what the imports made stays out of collections.
    import gc

    gc.freeze()
    control = socket.socket(fileno=_TEMPLATE)
    # The keepers it forks are reaped by the kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _write(_result_fd, b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, _FORK_FDS)
        except OSError:
            _exit(0)
        if not message:
            # The supervisor closed its end: the pool is done with it.
            _exit(0)
        try:
            tmp_bytes, backstop, sandbox_id = (int(field) for field in message.split())
        except ValueError:
            tmp_bytes = None
        if tmp_bytes is None or len(fds) != _FORK_FDS:
            for fd in fds:
                os.close(fd)
            continue
        if len(os.listdir(f"{_TEMPLATE_PROC}/{_getpid()}/task")) != 1:
            # A thread (started by a preloaded module) would be missing from every fork.
            os.write(2, b"pyexec template: more than one thread; ending\n")
            _exit(70)
        if os.fork() == 0:
            _keep(libc, proc, control, fds, tmp_bytes, backstop, sandbox_id)
            return
        for fd in fds:
            os.close(fd)


def _check(result, what):
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _keep(libc, proc, control, fds, tmp_bytes, backstop, sandbox_id):
    """A forked sandbox's keeper, in the template's jail: says who it is (its pid, in the
    credentials of one byte on the status socket), waits until the supervisor has moved it into
    the sandbox's own cgroup, becomes the sandbox's host id (`sandbox_id`, uid and gid), makes the
    sandbox's own user namespace (owned by that id, with 65534 inside mapped to it), mount, pid,
    network, IPC, UTS and cgroup namespaces, forks the sandbox's first process (pid 1 of its
    namespace), then waits for it, kills it at `backstop` seconds (like nsjail's time limit), and
    writes how it ended on the status socket. Returns only in the sandbox's first process."""
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    control.close()
    stdin_r, stdout_w, stderr_w, result_w, status_fd, _lease = fds
    status = socket.socket(fileno=status_fd)
    try:
        status.sendall(b"P")
        if status.recv(1) != b"G":
            _exit(0)
        # The template kept CAP_SETUID and CAP_SETGID (in its own user namespace, where the
        # range of sandbox ids is mapped) for this. A change of uid clears the dumpable flag,
        # which would leave this process's /proc files to root: set it again to write the maps.
        os.setresgid(sandbox_id, sandbox_id, sandbox_id)
        os.setresuid(sandbox_id, sandbox_id, sandbox_id)
        _check(libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
        _check(libc.unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        maps = (("setgroups", "deny"), ("uid_map", f"{_NOBODY} {sandbox_id} 1"), ("gid_map", f"{_NOBODY} {sandbox_id} 1"))
        for name, line in maps:
            fd = os.open(f"self/{name}", os.O_WRONLY, dir_fd=proc)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        namespaces = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWCGROUP
        _check(libc.unshare(namespaces), "unshare")
        child = os.fork()
    except BaseException as exc:
        os.write(stderr_w, f"pyexec template: the sandbox's namespaces could not be made: {exc}\n".encode())
        _exit(1)
    if child == 0:
        status.close()
        os.close(proc)
        _enter_sandbox(libc, stdin_r, stdout_w, stderr_w, result_w, tmp_bytes, sandbox_id)
        return
    for fd in (stdin_r, stdout_w, stderr_w, result_w, proc):
        os.close(fd)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(child, signal.SIGKILL))
    signal.alarm(max(1, backstop))
    _, wait_status = os.waitpid(child, 0)
    if os.WIFSIGNALED(wait_status):
        ended = f"signaled {os.WTERMSIG(wait_status)}\n"
    else:
        ended = f"exited {os.waitstatus_to_exitcode(wait_status)}\n"
    try:
        status.sendall(ended.encode())
    except OSError:
        pass
    _exit(0)


def _enter_sandbox(libc, stdin_r, stdout_w, stderr_w, result_w, tmp_bytes, sandbox_id):
    """The first process of a forked sandbox, pid 1 of its own namespaces: its id's own device
    nodes (read-only binds, as nsjail gives every other jail), its own /tmp and /dev/shm (empty
    tmpfs of the jail's sizes; the new /tmp covers the template's /proc and the ids' devices),
    its pipes as stdin, stdout, stderr and result, nothing else open; then no capability, no way
    to regain one, the namespace and mount calls denied (the filter nsjail.cfg gives every other
    jail), and random state of its own."""
    import ctypes

    global _result_fd, _HARNESS_PID
    # A session and process group of its own: kill(0, ...) signals the caller's process group
    # without a pid lookup, so in the template's group it would reach the template, the keepers
    # and every sandbox forked beside it.
    os.setsid()
    # The keeper, a fork of the template, counts the template's resident pages as its own: left
    # as it is, the kernel's OOM killer would choose it, not the script, when the sandbox runs
    # out of memory. The script's processes (which inherit this, and have no /proc to change
    # it) come first instead.
    with open(f"{_TEMPLATE_PROC}/self/oom_score_adj", "w") as adj:
        adj.write("1000")
    for name, target in (("null", "null"), ("zero", "zero"), ("urandom", "urandom"), ("urandom", "random")):
        source = f"{_TEMPLATE_IDS}/{sandbox_id}/{name}".encode()
        target = f"/dev/{target}".encode()
        _check(libc.mount(source, target, None, _MS_BIND, None), f"bind {source.decode()}")
        # The template sees the ids' nodes read-only, so the bind is already; say it anyway.
        _check(libc.mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None), f"read-only {target.decode()}")
    shm = os.statvfs("/dev/shm")
    mounts = (
        (b"/tmp", f"size={tmp_bytes},mode=1777", _MS_NOSUID | _MS_NODEV),
        (b"/dev/shm", f"size={shm.f_blocks * shm.f_frsize},mode=1777", _MS_NOSUID | _MS_NODEV),
    )
    for target, options, flags in mounts:
        _check(libc.mount(b"none", target, b"tmpfs", flags, options.encode()), f"mount {target.decode()}")
    # The working directory was the template's /tmp.
    os.chdir("/tmp")
    os.dup2(stdin_r, 0)
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    os.close(_result_fd)
    _result_fd = os.dup(result_w)
    os.set_inheritable(_result_fd, False)
    os.closerange(3, _result_fd)
    os.closerange(_result_fd + 1, 1 << 20)

    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")

    class _Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = ctypes.create_string_buffer(bytes.fromhex(_FILTER))
    program = _Program(len(code.raw) // 8, ctypes.addressof(code))
    _check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")

    # Every fork of the template starts with its random state: draw new.
    if "random" in sys.modules:
        sys.modules["random"].seed()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    if "tempfile" in sys.modules:
        sys.modules["tempfile"]._name_sequence = None
    _HARNESS_PID = _getpid()


_source = ""
# Real-time and other queued signals a sandbox may have pending: the kernel charges them to the
# owners of every user namespace above it, up to the host's root, whose budget is the host's.
_SIGPENDING = 256


def _cap_kernel_budgets():
    """Caps, soft and hard, that no process of the sandbox can raise again: queued signals
    (`_SIGPENDING`), and core dumps at 1 byte, which the kernel reads as "never start a core-dump
    helper" where the host's core_pattern is a pipe (0 would still start it)."""
    import resource

    for which, cap in ((resource.RLIMIT_SIGPENDING, _SIGPENDING), (resource.RLIMIT_CORE, 1)):
        _, hard = resource.getrlimit(which)
        limit = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        try:
            resource.setrlimit(which, (limit, limit))
        except (ValueError, OSError):
            # gVisor refuses some of these; its kernel is the sandbox's own, so the budgets
            # they protect are too. On a host kernel they are set (tests/http_tenants/ids.rs).
            pass


def _main():
    _cap_kernel_budgets()
    if _TEMPLATE is not None:
        _serve_template()
    faulthandler.enable()
    raw = sys.stdin.buffer.read() if _PRELOAD is None else _wait_for_job()
    # The script arrives on stdin; the script itself sees an empty stdin.
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail("syntax_error", f"SyntaxError: the script is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        code = compile(source, _SCRIPT_NAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno if exc.lineno is not None else 0
        column = exc.offset if exc.offset is not None else 0
        _fail("syntax_error", f"{type(exc).__name__}: {exc.msg} (line {line}, column {column})")
    except (ValueError, OverflowError, MemoryError, RecursionError) as exc:
        _fail("syntax_error", f"SyntaxError: {_one_line(exc)}")
    global _source
    _source = source
    sys.stdout.reconfigure(line_buffering=True)

    # A real module in sys.modules, so that pickle finds what the script defines (functions for
    # multiprocessing.Pool, dataclasses); not named __main__, so a closing
    # `if __name__ == "__main__": main()` does not run main() a second time.
    script_module = type(sys)("__pyexec__")
    script_module.__file__ = _SCRIPT_NAME
    script_module.__builtins__ = __builtins__
    sys.modules["__pyexec__"] = script_module
    module = script_module.__dict__
    sys.argv = [_SCRIPT_NAME]
    _run_user_code(exec, code, module)

    main = module.get("main")
    if main is None:
        _fail("no_main", "Script must contain a 'main()' function.")
    if not callable(main):
        _fail("invalid_main", f"'main' must be a function, but it is a {_type_name(main)}")
    _check_plain_call(main)

    value = _run_user_code(main)
    if type(value).__name__ in ("generator", "coroutine", "async_generator"):
        if hasattr(value, "close"):
            value.close()
        _fail("invalid_main", "main() must return a dict, not a generator or coroutine")
    if not isinstance(value, dict):
        _fail("not_a_dict", f"main() must return a dict, but it returned {_type_name(value)}")
    try:
        result = _convert(value, "result", 0)
    except _Unconvertible as exc:
        _fail("unserializable", str(exc))
    except RecursionError:
        _fail("unserializable", "result: nested too deeply to convert to JSON")
    except BaseException as exc:
        _fail("unserializable", f"result: converting to JSON failed: {_one_line(exc)}")
    _report({"ok": True, "result": result}, 0)


_main()
