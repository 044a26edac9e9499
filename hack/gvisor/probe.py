# What a script sees and can do inside the jail. Prints one "PROBE key: value" line per check.
# Network checks only ever target the loopback address; the interface list shows there is no
# other way out.
import errno
import json
import os
import resource
import socket
import sys
import time


def out(key, value):
    print(f"PROBE {key}: {value}", flush=True)


def status_fields(*names):
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in names:
                got[k] = v.strip()
    return got


def attempt(fn):
    try:
        return "ok " + repr(fn())
    except OSError as e:
        return f"{type(e).__name__} errno={e.errno} ({errno.errorcode.get(e.errno, '?')}) {e.strerror}"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


import ctypes
_libc = ctypes.CDLL(None, use_errno=True)


def _errcheck(rc):
    if rc == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def caps():
    # capget(2) without /proc (the jail has no /proc): effective, permitted, inheritable.
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    h = Header(0x20080522, 0)
    d = (Data * 2)()
    _errcheck(_libc.capget(ctypes.byref(h), d))
    v = lambda f: hex(getattr(d[0], f) | (getattr(d[1], f) << 32))
    bounding = [c for c in range(41) if _libc.prctl(23, c, 0, 0, 0) == 1]  # PR_CAPBSET_READ
    ambient = [c for c in range(41) if _libc.prctl(47, 1, c, 0, 0) == 1]  # PR_CAP_AMBIENT_IS_SET
    return f"eff={v('effective')} prm={v('permitted')} inh={v('inheritable')} bounding={bounding} ambient={ambient}"


def unshare(flags):
    return _errcheck(_libc.unshare(ctypes.c_int(flags)))


out("ids", f"uid={os.getuid()} euid={os.geteuid()} gid={os.getgid()} groups={os.getgroups()} pid={os.getpid()} ppid={os.getppid()}")
out("caps", attempt(caps))
out("no_new_privs", attempt(lambda: _libc.prctl(39, 0, 0, 0, 0)))  # PR_GET_NO_NEW_PRIVS
out("seccomp mode", attempt(lambda: _libc.prctl(21, 0, 0, 0, 0)))  # PR_GET_SECCOMP: 2 = filter
out("status", attempt(lambda: status_fields("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters")))
out("uname", " ".join(os.uname()))
out("listdir /", sorted(os.listdir("/")))
out("pids visible in /proc", attempt(lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit())))
out("env", json.dumps(dict(os.environ), sort_keys=True))
out("cwd", os.getcwd())
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_STACK", "RLIMIT_CORE"):
    out(f"rlimit {name}", resource.getrlimit(getattr(resource, name)))
out("mounts", attempt(lambda: [" ".join(l.split()[4:6]) for l in open("/proc/self/mountinfo")]))
out("uid_map", attempt(lambda: open("/proc/self/uid_map").read().strip()))
out("cgroup", attempt(lambda: open("/proc/self/cgroup").read().strip().replace("\n", " | ")))

# Network: interfaces, loopback and an unrouted address, UDP send, raw/netlink sockets.
out("net if_nameindex", attempt(socket.if_nameindex))
def tcp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    t = time.monotonic()
    try:
        s.connect(addr)
        return "CONNECTED"
    finally:
        s.close()
        out(f"net connect {addr} took", f"{(time.monotonic() - t) * 1000:.1f} ms")
out("net tcp 127.0.0.1:80", attempt(lambda: tcp(("127.0.0.1", 80))))
def bind_lo():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s.getsockname()
    finally:
        s.close()
out("net bind+listen 127.0.0.1", attempt(bind_lo))
out("net socket AF_INET6", attempt(lambda: socket.socket(socket.AF_INET6).close()))
out("net socket AF_NETLINK", attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()))
out("net socket SOCK_RAW icmp", attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()))
out("net socket AF_PACKET", attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()))

# Filesystem: writes outside /tmp must fail; /tmp must work.
def write(path):
    path = path.split(" ")[0]
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
    return "written"
for path in ("/tmp/probe.txt", "/rotest/probe.txt (a 1777 tmpfs bound read-only)", "/dev/shm/probe.txt", "/probe.txt", "/usr/lib/probe.txt", "/opt/pyexec/probe.txt", "/proc/sys/kernel/hostname"):
    out(f"write {path}", attempt(lambda: write(path)))
out("mkdir /newdir", attempt(lambda: os.mkdir("/newdir")))
out("read /etc/passwd", attempt(lambda: open("/etc/passwd").read()[:40]))
out("list /sys", attempt(lambda: os.listdir("/sys")))

# Privilege: what a root-only or namespace operation does.
out("setuid(0)", attempt(lambda: os.setuid(0)))
out("unshare(CLONE_NEWUSER)", attempt(lambda: unshare(0x10000000)))
out("unshare(CLONE_NEWNET)", attempt(lambda: unshare(0x40000000)))
out("unshare(CLONE_NEWNS)", attempt(lambda: unshare(0x00020000)))
out("sethostname", attempt(lambda: socket.sethostname("x")))
out("kill(1, 0)", attempt(lambda: os.kill(1, 0)))
out("ptrace-ish: read /proc/1/environ", attempt(lambda: open("/proc/1/environ", "rb").read()[:80]))
def thread_and_fork():
    import threading
    got = []
    t = threading.Thread(target=lambda: got.append("thread"))
    t.start(); t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return got + [f"child exit {os.waitstatus_to_exitcode(status)}"]
out("thread + fork", attempt(thread_and_fork))
out("subprocess /usr/bin/python3 -c 1", attempt(lambda: __import__("subprocess").run(["/usr/bin/python3", "-c", "1"]).returncode))
def nofile():
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        return f"{len(fds)} fds then {e.strerror}"
    finally:
        for fd in fds:
            os.close(fd)
out("RLIMIT_NOFILE enforced", attempt(nofile))
def fsize():
    with open("/tmp/big", "wb") as f:
        try:
            for i in range(64):
                f.write(b"\0" * (1 << 20))
        except OSError as e:
            return f"stopped after {i} MiB: {e.strerror}"
        finally:
            pass
    return "wrote 64 MiB"
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
out("RLIMIT_FSIZE enforced", attempt(fsize))
def fill_tmp():
    # /tmp is nsjail's tmpfs of 64 MiB (the supervisor's default); 15 MiB files (under RLIMIT_FSIZE).
    written = 0
    try:
        for i in range(8):
            with open(f"/tmp/fill{i}", "wb") as f:
                for _ in range(15):
                    f.write(b"\1" * (1 << 20))
                    f.flush()
                    written += 1
        return f"wrote {written} MiB, no limit hit"
    except OSError as e:
        return f"stopped after {written} MiB: {e.strerror}"
    finally:
        for i in range(8):
            try:
                os.unlink(f"/tmp/fill{i}")
            except OSError:
                pass
out("tmpfs /tmp size enforced", attempt(fill_tmp))
print("PROBE done", flush=True)
