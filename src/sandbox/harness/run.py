# The harness's run of one script (see common.py): compiles it, runs it and main(), converts
# main()'s value and reports it; the last line starts the harness.

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
            # they protect are too. On a host kernel they are set (tests/host/http_tenants/ids.rs).
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
    if _INPUT_FILES:
        _write_input_files(_INPUT_FILES)
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
    _save_figures()
    files, omitted = _output_files()
    report = {"ok": True, "result": result}
    if files:
        report["files"] = files
    if omitted:
        report["files_omitted"] = omitted
    _report(report, 0)


_main()
