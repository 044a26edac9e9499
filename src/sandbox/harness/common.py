# pyexec harness: runs inside the sandbox as `python3 -I -S -B -c <the harness> RESULT_FD`, or
# `... RESULT_FD preload=<modules>` in a ready sandbox of the pool (see _wait_for_job).
#
# The harness is one program made of this folder's files, concatenated in this order
# (HARNESS in src/sandbox/jail/nsjail.rs): common.py (start-up, converting the value, the
# report), ready.py (a ready sandbox waits for its job and applies its limits), template.py (the
# pool's template, the keeper and the forked sandbox), files.py (a job's input files, the
# output folder, figures), run.py (running one script; its last line starts the harness). Each
# part uses only what the parts before it define at the top level.
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
# running a script (_serve_template). A cold run says how many bytes of output files it returns
# ("out=<bytes>"); a ready sandbox learns it, and its input files, from its job.
_PRELOAD = None
_LOWER = ()
_TEMPLATE = None
_FILTER = ""
_OUT_BYTES = 0
_INPUT_FILES = {}
for _arg in sys.argv[2:]:
    if _arg.startswith("out="):
        _OUT_BYTES = int(_arg[len("out="):])
    elif _arg.startswith("preload="):
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


