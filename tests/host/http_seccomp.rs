//! The seccomp policy of nsjail.cfg against a real server: each denied system call answers its
//! exact errno (the script goes on, the service stays up), and what ordinary scripts use —
//! threads, subprocesses, multiprocessing, numpy, pandas, temporary files, sqlite3, time zones —
//! still works. nsjail-gvisor.cfg must carry the same policy line for line.
//!
//! Calls are made through `ctypes` with x86-64 numbers (Python 3.11 has no `os.unshare`).
//! The arguments are ones the kernel itself would refuse with another errno (EINVAL, EFAULT,
//! EBADF, ESRCH, ENOSYS) or accept, so EPERM can only come from the filter; the exceptions are
//! marked.  Without the policy, unshare(CLONE_NEWUSER) succeeds and hands the script
//! CAP_SYS_ADMIN and CAP_NET_RAW in namespaces of its own (then mount, pivot_root and AF_PACKET
//! work): that is what the namespace rules prevent.

mod common;

use common::{Pool, Server};
use serde_json::{json, Value};

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;
const EOPNOTSUPP: i64 = 95;

/// A call the policy refuses: a name for the report, the x86-64 number, the arguments, and the
/// errno the script must see.
struct Denied {
    name: &'static str,
    nr: u32,
    args: &'static [i64],
    errno: i64,
}

const fn denied(name: &'static str, nr: u32, args: &'static [i64]) -> Denied {
    Denied { name, nr, args, errno: EPERM }
}

/// A call the policy answers ENOSYS, as a kernel built without it would.
const fn missing(name: &'static str, nr: u32, args: &'static [i64]) -> Denied {
    Denied { name, nr, args, errno: ENOSYS }
}

/// CLONE_THREAD without CLONE_SIGHAND: the kernel alone would answer EINVAL, so a clone that
/// got past the filter would fail differently and never create a process.
const CLONE_THREAD: i64 = 0x10000;

const DENIED: &[Denied] = &[
    // New namespaces of any kind.
    denied("unshare(CLONE_NEWUSER)", 272, &[0x1000_0000]),
    denied("unshare(CLONE_NEWNS)", 272, &[0x0002_0000]),
    denied("unshare(CLONE_NEWNET)", 272, &[0x4000_0000]),
    denied("unshare(CLONE_NEWTIME)", 272, &[0x80]),
    denied("setns", 308, &[-1, 0]),
    denied("clone(CLONE_NEWNS)", 56, &[0x0002_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWCGROUP)", 56, &[0x0200_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWUTS)", 56, &[0x0400_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWIPC)", 56, &[0x0800_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWUSER)", 56, &[0x1000_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWPID)", 56, &[0x2000_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    denied("clone(CLONE_NEWNET)", 56, &[0x4000_0000 | CLONE_THREAD, 0, 0, 0, 0]),
    // clone3's flags are in memory the filter cannot read: ENOSYS, so glibc falls back to clone.
    Denied { name: "clone3", nr: 435, args: &[0, 0], errno: ENOSYS },
    // Mounts, the new mount API, changing the root.
    denied("mount", 165, &[0, 0, 0, 0, 0]),
    denied("umount2", 166, &[0, 0]),
    denied("pivot_root", 155, &[0, 0]),
    denied("chroot", 161, &[0]),
    denied("fsopen", 430, &[0, 0]),
    denied("fsconfig", 431, &[-1, 0, 0, 0, 0]),
    denied("fsmount", 432, &[-1, 0, 0]),
    denied("move_mount", 429, &[-1, 0, -1, 0, 0]),
    denied("open_tree", 428, &[-1, 0, 0]),
    denied("fspick", 433, &[-1, 0, 0]),
    denied("mount_setattr", 442, &[-1, 0, 0, 0, 0]),
    // Large kernel interfaces.
    denied("bpf", 321, &[0, 0, 0]),
    // UFFD_USER_MODE_ONLY: allowed to unprivileged users, so only the filter refuses it.
    denied("userfaultfd", 323, &[1]),
    denied("io_uring_setup", 425, &[1, 0]),
    denied("io_uring_enter", 426, &[-1, 0, 0, 0, 0, 0]),
    denied("io_uring_register", 427, &[-1, 0, 0, 0]),
    denied("perf_event_open", 298, &[0, 0, -1, -1, 0]),
    // Keyrings.
    denied("keyctl", 250, &[0, 0]),
    denied("add_key", 248, &[0, 0, 0, 0, 0]),
    denied("request_key", 249, &[0, 0, 0, 0]),
    // Other processes' memory (PTRACE_ATTACH to pid 0, process_vm_* with invalid flags).
    denied("ptrace", 101, &[16, 0, 0, 0]),
    denied("process_vm_readv", 310, &[1, 0, 0, 0, 0, 1]),
    denied("process_vm_writev", 311, &[1, 0, 0, 0, 0, 1]),
    // Kernels, modules, host administration.
    denied("kexec_load", 246, &[0, 0, 0, 0]),
    denied("kexec_file_load", 320, &[-1, -1, 0, 0, 0]),
    denied("init_module", 175, &[0, 0, 0]),
    denied("finit_module", 313, &[-1, 0, 0]),
    denied("delete_module", 176, &[0, 0]),
    // The kernel refuses swapon, swapoff, reboot and acct with EPERM too (capabilities of the
    // host's namespaces): for these four the test checks the policy's list, not the filter.
    denied("open_by_handle_at", 304, &[-1, 0, 0]),
    denied("name_to_handle_at", 303, &[-1, 0, 0, 0, 0]),
    denied("swapon", 167, &[0, 0]),
    denied("swapoff", 168, &[0]),
    denied("reboot", 169, &[0, 0, 0, 0]),
    denied("acct", 163, &[0]),
    denied("quotactl", 179, &[0, 0, 0, 0]),
    // personality changes (the query and PER_LINUX stay allowed, see below).
    denied("personality(ADDR_NO_RANDOMIZE)", 135, &[0x0004_0000]),
    denied("personality(READ_IMPLIES_EXEC)", 135, &[0x0040_0000]),
    // Socket families other than AF_UNIX, AF_INET and AF_INET6.
    denied("socket(AF_NETLINK)", 41, &[16, 3, 0]),
    denied("socket(AF_PACKET)", 41, &[17, 3, 0]),
    denied("socket(AF_ALG)", 41, &[38, 5, 0]),
    denied("socket(AF_VSOCK)", 41, &[40, 1, 0]),
    denied("socket(AF_KEY)", 41, &[15, 3, 2]),
    denied("socket(AF_RDS)", 41, &[21, 5, 0]),
    denied("socket(AF_CAN)", 41, &[29, 3, 1]),
    denied("socket(AF_TIPC)", 41, &[30, 5, 0]),
    denied("socket(AF_BLUETOOTH)", 41, &[31, 3, 0]),
    denied("socket(AF_XDP)", 41, &[44, 3, 0]),
    // What tenants of one kernel share. inotify_init, inotify_init1 and io_setup(1, NULL) would
    // succeed or answer EFAULT, fanotify_init EPERM (unprivileged, without FAN_REPORT_FID), the
    // others EBADF, EINVAL or EFAULT: ENOSYS can only come from the filter.
    missing("inotify_init", 253, &[]),
    missing("inotify_init1", 294, &[0]),
    missing("inotify_add_watch", 254, &[-1, 0, 0]),
    missing("inotify_rm_watch", 255, &[-1, 0]),
    missing("fanotify_init", 300, &[0, 0]),
    missing("fanotify_mark", 301, &[-1, 0, 0, -1, 0]),
    missing("io_setup", 206, &[1, 0]),
    missing("io_destroy", 207, &[0]),
    missing("io_submit", 209, &[0, 0, 0]),
    missing("io_cancel", 210, &[0, 0, 0]),
    missing("io_getevents", 208, &[0, 0, 0, 0, 0]),
    missing("io_pgetevents", 333, &[0, 0, 0, 0, 0, 0]),
    missing("flock", 73, &[-1, 2]),
    missing("listmount", 458, &[0, 0, 0, 0, 0]),
    missing("statmount", 457, &[0, 0, 0, 0, 0]),
    missing("cachestat", 451, &[-1, 0, 0, 0]),
    // sysinfo(NULL) would answer EFAULT. syslog(SYSLOG_ACTION_SIZE_BUFFER) succeeds where
    // kernel.dmesg_restrict is 0 and is refused with EPERM by the kernel too where it is 1.
    denied("sysinfo", 99, &[0]),
    denied("syslog(SYSLOG_ACTION_SIZE_BUFFER)", 103, &[10, 0, 0]),
    // On fd -1 the kernel would answer EBADF.
    denied("fcntl(F_NOTIFY)", 72, &[-1, 1026, 0]),
    denied("fadvise64(POSIX_FADV_DONTNEED)", 221, &[-1, 0, 0, 4]),
    denied("fcntl(F_SETSIG)", 72, &[-1, 10, 34]),
    // Real-time signals, which these queue past RLIMIT_SIGPENDING: to a pid or thread that does
    // not exist (ESRCH, EINVAL), with no siginfo (EFAULT) or on fd -1 (EBADF) the kernel alone
    // would answer otherwise.
    denied("kill(SIGRTMIN)", 62, &[-999_999, 34]),
    denied("kill(32)", 62, &[-999_999, 32]),
    denied("tkill(SIGRTMIN)", 200, &[-1, 34]),
    denied("tgkill(SIGRTMAX)", 234, &[-1, -1, 64]),
    denied("rt_sigqueueinfo(SIGRTMIN)", 129, &[-999_999, 34, 0]),
    denied("rt_tgsigqueueinfo(SIGRTMIN)", 297, &[-1, -1, 34, 0]),
    denied("pidfd_send_signal(SIGRTMIN)", 424, &[-1, 34, 0, 0]),
    Denied { name: "preadv2(RWF_NOWAIT)", nr: 327, args: &[-1, 0, 0, 0, 0, 0x8], errno: EOPNOTSUPP },
    Denied { name: "preadv2(RWF_HIPRI|RWF_NOWAIT)", nr: 327, args: &[-1, 0, 0, 0, 0, 0x9], errno: EOPNOTSUPP },
    Denied { name: "pwritev2(RWF_NOWAIT)", nr: 328, args: &[-1, 0, 0, 0, 0, 0x8], errno: EOPNOTSUPP },
];

/// Python that makes one raw system call and returns 0 or its errno.
const SYSCALL_PY: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def errno_of(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if ret >= 0 else ctypes.get_errno()
"#;

async fn run(server: &Server, script: &str) -> Value {
    let (status, body) = server.execute(script, Some(json!({"timeout_seconds": 30}))).await;
    server.assert_healthy_and_clean().await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    assert_eq!(body["returncode"], 0, "{body}");
    body["result"].clone()
}

pool_case!(each_denied_call_answers_its_errno_and_the_script_goes_on);
async fn each_denied_call_answers_its_errno_and_the_script_goes_on(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let calls = Value::Array(DENIED.iter().map(|call| json!([call.name, call.nr, call.args])).collect());
    let script = format!(
        "{SYSCALL_PY}
CALLS = {calls}  # JSON lists of strings and numbers are Python literals

def main():
    errnos = {{name: errno_of(nr, *args) for name, nr, args in CALLS}}
    # After every refusal the script still runs: it computes and returns normally.
    return {{'errnos': errnos, 'seccomp_mode': libc.prctl(21, 0, 0, 0, 0), 'after': sum(range(10))}}
"
    );
    let result = run(&server, &script).await;
    assert_eq!(result["seccomp_mode"], 2, "no seccomp filter (PR_GET_SECCOMP): {result}");
    assert_eq!(result["after"], 45, "{result}");
    let wrong: Vec<String> = DENIED
        .iter()
        .filter(|call| result["errnos"][call.name].as_i64() != Some(call.errno))
        .map(|call| format!("{}: expected errno {}, got {}", call.name, call.errno, result["errnos"][call.name]))
        .collect();
    assert!(wrong.is_empty(), "calls not refused as expected:\n{}", wrong.join("\n"));
}

pool_case!(the_allowed_forms_of_filtered_calls_still_work);
async fn the_allowed_forms_of_filtered_calls_still_work(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = format!(
        "{SYSCALL_PY}
import fcntl, os, socket, struct

def main():
    families = {{}}
    for name in ['AF_UNIX', 'AF_INET', 'AF_INET6']:
        with socket.socket(getattr(socket, name), socket.SOCK_DGRAM) as s:
            families[name] = s.family.name
    left, right = socket.socketpair()
    left.sendall(b'ping')
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    # A file of the sandbox's own: record locks and reading them (sqlite3's), other advice, and
    # preadv2/pwritev2 with flags other than RWF_NOWAIT.
    fd = os.open('/tmp/allowed', os.O_RDWR | os.O_CREAT)
    written = os.pwritev(fd, [b'data'], 0, os.RWF_DSYNC)
    read = bytearray(4)
    os.preadv(fd, [read], 0, os.RWF_HIPRI)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    flock = struct.pack('hhqqi', fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    own_lock_seen_as = struct.unpack('hhqqi', fcntl.fcntl(fd, fcntl.F_GETLK, flock))[0]
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    return {{
        'pwritev2_rwf_dsync': written,
        'preadv2_rwf_hipri': read.decode(),
        'f_getlk_own_lock': own_lock_seen_as == fcntl.F_UNLCK,
        'fadvise_willneed': errno_of(221, fd, 0, 0, 3),
        'personality_query': errno_of(135, 0xFFFFFFFF),
        'personality_linux': errno_of(135, 0),
        'unshare_nothing_is_still_refused': errno_of(272, 0),
        'families': families,
        'socketpair': right.recv(4).decode(),
        'fork_exit': os.waitstatus_to_exitcode(status),
    }}
"
    );
    let result = run(&server, &script).await;
    assert_eq!(
        result,
        json!({
            "pwritev2_rwf_dsync": 4,
            "preadv2_rwf_hipri": "data",
            "f_getlk_own_lock": true,
            "fadvise_willneed": 0,
            "personality_query": 0,
            "personality_linux": 0,
            "unshare_nothing_is_still_refused": EPERM,
            "families": {"AF_UNIX": "AF_UNIX", "AF_INET": "AF_INET", "AF_INET6": "AF_INET6"},
            "socketpair": "ping",
            "fork_exit": 7,
        })
    );
}

pool_case!(threads_run_through_the_clone_fallback);
async fn threads_run_through_the_clone_fallback(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import threading
from concurrent.futures import ThreadPoolExecutor

def main():
    # All four wait for each other, so four threads exist at once.
    barrier = threading.Barrier(4, timeout=10)
    seen = set()
    def work():
        seen.add(threading.get_native_id())
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ThreadPoolExecutor(max_workers=3) as pool:
        squares = list(pool.map(lambda x: x * x, range(6)))
    return {'threads': len(seen), 'squares': squares}
"#;
    let result = run(&server, script).await;
    assert_eq!(result, json!({"threads": 4, "squares": [0, 1, 4, 9, 16, 25]}));
}

pool_case!(subprocesses_run_and_inherit_the_filter);
async fn subprocesses_run_and_inherit_the_filter(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import subprocess, sys

CHILD = '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
ret = libc.syscall(272, 0x10000000)
print(6 * 7, ctypes.get_errno() if ret < 0 else 0)
'''

def main():
    out = {}
    for name, exe in [('sys.executable', sys.executable), ('/usr/bin/python3', '/usr/bin/python3')]:
        done = subprocess.run([exe, '-c', CHILD], capture_output=True, text=True, timeout=20)
        out[name] = [done.returncode, done.stdout.strip(), done.stderr]
    return out
"#;
    let result = run(&server, script).await;
    // The child prints 42 and the errno of its own unshare(CLONE_NEWUSER): the filter is inherited.
    assert_eq!(result, json!({"sys.executable": [0, "42 1", ""], "/usr/bin/python3": [0, "42 1", ""]}));
}

pool_case!(a_multiprocessing_pool_of_two_works_within_the_default_process_limit);
async fn a_multiprocessing_pool_of_two_works_within_the_default_process_limit(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    // The task is a function of the script (the harness makes the script a module pickle finds).
    let script = r#"
import multiprocessing

def negate(x):
    return -x

def main():
    with multiprocessing.Pool(2) as pool:
        values = pool.map(negate, [-1, -2, -3, -4])
        workers = len(multiprocessing.active_children())
    return {'values': values, 'workers': workers}
"#;
    let result = run(&server, script).await;
    assert_eq!(result, json!({"values": [1, 2, 3, 4], "workers": 2}));
}

pool_case!(numpy_multiplies_matrices_with_openblas);
async fn numpy_multiplies_matrices_with_openblas(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import numpy as np

def main():
    a = np.arange(40000, dtype=np.float64).reshape(200, 200)
    product = a @ a.T
    blas = np.__config__.CONFIG['Build Dependencies']['blas']['name']
    return {'trace': float(product.trace()), 'identity': bool(np.allclose(a @ np.eye(200), a)), 'blas': blas}
"#;
    let result = run(&server, script).await;
    let expected_trace: f64 = (0..40000u64).map(|x| (x * x) as f64).sum();
    assert_eq!(result, json!({"trace": expected_trace, "identity": true, "blas": "scipy-openblas"}));
}

pool_case!(pandas_groups_writes_csv_to_a_temporary_file_and_reads_it_back);
async fn pandas_groups_writes_csv_to_a_temporary_file_and_reads_it_back(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import tempfile
import pandas as pd

def main():
    frame = pd.DataFrame({'key': ['a', 'b', 'a', 'c', 'b'], 'value': [1, 2, 3, 4, 5]})
    sums = frame.groupby('key')['value'].sum()
    with tempfile.NamedTemporaryFile('w+', suffix='.csv') as f:
        sums.to_csv(f.name)
        back = pd.read_csv(f.name)
    return {'keys': list(back['key']), 'values': [int(v) for v in back['value']]}
"#;
    let result = run(&server, script).await;
    assert_eq!(result, json!({"keys": ["a", "b", "c"], "values": [4, 7, 4]}));
}

pool_case!(temporary_files_and_directories_work);
async fn temporary_files_and_directories_work(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import os, tempfile

def main():
    fd, path = tempfile.mkstemp()
    os.write(fd, b'mkstemp')
    os.close(fd)
    with open(path) as f:
        first = f.read()
    os.unlink(path)
    with tempfile.TemporaryDirectory() as directory:
        inner = os.path.join(directory, 'x')
        with open(inner, 'w') as f:
            f.write('directory')
        with open(inner) as f:
            second = f.read()
    with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
        spooled.write(b'spooled past its size')
        spooled.seek(0)
        third = spooled.read().decode()
    return {'texts': [first, second, third], 'gone': not os.path.exists(directory)}
"#;
    let result = run(&server, script).await;
    assert_eq!(result, json!({"texts": ["mkstemp", "directory", "spooled past its size"], "gone": true}));
}

pool_case!(sqlite3_file_databases_time_zones_and_sysconf_work);
async fn sqlite3_file_databases_time_zones_and_sysconf_work(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    // sqlite3 locks its files with fcntl record locks and reads them with F_GETLK (WAL's shared
    // memory, the hot-journal check of PERSIST); two connections to one file see each other.
    let script = r#"
import datetime, os, sqlite3, zoneinfo

def connect(path, mode):
    con = sqlite3.connect(path)
    return con, con.execute(f'PRAGMA journal_mode={mode}').fetchone()[0]

def rows(mode):
    path = f'/tmp/{mode.lower()}.db'
    counts = []
    for _ in range(2):
        con, set_mode = connect(path, mode)
        with con:
            con.execute('CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)')
            con.execute('INSERT INTO t (v) VALUES (?)', (mode,))
        counts.append(con.execute('SELECT count(*) FROM t').fetchone()[0])
        con.close()
    (writer, _), (reader, _) = connect(path, mode), connect(path, mode)
    writer.execute('BEGIN IMMEDIATE')
    writer.execute("INSERT INTO t (v) VALUES ('pending')")
    counts.append(reader.execute('SELECT count(*) FROM t').fetchone()[0])
    writer.commit()
    counts.append(reader.execute('SELECT count(*) FROM t').fetchone()[0])
    writer.close()
    reader.close()
    return [set_mode] + counts

def main():
    paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo('Europe/Paris'))
    return {
        'sqlite3': {mode: rows(mode) for mode in ['DELETE', 'WAL', 'TRUNCATE', 'PERSIST']},
        'paris_offset_hours': paris.utcoffset().total_seconds() / 3600,
        'paris_noon_in_tokyo': paris.astimezone(zoneinfo.ZoneInfo('Asia/Tokyo')).hour,
        'cpus_online': os.sysconf('SC_NPROCESSORS_ONLN') >= 1,
    }
"#;
    let result = run(&server, script).await;
    assert_eq!(
        result,
        json!({
            "sqlite3": {
                "DELETE": ["delete", 1, 2, 2, 3],
                "WAL": ["wal", 1, 2, 2, 3],
                "TRUNCATE": ["truncate", 1, 2, 2, 3],
                "PERSIST": ["persist", 1, 2, 2, 3],
            },
            "paris_offset_hours": 2.0,
            "paris_noon_in_tokyo": 19,
            "cpus_online": true,
        })
    );
}

pool_case!(a_call_through_the_32_bit_abi_kills_the_script_but_not_the_service);
async fn a_call_through_the_32_bit_abi_kills_the_script_but_not_the_service(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    // kafel's filter checks the architecture first: an i386 call (int 0x80), which the x86-64
    // rules could not match, kills the caller with SIGSYS instead of slipping past them.
    let script = r#"
import ctypes, mmap

def main():
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (i386 getpid); int 0x80; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return {'pid': ctypes.CFUNCTYPE(ctypes.c_int)(address)()}
"#;
    let (status, body) = server.execute(script, Some(json!({}))).await;
    server.assert_healthy_and_clean().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "signaled", "{body}");
    assert_eq!(body["returncode"], -31, "{body}");
    assert_eq!(body["error"], "The script was killed by signal SIGSYS (31)");
}

/// The policy has one source: nsjail-gvisor.cfg's `seccomp_string` lines are nsjail.cfg's, line
/// for line (the namespace and mount block included), so a change made to one file only fails.
#[test]
fn the_gvisor_config_carries_the_seccomp_policy_of_nsjail_cfg_line_for_line() {
    let policy = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(common::repo().join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        text.lines().filter(|line| line.trim_start().starts_with("seccomp_string:")).map(str::to_string).collect()
    };
    let (host, gvisor) = (policy("nsjail.cfg"), policy("nsjail-gvisor.cfg"));
    assert!(host.iter().any(|line| line.contains("DEFAULT ALLOW")), "no seccomp policy in nsjail.cfg");
    let first_difference = host.iter().zip(&gvisor).position(|(a, b)| a != b).unwrap_or(host.len().min(gvisor.len()));
    assert_eq!(
        gvisor,
        host,
        "nsjail-gvisor.cfg's seccomp lines differ from nsjail.cfg's from line {} of the policy on: \
         make the change in nsjail.cfg and copy its seccomp_string lines",
        first_difference + 1
    );
}
