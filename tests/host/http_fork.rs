//! Ready sandboxes forked from the pool's templates (`--pool-fork`, the default), over real HTTP
//! with real nsjail: each is as isolated as a sandbox nsjail starts for a cold run, holds its
//! request's limits, cannot reach its template or the sandboxes beside it, and the pool
//! survives a template's death. Single use (no trace and no random state carried from one
//! script to the next) is checked for both kinds in http_warm.rs (its scripts run forked).

mod common;

use common::Server;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Runs `script` (which names pandas) in a ready preloaded sandbox (asserted through its hits).
async fn run_forked(server: &Server, script: &str, limits: Option<Value>) -> Value {
    server.execute_warm(script, limits, "pyexec_pool_hits_total{kind=\"preloaded\"}").await
}

/// The host pids of the templates (nsjail and the template, for each kind): the processes of
/// the templates' cgroups but the keepers passing through (forks of a template, so children of
/// a process that is not nsjail).
fn template_pids(server: &Server) -> Vec<i32> {
    let mut pids: Vec<i32> = server
        .run_cgroups()
        .iter()
        .filter(|dir| dir.rsplit('/').next().is_some_and(|name| name.starts_with("template-")))
        .flat_map(|dir| common::cgroup_pids(dir))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let nsjail =
        |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "nsjail");
    let parent = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    pids.into_iter().filter(|pid| nsjail(*pid) || parent(*pid).is_some_and(nsjail)).collect()
}

/// Everything a script can learn about its sandbox's isolation, from the inside.
const PROBE: &str = r#"
import ctypes, os, resource, socket

def main():
    libc = ctypes.CDLL(None, use_errno=True)

    def errno_of(call, *args):
        return 0 if call(*args) == 0 else ctypes.get_errno()

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    caps = (ctypes.c_uint32 * 6)()
    libc.capget(header, caps)
    bounding = [cap for cap in range(64) if libc.prctl(23, cap, 0, 0, 0) == 1]
    open_fds = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
            open_fds.append(fd)
        except OSError:
            pass
    try:
        socket.create_connection(("10.0.0.1", 80), timeout=1)
        network = "reached"
    except OSError as exc:
        network = exc.errno
    limits = {name: list(resource.getrlimit(getattr(resource, name)))
              for name in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_STACK", "RLIMIT_CORE")}
    with open("/tmp/mine", "w") as f:
        f.write("x")
    return {
        "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
        "groups": os.getgroups(), "cwd": os.getcwd(), "host": os.uname().nodename,
        "root": sorted(os.listdir("/")),
        "proc": sorted(os.listdir("/proc")) if os.path.isdir("/proc") else [],
        "tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm")),
        "open_fds": len(open_fds), "caps": list(caps), "bounding": bounding,
        "no_new_privs": libc.prctl(39, 0, 0, 0, 0), "seccomp": libc.prctl(21, 0, 0, 0, 0),
        "unshare": errno_of(libc.unshare, 0x10000000),
        "mount": errno_of(libc.mount, b"none", b"/mnt", b"tmpfs", 0, None),
        "chroot": errno_of(libc.chroot, b"/tmp"),
        "network": network, "env": sorted(os.environ), "limits": limits,
    }
"#;

#[tokio::test]
async fn a_forked_sandbox_is_as_isolated_as_a_sandbox_started_on_its_own() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1"]).await;
    server.wait_for_each_kind(1).await;
    // A /tmp size no ready sandbox has: the cold path, a jail nsjail starts for this run.
    let before = server.metric("pyexec_cold_starts_total").await.expect("cold starts");
    let (status, started) = server.execute(PROBE, Some(json!({"tmp_mb": 32}))).await;
    assert_eq!(status, 200, "{started}");
    let after = server.metric("pyexec_cold_starts_total").await;
    assert_eq!(after, Some(before + 1.0), "the probe did not run cold: {started}");
    let forked = run_forked(&server, &format!("import pandas\n{PROBE}"), None).await;
    let plain = server.execute_warm(PROBE, None, "pyexec_pool_hits_total{kind=\"plain\"}").await;
    let mut templates: Vec<String> = server
        .run_cgroups()
        .into_iter()
        .filter(|dir| !common::cgroup_pids(dir).is_empty())
        .filter_map(|dir| dir.rsplit('/').next().filter(|name| name.starts_with("template-")).map(String::from))
        .collect();
    templates.sort();
    templates.dedup();
    assert_eq!(templates.len(), 2, "a template for each kind: {templates:?}");

    // Side by side: nsjail's sandbox and the forked ones (from either template) look the same
    // from the inside.
    assert_eq!(forked["result"], started["result"], "forked: {forked}\nstarted: {started}");
    assert_eq!(plain["result"], started["result"], "forked: {plain}\nstarted: {started}");
    // And what they are: pid 1 of their own namespace, nobody, no capability left, the
    // namespace and mount calls refused, only the result pipe open, a fresh /tmp, no network.
    let result = &forked["result"];
    assert_eq!(result["pid"], 1);
    assert_eq!(result["ppid"], 0);
    assert_eq!(result["uid"], 65534);
    assert_eq!(result["caps"], json!([0, 0, 0, 0, 0, 0]));
    assert_eq!(result["seccomp"], 2, "no seccomp filter");
    assert_eq!(result["no_new_privs"], 1);
    assert_eq!((&result["unshare"], &result["mount"], &result["chroot"]), (&json!(1), &json!(1), &json!(1)));
    assert_eq!(result["open_fds"], 1, "only the result pipe may be open");
    assert_eq!((&result["tmp"], &result["proc"], &result["shm"]), (&json!(["mine"]), &json!([]), &json!([])));
    assert_eq!(result["cwd"], "/tmp");
    assert_ne!(result["network"], "reached");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_forked_sandbox_gets_the_requests_limits_and_its_template_outlives_its_failures() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1"]).await;
    let bomb =
        "import pandas\ndef main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))";
    let body = run_forked(&server, bomb, Some(json!({"memory_mb": 256}))).await;
    assert_eq!((body["outcome"].as_str(), body["returncode"].as_i64()), (Some("memory_limit"), Some(-9)), "{body}");

    let forks = "import os, resource, pandas\ndef main():\n    children = 0\n    try:\n        for _ in range(64):\n            if os.fork() == 0:\n                import time; time.sleep(5); os._exit(0)\n            children += 1\n    except OSError:\n        pass\n    return {'children': children, 'nproc': list(resource.getrlimit(resource.RLIMIT_NPROC))}\n";
    let body = run_forked(&server, forks, Some(json!({"max_pids": 8}))).await;
    assert!(body["result"]["children"].as_u64().is_some_and(|n| n < 8), "{body}");
    assert_eq!(body["result"]["nproc"], json!([8, 8]), "{body}");

    let forever = "import pandas\ndef main():\n    while True:\n        pass\n";
    let body = run_forked(&server, forever, Some(json!({"timeout_seconds": 1}))).await;
    assert_eq!(body["error"], "Execution timed out after 1 s (wall-clock limit)", "{body}");
    let body = run_forked(&server, forever, Some(json!({"cpu_seconds": 1, "timeout_seconds": 20}))).await;
    assert_eq!(body["error"], "CPU time limit of 1 s exceeded", "{body}");

    let exits = "import os, pandas\ndef main():\n    os._exit(3)\n";
    let body = run_forked(&server, exits, None).await;
    assert_eq!(body["returncode"], 3, "{body}");

    // The same template forked every one of them, and forks the next.
    let template = template_pids(&server);
    assert!(!template.is_empty(), "no template");
    let body = run_forked(&server, "import pandas\ndef main():\n    return {'ok': True}\n", None).await;
    assert_eq!(body["result"], json!({"ok": true}), "{body}");
    // (A sandbox being forked passes through its template's cgroup: look for the old pids only.)
    let now = template_pids(&server);
    assert!(template.iter().all(|pid| now.contains(pid)), "a template was replaced: {template:?} {now:?}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_forked_script_cannot_see_or_signal_its_template_or_the_sandboxes_beside_it() {
    let server = Server::start_with(&["--pool-min", "2", "--pool-max", "2"]).await;
    server.wait_for_each_kind(2).await;
    let template = template_pids(&server);
    let waiting = server.ready_sandbox_pids();
    assert!(!template.is_empty() && !waiting.is_empty(), "nothing to attack");
    // Every pid the script can name: its guesses and the real host pids; and its own process
    // group (kill(0, ...) needs no pid: it must not be the template's).
    let targets: Vec<i32> = (2..4096).chain(template.iter().copied()).chain(waiting.iter().copied()).collect();
    let script = format!(
        "import os, signal, pandas\ntargets = {targets:?}\ndef main():\n    os.kill(0, signal.SIGKILL)\n    reached = []\n    for pid in targets:\n        try:\n            os.kill(pid, signal.SIGKILL)\n            reached.append(pid)\n        except OSError:\n            pass\n    return {{'reached': reached}}\n"
    );
    let body = run_forked(&server, &script, None).await;
    assert_eq!(body["result"], json!({"reached": []}), "{body}");
    assert!(template.iter().all(|pid| common::alive(*pid)), "the template was killed");
    // Only the sandbox that ran the script (its keeper and first process) has ended.
    let ended: Vec<&i32> = waiting.iter().filter(|pid| !common::alive(**pid)).collect();
    assert!(ended.len() <= 2, "sandboxes beside it were killed: {ended:?} of {waiting:?}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn when_the_template_dies_the_pool_starts_another() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1"]).await;
    server.wait_for_each_kind(1).await;
    // Pids are reused quickly under the test load: a process is its pid and its start time.
    let first: Vec<(i32, u64)> = template_pids(&server).into_iter().filter_map(started).collect();
    assert!(!first.is_empty(), "no template");
    for (pid, _) in &first {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while first.iter().any(|process| started(process.0) == Some(*process)) {
        assert!(std::time::Instant::now() < deadline, "the template did not die");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The sandboxes it forked die with it (they live in its pid namespace); whatever the pool
    // holds now, a pandas script runs, and the next preloaded sandbox comes from a new template.
    let script = "import pandas\ndef main():\n    return {'ok': True}\n";
    let (status, body) = server.execute(script, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})), "{body}");
    let body = run_forked(&server, script, None).await;
    assert_eq!(body["result"], json!({"ok": true}), "{body}");
    let second: Vec<(i32, u64)> = template_pids(&server).into_iter().filter_map(started).collect();
    assert!(!second.is_empty() && second.iter().all(|process| !first.contains(process)), "{first:?} {second:?}");
    server.assert_healthy_and_clean().await;
}

/// A process's pid and start time (clock ticks since boot), while it runs.
fn started(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, start time field 22.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?.parse().ok()?;
    Some((pid, start))
}

#[tokio::test]
async fn with_fork_off_each_preloaded_sandbox_imports_on_its_own() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1", "--pool-fork", "false"]).await;
    let body = run_forked(&server, "import pandas\ndef main():\n    return {'ok': True}\n", None).await;
    assert_eq!(body["result"], json!({"ok": true}), "{body}");
    assert!(template_pids(&server).is_empty(), "a template ran");
    assert_eq!(server.metric("pyexec_pool_template_memory_bytes").await, Some(0.0));
    // Each holds its own import: several times a plain sandbox's memory.
    server.wait_for_each_kind(1).await;
    let plain = server.metric("pyexec_pool_ready_memory_bytes{kind=\"plain\"}").await.expect("plain memory");
    let preloaded = server.metric("pyexec_pool_ready_memory_bytes{kind=\"preloaded\"}").await.expect("memory");
    assert!(plain > 0.0 && plain * 2.0 < preloaded, "plain {plain} bytes, preloaded {preloaded} bytes");
    server.assert_healthy_and_clean().await;
}
