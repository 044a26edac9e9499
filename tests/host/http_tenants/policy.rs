//! Kernel interfaces with no place in a single-use script sandbox are refused by the seccomp
//! policy, so no sandbox can spend or watch what they share.

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{repo, Server};

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;
const EOPNOTSUPP: i64 = 95;

/// How often the host's side is sampled while a sandbox holds or probes.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A file of the shared read-only binds that every sandbox sees at the same path as the host.
const SHARED_FILE: &str = "/usr/lib/python3.11/os.py";

/// Python that makes one raw system call and returns 0 or its errno; an argument is a number
/// or a ctypes object passed by reference.
const SYSCALL_PY: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def errno_of(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return 0 if ret >= 0 else ctypes.get_errno()
"#;

/// The script's result, after asserting that it succeeded.
fn result_of(body: &Value) -> Value {
    assert_eq!(body["outcome"], "success", "{body}");
    body["result"].clone()
}

async fn execute(server: &Server, script: &str) -> Value {
    let (status, body) = server.execute(script, Some(json!({"timeout_seconds": 30}))).await;
    assert_eq!(status, 200, "{body}");
    result_of(&body)
}

/// Runs `request` to its end while sampling `probe` every `SAMPLE_EVERY`; returns its output
/// and the samples (at least one).
async fn sampling_while<T, S>(request: impl Future<Output = T>, mut probe: impl FnMut() -> S) -> (T, Vec<S>) {
    tokio::pin!(request);
    let mut samples = vec![probe()];
    loop {
        tokio::select! {
            output = &mut request => return (output, samples),
            _ = tokio::time::sleep(SAMPLE_EVERY) => samples.push(probe()),
        }
    }
}

/// Runs Python on the host (the repository's interpreter, outside any sandbox) and returns what
/// it prints.
fn host_python(code: &str) -> String {
    let python = repo().join(".tools/python/bin/python3");
    let output = Command::new(&python).args(["-c", code]).output().expect("run the host's python3");
    assert!(output.status.success(), "host python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The host's own io_setup(1) then io_destroy: 0, or io_setup's errno.
fn host_io_setup() -> String {
    host_python(
        "import ctypes
libc = ctypes.CDLL(None, use_errno=True)
context = ctypes.c_ulong(0)
if libc.syscall(206, 1, ctypes.byref(context)) == 0:
    libc.syscall(207, context)
    print(0)
else:
    print(ctypes.get_errno())",
    )
}

/// The host's own inotify_init1: 0, or its errno.
fn host_inotify_init1() -> String {
    host_python(
        "import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print(ctypes.get_errno() if fd < 0 else 0)
if fd >= 0:
    os.close(fd)",
    )
}

/// How many bytes of `path` the host finds in the page cache from its start (a read with
/// RWF_NOWAIT, which never goes to the disk), and the file's size.
fn host_cached_bytes(path: &str) -> (u64, u64) {
    let printed = host_python(&format!(
        "import os
fd = os.open({path:?}, os.O_RDONLY)
size = os.fstat(fd).st_size
try:
    cached = os.preadv(fd, [bytearray(size)], 0, os.RWF_NOWAIT)
except BlockingIOError:
    cached = 0
print(cached, size)"
    ));
    let numbers: Vec<u64> = printed.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "{printed}");
    (numbers[0], numbers[1])
}

fn host_aio_nr() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/fs/aio-nr").expect("read /proc/sys/fs/aio-nr");
    text.trim().parse().expect("a number in /proc/sys/fs/aio-nr")
}

/// Linux AIO contexts count against the host-wide fs.aio-max-nr (65536 by default): one
/// sandbox that asks for all of them while it sleeps is refused, the host's aio-nr never grows
/// by its request, a second sandbox is refused too, and the host's own io_setup keeps working.
#[tokio::test]
async fn a_sandbox_asking_for_the_hosts_whole_aio_budget_is_refused_and_the_host_keeps_it() {
    let server = Server::start().await;
    let holder = format!(
        "{SYSCALL_PY}
import time

def main():
    context = ctypes.c_ulong(0)
    errno = errno_of(206, 65536, ctypes.byref(context))  # io_setup
    time.sleep(4)  # holding the contexts, had they been granted
    return {{'io_setup': errno}}
"
    );
    let second = format!(
        "{SYSCALL_PY}
def main():
    context = ctypes.c_ulong(0)
    return {{'io_setup': errno_of(206, 1, ctypes.byref(context))}}
"
    );
    let before = host_aio_nr();
    let holding = sampling_while(execute(&server, &holder), || (host_aio_nr(), host_io_setup()));
    let probing = async {
        server.wait_for_in_flight(1).await;
        execute(&server, &second).await
    };
    let ((held, samples), probed) = tokio::join!(holding, probing);

    assert_eq!(held, json!({"io_setup": ENOSYS}), "the holder's io_setup(65536)");
    assert_eq!(probed, json!({"io_setup": ENOSYS}), "a second sandbox's io_setup(1)");
    let most = samples.iter().map(|(aio_nr, _)| *aio_nr).max().unwrap_or(before);
    assert!(most < before + 65536, "the host's fs.aio-nr grew from {before} to {most} while the sandbox held");
    let refused: Vec<&String> = samples.iter().map(|(_, host)| host).filter(|errno| *errno != "0").collect();
    assert!(refused.is_empty(), "the host's own io_setup(1) failed while the sandbox held: errnos {refused:?}");
    server.assert_healthy_and_clean().await;
}

/// inotify instances are charged to the service's uid on the host across the user namespaces
/// (fs.inotify.max_user_instances, 128 by default): a sandbox that takes as many as it can gets
/// none, and a host process can make one all the while.
#[tokio::test]
async fn a_sandbox_cannot_take_the_hosts_inotify_instances() {
    let server = Server::start().await;
    let script = r#"
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)

def main():
    fds, errno = [], 0
    while len(fds) < 200:
        ctypes.set_errno(0)
        fd = libc.inotify_init1(0o2000000)  # IN_CLOEXEC
        if fd < 0:
            errno = ctypes.get_errno()
            break
        fds.append(fd)
    time.sleep(3)  # holding them
    return {'instances': len(fds), 'errno': errno}
"#;
    let (held, host) = sampling_while(execute(&server, script), host_inotify_init1).await;
    assert_eq!(held, json!({"instances": 0, "errno": ENOSYS}));
    let refused: Vec<&String> = host.iter().filter(|errno| *errno != "0").collect();
    assert!(refused.is_empty(), "the host's inotify_init1 failed while the sandbox held: errnos {refused:?}");
    server.assert_healthy_and_clean().await;
}

/// The standard library is a read-only bind every sandbox shares: a sandbox that watches it with
/// inotify (or tries fanotify) while another imports a module learns nothing; every call of the
/// watcher answers ENOSYS.
#[tokio::test]
async fn a_sandbox_cannot_watch_the_shared_standard_library_for_another_sandboxs_imports() {
    let server = Server::start().await;
    let watcher = r#"
import ctypes, os, select, struct, time
libc = ctypes.CDLL(None, use_errno=True)

def errno_of(ret):
    return 0 if ret >= 0 else ctypes.get_errno()

def main():
    ctypes.set_errno(0)
    fd = libc.inotify_init1(0o4000)  # IN_NONBLOCK
    errnos = {'inotify_init1': errno_of(fd), 'inotify_add_watch': []}
    for directory in [b'/usr/lib/python3.11', b'/usr/lib/python3.11/__pycache__']:
        ctypes.set_errno(0)
        errnos['inotify_add_watch'].append(errno_of(libc.inotify_add_watch(fd, directory, 0x20 | 0x1)))  # IN_OPEN | IN_ACCESS
    ctypes.set_errno(0)
    # FAN_CLASS_NOTIF | FAN_REPORT_FID: allowed to unprivileged users since Linux 5.13.
    errnos['fanotify_init'] = errno_of(libc.fanotify_init(0x200, 0))
    seen = set()
    deadline = time.monotonic() + 4
    # The watcher stays for its whole window with or without a watch, so that the importer runs
    # while it is in flight.
    while time.monotonic() < deadline:
        if fd < 0 or not select.select([fd], [], [], 0.2)[0]:
            time.sleep(0.2 if fd < 0 else 0)
            continue
        events = os.read(fd, 65536)
        while events:
            length = struct.unpack_from('iIII', events)[3]
            seen.add(events[16:16 + length].rstrip(b'\0').decode())
            events = events[16 + length:]
    return {'errnos': errnos, 'seen': sorted(name for name in seen if name.startswith('colorsys'))}
"#;
    // The importer imports a module nothing else uses, again and again for a while, so that a
    // watcher's watch (had it one) is in place for some of the imports.
    let importer = r#"
import importlib, sys, time

def main():
    for _ in range(25):
        sys.modules.pop('colorsys', None)
        importlib.import_module('colorsys')
        time.sleep(0.1)
    return {'imported': 'colorsys' in sys.modules}
"#;
    let importing = async {
        server.wait_for_in_flight(1).await;
        execute(&server, importer).await
    };
    let (watched, imported) = tokio::join!(execute(&server, watcher), importing);
    assert_eq!(imported, json!({"imported": true}));
    assert_eq!(
        watched,
        json!({
            "errnos": {"inotify_init1": ENOSYS, "inotify_add_watch": [ENOSYS, ENOSYS], "fanotify_init": ENOSYS},
            "seen": [],
        })
    );
    server.assert_healthy_and_clean().await;
}

/// The page cache of the shared binds is the host's: a sandbox can neither evict a shared file
/// (POSIX_FADV_DONTNEED answers EPERM, and the host still finds the whole file cached after)
/// nor probe which of its pages are cached (preadv2 with RWF_NOWAIT answers EOPNOTSUPP,
/// cachestat ENOSYS); plain reads and other advice still work.
#[tokio::test]
async fn a_sandbox_can_neither_evict_nor_probe_the_page_cache_of_shared_files() {
    let server = Server::start().await;
    std::fs::read(SHARED_FILE).expect("the host reads the shared file into its page cache");
    let (cached, size) = host_cached_bytes(SHARED_FILE);
    assert_eq!(cached, size, "the host's read did not leave {SHARED_FILE} cached");
    let script = format!(
        "{SYSCALL_PY}
import os

def refused(call, *args):
    try:
        call(*args)
        return 0
    except OSError as error:
        return error.errno

def main():
    fd = os.open({SHARED_FILE:?}, os.O_RDONLY)
    whole_file = (ctypes.c_uint64 * 2)(0, 0)  # struct cachestat_range: offset 0, length 0 (to the end)
    stat = (ctypes.c_uint64 * 5)()
    return {{
        'fadvise_dontneed': refused(os.posix_fadvise, fd, 0, 0, os.POSIX_FADV_DONTNEED),
        'preadv2_nowait': refused(os.preadv, fd, [bytearray(4096)], 0, os.RWF_NOWAIT),
        'cachestat': errno_of(451, fd, ctypes.byref(whole_file), ctypes.byref(stat), 0),
        'fadvise_sequential': refused(os.posix_fadvise, fd, 0, 0, os.POSIX_FADV_SEQUENTIAL),
        'pread': len(os.pread(fd, 16, 0)),
    }}
"
    );
    let result = execute(&server, &script).await;
    assert_eq!(
        result,
        json!({
            "fadvise_dontneed": EPERM,
            "preadv2_nowait": EOPNOTSUPP,
            "cachestat": ENOSYS,
            "fadvise_sequential": 0,
            "pread": 16,
        })
    );
    let (cached, size) = host_cached_bytes(SHARED_FILE);
    assert_eq!(cached, size, "{SHARED_FILE} left the host's page cache after the sandbox ran");
    server.assert_healthy_and_clean().await;
}

/// A flock on a shared read-only file (any read-only open may take LOCK_EX) would be seen by
/// every sandbox: one that tries to hold one is refused, and a second one probing the same file
/// meanwhile never sees a conflict, only ENOSYS.
#[tokio::test]
async fn a_sandbox_cannot_flock_a_shared_file_for_another_to_see() {
    let server = Server::start().await;
    let holder = format!(
        "import fcntl, os, time

def main():
    fd = os.open({SHARED_FILE:?}, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        errno = 0
    except OSError as error:
        errno = error.errno
    time.sleep(5)  # holding it, had it been granted
    return {{'flock': errno}}
"
    );
    let prober = format!(
        "import fcntl, os, time

def main():
    fd = os.open({SHARED_FILE:?}, os.O_RDONLY)
    seen = set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            seen.add(0)
        except OSError as error:
            seen.add(error.errno)
        time.sleep(0.05)
    return {{'flock': sorted(seen)}}
"
    );
    let probing = async {
        server.wait_for_in_flight(1).await;
        execute(&server, &prober).await
    };
    let (held, probed) = tokio::join!(execute(&server, &holder), probing);
    assert_eq!(held, json!({"flock": ENOSYS}));
    assert_eq!(probed, json!({"flock": [ENOSYS]}), "EWOULDBLOCK (11) is another sandbox's lock");
    server.assert_healthy_and_clean().await;
}

/// Facts of the host that move with the neighbours or describe the host: the kernel log
/// (syslog SYSLOG_ACTION_READ_ALL; the kernel refuses it too where kernel.dmesg_restrict is 1),
/// sysinfo (RAM, uptime, process count), and the mount tree (listmount, statmount).
#[tokio::test]
async fn a_sandbox_cannot_read_the_kernel_log_sysinfo_or_the_mount_tree() {
    let server = Server::start().await;
    let script = format!(
        "{SYSCALL_PY}
import struct

def main():
    log = ctypes.create_string_buffer(1 << 16)
    info = ctypes.create_string_buffer(128)  # struct sysinfo is 112 bytes
    ids = (ctypes.c_uint64 * 64)()
    root = ctypes.create_string_buffer(struct.pack('IIQQ', 24, 0, 2**64 - 1, 0))  # mnt_id_req: LSMT_ROOT
    listed = errno_of(458, root, ids, 64, 0)
    one = ctypes.create_string_buffer(struct.pack('IIQQ', 24, 0, ids[0], 1))  # STATMOUNT_SB_BASIC
    buffer = ctypes.create_string_buffer(4096)
    return {{
        'syslog_read_all': errno_of(103, 3, log, len(log)),
        'sysinfo': errno_of(99, info),
        'listmount': listed,
        'statmount': errno_of(457, one, buffer, len(buffer), 0),
    }}
"
    );
    let result = execute(&server, &script).await;
    assert_eq!(result, json!({"syslog_read_all": EPERM, "sysinfo": EPERM, "listmount": ENOSYS, "statmount": ENOSYS}));
    server.assert_healthy_and_clean().await;
}
