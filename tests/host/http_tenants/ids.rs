//! Each sandbox is a host uid and gid of its own, with its own device nodes, queued-signal and
//! core-dump caps, an OOM ranking below its keeper's, and (forked) a template of bounded life:
//! one sandbox holds something the kernel counts per user or per inode while a second one, warm
//! and cold, does the same thing unhindered.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{cgroup_pids, Server};

/// Limits that send a script down the cold path: a ready sandbox's /tmp size is fixed.
fn cold() -> Option<Value> {
    Some(json!({"tmp_mb": 1}))
}

/// A script that runs `hold` (statements at main()'s indentation, which may set `held`), then
/// starts one child process, the sign for the test that it holds, and returns `held` after
/// `seconds`.
fn holder(imports: &str, hold: &str, seconds: u32) -> String {
    format!(
        "import os, time{imports}\ndef main():\n    held = None\n{hold}\n    if os.fork() == 0:\n        time.sleep({seconds})\n        os._exit(0)\n    time.sleep({seconds})\n    return {{'held': held}}\n"
    )
}

/// The server's run cgroups (cold `slot-` or warm `ready-`) whose sandbox has started its sign
/// child: three processes or more (nsjail or the keeper, the interpreter, its child).
fn holding(server: &Server) -> Vec<String> {
    server
        .run_cgroups()
        .into_iter()
        .filter(|dir| dir.starts_with("/sys/fs/cgroup/pids/") || !Path::new("/sys/fs/cgroup/pids").exists())
        .filter(|dir| {
            let name = Path::new(dir).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.starts_with("slot-") || name.starts_with("ready-")) && cgroup_pids(dir).len() >= 3
        })
        .collect()
}

async fn wait_for_holders(server: &Server, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let groups = holding(server);
        if groups.len() >= n {
            return groups;
        }
        assert!(Instant::now() < deadline, "never saw {n} sandboxes holding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Uid:` or `Gid:` (real) of a host process.
fn status_id(pid: i32, field: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
}

fn oom_score_adj(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).ok()?.trim().parse().ok()
}

/// Runs `holder` in one sandbox, waits until it holds, calls `while_held` (to read the host),
/// then runs `probe` warm (a plain ready sandbox) and cold; returns the holder's body, both
/// probes' and what `while_held` read.
async fn hold_and_probe<T>(
    server: &Server,
    holder_script: String,
    probe: &str,
    while_held: impl FnOnce() -> T,
) -> (Value, Value, Value, T) {
    let holding = server.execute(&holder_script, Some(json!({"timeout_seconds": 20})));
    let probing = async {
        wait_for_holders(server, 1).await;
        let read = while_held();
        let warm = server.execute_warm(probe, None, "pyexec_pool_hits_total{kind=\"plain\"}").await;
        let (status, cold) = server.execute(probe, cold()).await;
        assert_eq!(status, 200, "{cold}");
        (warm, cold, read)
    };
    let ((_, held), (warm, cold, read)) = tokio::join!(holding, probing);
    (held, warm, cold, read)
}

/// Every sandbox alive at once, warm or cold, is a host uid and gid of its own from the range,
/// never root or nobody (65534), so what the kernel counts per user is counted per sandbox.
#[tokio::test]
async fn sandboxes_alive_at_once_are_each_a_host_uid_and_gid_of_their_own() {
    let server = Server::start().await;
    let script = holder("", "", 5);
    // Read from the host while both sandboxes hold: the host uid and gid of each one's processes.
    let read_ids = async {
        let groups = wait_for_holders(&server, 2).await;
        let ids: Vec<(String, Vec<(u32, u32)>)> = groups
            .into_iter()
            .map(|group| {
                // nsjail (root) is not the sandbox's; the keeper, the interpreter and its child are.
                let ids = cgroup_pids(&group)
                    .into_iter()
                    .filter_map(|pid| Some((status_id(pid, "Uid:")?, status_id(pid, "Gid:")?)))
                    .filter(|(uid, _)| *uid != 0)
                    .collect();
                (group, ids)
            })
            .collect();
        ids
    };
    let ((warm, _), (cold_run, _), groups) =
        tokio::join!(server.execute(&script, None), server.execute(&script, cold()), read_ids);
    let mut uids = Vec::new();
    for (group, ids) in &groups {
        assert!(!ids.is_empty(), "{group}: no sandbox process");
        let (uid, gid) = ids[0];
        assert!(ids.iter().all(|ids| *ids == (uid, gid)), "{group}: one sandbox, one id: {ids:?}");
        assert_eq!(uid, gid, "{group}");
        assert!((2_000_000_000..2_000_065_536).contains(&uid), "{group}: uid {uid} is not from the range");
        uids.push(uid);
    }
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), groups.len(), "two sandboxes share a host uid: {uids:?}");
    assert_eq!((warm, cold_run), (200, 200));
}

/// File descriptors in flight (sent over a unix socket, never received) are counted per user
/// against the sender's RLIMIT_NOFILE: one sandbox holding more than that used to make every
/// other sandbox's SCM_RIGHTS fail with ETOOMANYREFS (multiprocessing sends fds this way).
#[tokio::test]
async fn fds_one_sandbox_holds_in_flight_leave_a_neighbour_free_to_send_fds() {
    let server = Server::start().await;
    let hold = "    import socket\n    a, b = socket.socketpair()\n    for _ in range(2):\n        socket.send_fds(a, [b'x'], [a.fileno()] * 200)\n    held = 400";
    let probe = "import socket, errno\ndef main():\n    a, b = socket.socketpair()\n    try:\n        socket.send_fds(a, [b'x'], [a.fileno()])\n        return {'sent': True}\n    except OSError as e:\n        return {'sent': errno.errorcode.get(e.errno, e.errno)}";
    let (held, warm, cold, ()) = hold_and_probe(&server, holder("", hold, 3), probe, || ()).await;
    assert_eq!(held["result"], json!({"held": 400}), "{held}");
    assert_eq!(warm["result"], json!({"sent": true}), "warm: {warm}");
    assert_eq!(cold["result"], json!({"sent": true}), "cold: {cold}");
}

/// A sandbox's /dev/null is its own inode: a write lock one sandbox holds on it is not seen by
/// another (who takes the same lock), and no sandbox can change its timestamps (the host's
/// /dev/null stays as it was).
#[tokio::test]
async fn device_nodes_are_each_sandboxs_own_locks_and_timestamps_included() {
    let server = Server::start().await;
    let host_before = std::fs::metadata("/dev/null").expect("/dev/null").modified().expect("mtime");
    let hold = "    import fcntl\n    f = open('/dev/null', 'w')\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    held = 'locked'";
    let probe = "import fcntl, os, errno\ndef main():\n    r = {}\n    f = open('/dev/null', 'w')\n    try:\n        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        r['lock'] = 'taken'\n    except OSError as e:\n        r['lock'] = errno.errorcode.get(e.errno, e.errno)\n    for name in ('/dev/null', '/dev/zero', '/dev/urandom'):\n        try:\n            os.utime(name, (0, 0))\n            r[name] = 'changed'\n        except OSError as e:\n            r[name] = errno.errorcode.get(e.errno, e.errno)\n    f.write('still writable')\n    r['zero'] = len(open('/dev/zero', 'rb').read(4))\n    return r";
    let (held, warm, cold, ()) = hold_and_probe(&server, holder("", hold, 3), probe, || ()).await;
    assert_eq!(held["result"], json!({"held": "locked"}), "{held}");
    let expected =
        json!({"lock": "taken", "/dev/null": "EROFS", "/dev/zero": "EROFS", "/dev/urandom": "EROFS", "zero": 4});
    assert_eq!(warm["result"], expected, "warm: {warm}");
    assert_eq!(cold["result"], expected, "cold: {cold}");
    let host_after = std::fs::metadata("/dev/null").expect("/dev/null").modified().expect("mtime");
    assert_eq!(host_before, host_after, "the host's /dev/null was stamped");
}

/// `SigQ:` of this (root) process: the signals queued by root's user, and the limit.
fn roots_queued_signals() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status.lines().find_map(|line| line.strip_prefix("SigQ:")).expect("SigQ");
    let (queued, limit) = line.trim().split_once('/').expect("n/limit");
    (queued.parse().expect("queued"), limit.parse().expect("limit"))
}

/// Queued signals are charged up the user-namespace chain to root: one sandbox used to fill
/// root's whole budget (RLIMIT_SIGPENDING, ~96,000 here), failing every other process's
/// sigqueue and timer_create. Now a sandbox's budget is 256 (each POSIX timer holds one queued
/// signal), real-time signals, which kill() and friends queue without any limit, cannot be
/// sent, root's count stays low while a sandbox holds its budget, and a neighbour still
/// creates timers of its own.
#[tokio::test]
async fn queued_signals_are_capped_per_sandbox_and_roots_budget_stays_free() {
    let server = Server::start().await;
    let hold = "    import ctypes, errno, signal\n    libc = ctypes.CDLL(None, use_errno=True)\n    timer = ctypes.c_void_p()\n    timers = 0\n    while timers < 200000 and libc.timer_create(1, None, ctypes.byref(timer)) == 0:\n        timers += 1\n    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])\n    try:\n        os.kill(os.getpid(), signal.SIGRTMIN)\n        rt = 'sent'\n    except OSError as e:\n        rt = errno.errorcode.get(e.errno, e.errno)\n    held = [timers, rt]";
    let probe = "import ctypes, os, signal\ndef main():\n    libc = ctypes.CDLL(None, use_errno=True)\n    timer = ctypes.c_void_p()\n    made = sum(libc.timer_create(1, None, ctypes.byref(timer)) == 0 for _ in range(10))\n    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n    os.kill(os.getpid(), signal.SIGUSR1)\n    return {'timers': made, 'pending': signal.SIGUSR1 in signal.sigpending()}";
    let (_, root_limit) = roots_queued_signals();
    let (held, warm, cold, (root_queued, _)) =
        hold_and_probe(&server, holder("", hold, 3), probe, roots_queued_signals).await;
    let timers = held["result"]["held"][0].as_u64().unwrap_or_else(|| panic!("{held}"));
    assert!(timers > 0 && timers <= 256, "one sandbox holds {timers} queued signals: {held}");
    assert_eq!(held["result"]["held"][1], "EPERM", "a real-time signal was queued: {held}");
    assert!(root_queued < root_limit / 10, "root's queue held {root_queued}/{root_limit} while the sandbox held");
    let expected = json!({"timers": 10, "pending": true});
    assert_eq!(warm["result"], expected, "warm: {warm}");
    assert_eq!(cold["result"], expected, "cold: {cold}");
}

/// In a forked sandbox the keeper carries the template's resident pages, so the OOM killer
/// would choose it first: the script's processes rank above it (oom_score_adj 1000, the
/// keeper's 0), and a keeper killed anyway ends the run as a sandbox failure, never a success
/// (the script went on without it and reported).
#[tokio::test]
async fn a_killed_keeper_ends_the_run_as_a_sandbox_failure_and_the_script_ranks_first_for_the_oom_killer() {
    let server = Server::start().await;
    let script = holder("\nimport pandas", "", 2);
    let kill_the_keeper = async {
        let group = wait_for_holders(&server, 1).await.remove(0);
        let pids = cgroup_pids(&group);
        let adjs: Vec<(i32, i32)> = pids.iter().filter_map(|pid| Some((*pid, oom_score_adj(*pid)?))).collect();
        let keepers: Vec<i32> = adjs.iter().filter(|(_, adj)| *adj == 0).map(|(pid, _)| *pid).collect();
        let script_processes = adjs.iter().filter(|(_, adj)| *adj == 1000).count();
        assert_eq!(keepers.len(), 1, "one keeper, the only process at 0: {adjs:?}");
        assert_eq!(script_processes, 2, "the script and its child rank first: {adjs:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(keepers[0]), nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
    };
    let ((status, body), ()) = tokio::join!(server.execute(&script, None), kill_the_keeper);
    // A sandbox failure is the service's, not the script's: 500, and no result.
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "The sandbox failed to run the script; the service log has the details", "{body}");
    assert_eq!(body.get("result"), None, "{body}");
    server.assert_healthy_and_clean().await;
}

/// Forks of one template share its interpreter's start-up secrets (here the str hash seed):
/// with --pool-template-forks 2, no more than two sandboxes ever see the same one, and a new
/// template takes over.
#[tokio::test]
async fn a_template_forks_at_most_its_allowance_then_a_new_one_with_new_secrets_takes_over() {
    let server = Server::start_with(&["--pool-template-forks", "2"]).await;
    assert_templates_share_seeds_within(&server, 6, 2).await;
}

/// Runs `runs` warm plain scripts on `server`, and checks that no more than `forks` of them saw
/// the same str hash seed (one template's) and that at least three templates served them.
async fn assert_templates_share_seeds_within(server: &Server, runs: usize, forks: usize) {
    let script = "def main():\n    return {'hash': hash('pyexec')}";
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..runs {
        let body = server.execute_warm(script, None, "pyexec_pool_hits_total{kind=\"plain\"}").await;
        seen.push(body["result"]["hash"].as_i64().unwrap_or_else(|| panic!("{body}")));
    }
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for value in &distinct {
        let n = seen.iter().filter(|v| *v == value).count();
        assert!(n <= forks, "{n} sandboxes shared one template's hash seed: {seen:?}");
    }
    assert!(distinct.len() >= 3, "{seen:?}");
}

/// A template's successor starts near the end of its life and takes over when it is spent, with
/// secrets of its own: with --pool-template-forks 10, 25 warm runs see three templates, no more
/// than ten runs share one's hash seed, and at least one successor took over ahead of need
/// (the first to take over may still have been starting when its predecessor was spent).
#[tokio::test]
async fn a_successor_template_starts_ahead_and_takes_over_when_the_template_is_spent() {
    let server = Server::start_with(&["--pool-template-forks", "10"]).await;
    assert_templates_share_seeds_within(&server, 25, 10).await;
    let ahead = "pyexec_pool_template_starts_total{when=\"ahead\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(ahead).await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "no successor took over ahead of need:\n{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.assert_healthy_and_clean().await;
}

/// Restores the host's core_pattern when dropped.
struct CorePattern(String);

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/core_pattern", &self.0);
    }
}

/// Where the host's core_pattern is a pipe (systemd-coredump, apport), the kernel starts the
/// helper for every crash whose RLIMIT_CORE is not 1, even 0: a crash storm in a sandbox would
/// start one root helper per crash. Sandboxes crash with RLIMIT_CORE 1 (soft and hard, which
/// they cannot raise), and the helper never starts, warm or cold.
#[tokio::test]
async fn a_crashing_script_never_starts_the_hosts_core_dump_helper() {
    let server = Server::start().await;
    let dir = std::env::temp_dir().join(format!("pyexec-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ran = dir.join("ran");
    let helper = dir.join("helper.sh");
    std::fs::write(&helper, format!("#!/bin/sh\necho \"$1\" >> {}\ncat > /dev/null\n", ran.display())).expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let restore = CorePattern(std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern"));
    std::fs::write("/proc/sys/kernel/core_pattern", format!("|{} %p", helper.display())).expect("set core_pattern");
    // The helper runs for a crash outside a sandbox (the check could not fail otherwise).
    let status = std::process::Command::new("sh").args(["-c", "ulimit -c 0; kill -SEGV $$"]).status().expect("sh");
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ran.exists() {
        assert!(Instant::now() < deadline, "the helper never ran for a host crash");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&ran).expect("rm");

    let script = "import os, resource\ndef main():\n    codes = []\n    for _ in range(3):\n        pid = os.fork()\n        if pid == 0:\n            os.abort()\n        codes.append(os.waitpid(pid, 0)[1] & 0x7f)\n    try:\n        resource.setrlimit(resource.RLIMIT_CORE, (2, 2))\n        raised = True\n    except ValueError:\n        raised = False\n    return {'signals': codes, 'core': list(resource.getrlimit(resource.RLIMIT_CORE)), 'raised': raised}";
    let warm = server.execute_warm(script, None, "pyexec_pool_hits_total{kind=\"plain\"}").await;
    let (_, cold) = server.execute(script, cold()).await;
    // A crash waits for the kernel's helper to read its core, and the helper writes first: had
    // one started, `ran` would exist by the time the script's waitpid returned.
    drop(restore);
    let expected = json!({"signals": [6, 6, 6], "core": [1, 1], "raised": false});
    assert_eq!(warm["result"], expected, "warm: {warm}");
    assert_eq!(cold["result"], expected, "cold: {cold}");
    assert!(!ran.exists(), "the core-dump helper ran for a sandbox's crash: {:?}", std::fs::read_to_string(&ran));
    let _ = std::fs::remove_dir_all(&dir);
}
