# The four gVisor behaviours that decide nsjail's configuration inside runsc, each shown by the
# syscall nsjail makes. Run as root on the host and inside gVisor, and compare:
#   python3 hack/gvisor/gvisor-quirks.py
#   runsc --network=none do /usr/bin/python3 hack/gvisor/gvisor-quirks.py
# (runsc do mirrors the host's root filesystem, so the path works in both.)
import ctypes
import os
import resource
import socket
import struct
import sys

sys.stdout.reconfigure(line_buffering=True)

libc = ctypes.CDLL(None, use_errno=True)


def err(rc):
    return "ok" if rc == 0 else f"-1 {os.strerror(ctypes.get_errno())}"


# 1. clone_newnet: nsjail's rtnl_link_alloc_cache() sends RTM_GETLINK with REQUEST|ACK|DUMP.
# Linux answers NEWLINK..., DONE; gVisor inserts an ACK (NLMSG_ERROR, errno 0) before DONE, and
# libnl, having counted the ACK as the end of the request, rejects the DONE's sequence number.
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
s.send(struct.pack("=IHHII", 16 + len(body), 18, 0x1 | 0x4 | 0x300, 4242, 0) + body)
s.settimeout(1)
seen, done = [], False
while not done:
    try:
        data = s.recv(65536)
    except socket.timeout:
        seen.append("(timeout)")
        break
    off = 0
    while off + 16 <= len(data):
        length, typ, _, seq, _ = struct.unpack_from("=IHHII", data, off)
        label = {2: "ERROR", 3: "DONE", 16: "NEWLINK"}.get(typ, str(typ))
        if typ == 2:
            label += f"(errno={-struct.unpack_from('=i', data, off + 16)[0]})"
        seen.append(label)
        done = done or typ == 3
        off += (length + 3) & ~3
print("1. RTM_GETLINK dump + NLM_F_ACK answered with:", ", ".join(seen))

# 2. clone_newuser / euid 0: nsjail's child sets SECBIT_KEEP_CAPS|SECBIT_NO_SETUID_FIXUP.
for name, bits in (("KEEP_CAPS", 0x10), ("KEEP_CAPS|NO_SETUID_FIXUP", 0x14)):
    print(f"2. uid={os.getuid()} prctl(PR_SET_SECUREBITS, {name}) =", err(libc.prctl(28, bits, 0, 0, 0)))

# 3. rlimits: nsjail sets RLIMIT_MSGQUEUE (to its current value when the type is SOFT).
cur = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
try:
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (cur[0], cur[0]))
    print(f"3. setrlimit(RLIMIT_MSGQUEUE, {cur[0]}) = ok")
except (OSError, ValueError) as e:  # Python reports EPERM from setrlimit as ValueError
    print(f"3. setrlimit(RLIMIT_MSGQUEUE, {cur[0]}) (current {cur}) = -1 {e}")

# 4. clone_newcgroup: unshare(CLONE_NEWCGROUP) in a child (EINVAL in gVisor unless a cgroup v2
# filesystem was mounted in the sandbox).
pid = os.fork()
if pid == 0:
    rc = libc.unshare(0x02000000)
    print("4. unshare(CLONE_NEWCGROUP) =", err(rc), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
