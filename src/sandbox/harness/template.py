# The harness's template (see common.py): the pool's template interpreter, which forks ready
# sandboxes, the keeper of each, and a forked sandbox's entry into its own namespaces.

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
        # The template sees the ids' nodes read-only, so the bind is already; say it anyway,
        # keeping the bind's nosuid, nodev and noexec: where they are locked (a /dev made in a
        # container's namespaces), a remount that would clear them is refused (EPERM).
        # (statvfs gives them at the same bits as mount takes them.)
        kept = os.statvfs(target).f_flag & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | kept
        _check(libc.mount(None, target, None, flags, None), f"read-only {target.decode()}")
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


