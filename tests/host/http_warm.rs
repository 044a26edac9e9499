//! The pool of ready sandboxes over real HTTP with real nsjail: every script gets a sandbox no
//! other script has used, its limits count from its arrival, and the pool cleans up after
//! itself. Each case first waits until a ready sandbox exists, then checks through the hit
//! counter that the script really ran warm.

mod common;

use common::Server;
use serde_json::{json, Value};

/// A server whose pool keeps `min` ready sandboxes (at most `max`).
async fn pooled(min: usize, max: usize) -> Server {
    let (min, max) = (min.to_string(), max.to_string());
    Server::start_with(&["--pool-min", &min, "--pool-max", &max]).await
}

async fn hits(server: &Server) -> f64 {
    server.metric("pyexec_pool_hits_total").await.expect("hits counter")
}

async fn cold_starts(server: &Server) -> f64 {
    server.metric("pyexec_cold_starts_total").await.expect("cold-start counter")
}

/// Runs `script` in a ready sandbox of either kind (asserted through the hit counter).
async fn run_warm(server: &Server, script: &str, limits: Option<Value>) -> Value {
    server.execute_warm(script, limits, "pyexec_pool_hits_total").await
}

/// Leaves every kind of trace a script can leave in its interpreter and sandbox, and reports
/// what it found of the previous script's and its own random identity.
const TRACES: &str = r#"
import builtins, json, os, random, sys, tempfile, uuid
import numpy as np
import pandas as pd

def main():
    found = {
        "global": getattr(json, "planted", None),
        "builtin": getattr(builtins, "planted", None),
        "module": "planted" in sys.modules,
        "pandas_option": pd.get_option("display.max_rows"),
        "patched_class": getattr(pd.DataFrame, "planted", None),
        "tmp_file": os.path.exists("/tmp/planted"),
        "env": os.environ.get("PLANTED"),
    }
    json.planted = 1
    builtins.planted = 1
    sys.modules["planted"] = json
    pd.set_option("display.max_rows", 7)
    pd.DataFrame.planted = "patched"
    open("/tmp/planted", "w").write("x")
    os.environ["PLANTED"] = "1"
    identity = {
        "random": random.random(),
        "numpy": float(np.random.random()),
        "uuid": str(uuid.uuid4()),
        "tempfile": tempfile.mktemp(),
    }
    return {"found": found, "identity": identity}
"#;

/// `TRACES` without pandas and numpy: a script of the plain kind. (`hash()` is left out of both
/// identities: sandboxes forked from one template share its hash secret; README.md, "Security
/// model".)
const PLAIN_TRACES: &str = r#"
import builtins, json, os, random, sys, tempfile, uuid

def main():
    found = {
        "global": getattr(json, "planted", None),
        "builtin": getattr(builtins, "planted", None),
        "module": "planted" in sys.modules,
        "tmp_file": os.path.exists("/tmp/planted"),
        "env": os.environ.get("PLANTED"),
    }
    json.planted = 1
    builtins.planted = 1
    sys.modules["planted"] = json
    open("/tmp/planted", "w").write("x")
    os.environ["PLANTED"] = "1"
    identity = {
        "random": random.random(),
        "uuid": str(uuid.uuid4()),
        "tempfile": tempfile.mktemp(),
    }
    return {"found": found, "identity": identity}
"#;

/// Runs `script` warm twice in a row: neither finds a trace (`clean`) and no field of their
/// random identity comes out the same.
async fn assert_single_use(server: &Server, script: &str, clean: Value) {
    let first = run_warm(server, script, None).await;
    // The pool refills in the background: the service stays ready meanwhile.
    let ready = server.client().get(server.url("/readyz")).send().await.expect("GET /readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let second = run_warm(server, script, None).await;
    assert_eq!(first["result"]["found"], clean, "{first}");
    assert_eq!(second["result"]["found"], clean, "the second script saw the first one's traces: {second}");
    let identity = first["result"]["identity"].as_object().expect("identity");
    assert!(identity.len() >= 3, "{first}");
    for (field, a) in identity {
        let b = &second["result"]["identity"][field];
        assert!(!a.is_null() && a != b, "{field} came out the same in two sandboxes: {a} and {b}");
    }
}

#[tokio::test]
async fn consecutive_warm_scripts_share_no_state_and_no_randomness() {
    let server = pooled(1, 1).await;
    let before = server.metric("pyexec_pool_hits_total{kind=\"preloaded\"}").await;
    let clean = json!({
        "global": null, "builtin": null, "module": false, "pandas_option": 60,
        "patched_class": null, "tmp_file": false, "env": null,
    });
    assert_single_use(&server, TRACES, clean).await;
    let after = server.metric("pyexec_pool_hits_total{kind=\"preloaded\"}").await;
    assert_eq!(after, before.map(|hits| hits + 2.0), "a pandas script runs in a preloaded sandbox");

    let before = server.metric("pyexec_pool_hits_total{kind=\"plain\"}").await;
    let clean = json!({"global": null, "builtin": null, "module": false, "tmp_file": false, "env": null});
    assert_single_use(&server, PLAIN_TRACES, clean).await;
    let after = server.metric("pyexec_pool_hits_total{kind=\"plain\"}").await;
    assert_eq!(after, before.map(|hits| hits + 2.0), "a script without pandas runs in a plain sandbox");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_script_gets_the_modules_preloaded_only_when_it_names_one() {
    let server = pooled(1, 1).await;
    // Neither script may name the modules it looks for, except the one meant to get them.
    let loaded = "sorted(name for name in sys.modules if name in ('nump' + 'y', 'pand' + 'as'))";
    let plain = format!("import sys\nBEFORE = {loaded}\ndef main():\n    return {{'before': BEFORE}}\n");
    let body = run_warm(&server, &plain, None).await;
    assert_eq!(body["result"], json!({"before": []}), "{body}");
    let preloaded =
        format!("import sys\nBEFORE = {loaded}\nimport pandas\ndef main():\n    return {{'before': BEFORE}}\n");
    let body = run_warm(&server, &preloaded, None).await;
    assert_eq!(body["result"], json!({"before": ["numpy", "pandas"]}), "{body}");
    // Preloaded sandboxes are forked from a template that holds the import: each holds a
    // fraction of it (with --pool-fork false, each holds its own: http_fork.rs).
    server.wait_for_each_kind(1).await;
    let template = server.metric("pyexec_pool_template_memory_bytes").await.expect("template memory");
    let preloaded = server.metric("pyexec_pool_ready_memory_bytes{kind=\"preloaded\"}").await.expect("memory");
    assert!(template > 30e6 && preloaded * 4.0 < template, "template {template} bytes, preloaded {preloaded} bytes");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_script_cannot_see_or_signal_a_sandbox_waiting_in_the_pool() {
    let server = pooled(2, 2).await;
    server.wait_for_ready(2).await;
    let waiting = server.ready_sandbox_pids();
    assert!(!waiting.is_empty(), "no ready sandbox to attack");
    // Every pid the script can name: its guesses and the waiting sandboxes' real host pids.
    let targets: Vec<i32> = (1..4096).chain(waiting.iter().copied()).collect();
    let script = format!(
        "import os, signal\ntargets = {targets:?}\ndef main():\n    me = os.getpid()\n    reached = []\n    for pid in targets:\n        if pid == me:\n            continue\n        try:\n            os.kill(pid, signal.SIGKILL)\n            reached.append(pid)\n        except OSError:\n            pass\n    return {{'proc': os.listdir('/proc') if os.path.isdir('/proc') else [], 'reached': reached}}\n"
    );
    let body = run_warm(&server, &script, None).await;
    assert_eq!(body["result"], json!({"proc": [], "reached": []}), "{body}");
    // The sandbox that waited beside it is still there and runs the next script.
    let still_alive = waiting.iter().filter(|pid| common::alive(**pid)).count();
    assert!(still_alive > 0, "the waiting sandbox was killed");
    let next = run_warm(&server, "def main():\n    return {'ok': True}\n", None).await;
    assert_eq!(next["result"], json!({"ok": true}), "{next}");
}

#[tokio::test]
async fn the_deadline_and_cpu_limit_count_from_the_jobs_arrival() {
    let server = pooled(1, 1).await;
    server.wait_for_each_kind(1).await;
    // The ready sandbox has now waited longer than the timeout below: only the script's own
    // time may count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let sleeper = "import time\ndef main():\n    time.sleep(0.7)\n    return {'slept': True}\n";
    let body = run_warm(&server, sleeper, Some(json!({"timeout_seconds": 1}))).await;
    assert_eq!((body["outcome"].as_str(), &body["result"]), (Some("success"), &json!({"slept": true})), "{body}");

    // The interpreter spent CPU importing pandas before the job: not charged to the script.
    let spin = "import pandas, time\ndef main():\n    end = time.process_time() + 0.8\n    while time.process_time() < end:\n        pass\n    return {'spun': True}\n";
    let body = run_warm(&server, spin, Some(json!({"cpu_seconds": 1, "timeout_seconds": 5}))).await;
    assert_eq!(body["outcome"], "success", "{body}");

    let forever = "def main():\n    while True:\n        pass\n";
    let body = run_warm(&server, forever, Some(json!({"cpu_seconds": 1, "timeout_seconds": 20}))).await;
    assert_eq!(
        (body["outcome"].as_str(), body["error"].as_str()),
        (Some("timeout"), Some("CPU time limit of 1 s exceeded"))
    );
    // Only the CPU limit can end it long before its 20 s deadline, even on a loaded machine.
    assert!(body["duration_ms"].as_u64().is_some_and(|ms| ms < 10_000), "the CPU limit was not applied: {body}");
    let body = run_warm(&server, forever, Some(json!({"timeout_seconds": 1}))).await;
    assert_eq!(body["error"], "Execution timed out after 1 s (wall-clock limit)", "{body}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_warm_sandbox_gets_the_requests_memory_file_and_process_limits() {
    let server = pooled(1, 1).await;
    let bomb = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))";
    let body = run_warm(&server, bomb, Some(json!({"memory_mb": 256}))).await;
    assert_eq!((body["outcome"].as_str(), body["returncode"].as_i64()), (Some("memory_limit"), Some(-9)), "{body}");
    assert_eq!(body["error"], "Memory limit of 256 MiB exceeded");

    let rlimits = "import resource\ndef main():\n    raised = True\n    try:\n        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n    except (ValueError, OSError):\n        raised = False\n    try:\n        open('/tmp/big', 'wb').write(b'x' * (4 * 1024 * 1024))\n        errno = 0\n    except OSError as e:\n        errno = e.errno\n    return {'nofile': list(resource.getrlimit(resource.RLIMIT_NOFILE)), 'raised': raised, 'errno': errno}\n";
    let body = run_warm(&server, rlimits, Some(json!({"open_files": 32, "file_size_mb": 1}))).await;
    assert_eq!(body["result"], json!({"nofile": [32, 32], "raised": false, "errno": 27}), "{body}");

    let forks = "import os, resource\ndef main():\n    children = 0\n    try:\n        for _ in range(64):\n            if os.fork() == 0:\n                import time; time.sleep(5); os._exit(0)\n            children += 1\n    except OSError:\n        pass\n    return {'children': children, 'nproc': list(resource.getrlimit(resource.RLIMIT_NPROC))}\n";
    let body = run_warm(&server, forks, Some(json!({"max_pids": 8}))).await;
    assert!(body["result"]["children"].as_u64().is_some_and(|n| n < 8), "{body}");
    // The harness lowered RLIMIT_NPROC to the job's before the script ran.
    assert_eq!(body["result"]["nproc"], json!([8, 8]), "{body}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn limits_a_ready_sandbox_cannot_take_go_the_cold_path() {
    let server = pooled(1, 1).await;
    server.wait_for_each_kind(1).await;
    let (before_hits, before_cold) = (hits(&server).await, cold_starts(&server).await);
    // /tmp's size is fixed when a jail starts: another size cannot be warm.
    let (status, body) = server.execute("def main():\n    return {'ok': True}\n", Some(json!({"tmp_mb": 8}))).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})), "{body}");
    assert_eq!(hits(&server).await, before_hits);
    assert_eq!(cold_starts(&server).await, before_cold + 1.0);
    let plain = server.metric("pyexec_pool_ready{kind=\"plain\"}").await;
    assert_eq!(plain, Some(1.0), "the ready sandbox was used or lost");
}

#[tokio::test]
async fn a_ready_sandbox_that_dies_is_replaced() {
    let server = pooled(1, 1).await;
    server.wait_for_each_kind(1).await;
    let pids = server.ready_sandbox_pids();
    for &pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|pid| common::alive(*pid)) {
        assert!(std::time::Instant::now() < deadline, "the killed sandbox did not die");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Whatever the pool holds at this moment, the script runs.
    let (status, body) = server.execute("def main():\n    return {'ok': True}\n", None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})), "{body}");
    let body = run_warm(&server, "def main():\n    return {'again': True}\n", None).await;
    assert_eq!(body["result"], json!({"again": true}), "{body}");
}

#[tokio::test]
async fn with_the_pool_off_every_script_starts_cold() {
    let server = Server::start_with(&["--pool-max", "0"]).await;
    let (status, body) = server.execute("def main():\n    return {'ok': True}\n", None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})), "{body}");
    assert_eq!(hits(&server).await, 0.0);
    assert_eq!(cold_starts(&server).await, 1.0);
    assert_eq!(server.metric("pyexec_pool_ready").await, Some(0.0));
}

#[tokio::test]
async fn shutdown_removes_every_ready_sandbox() {
    let mut server = pooled(2, 2).await;
    server.wait_for_ready(2).await;
    let waiting = server.ready_sandbox_pids();
    assert!(waiting.len() >= 2, "expected two ready sandboxes: {waiting:?}");
    let status = server.stop().expect("the server ran");
    assert!(status.success(), "{status:?}");
    let alive: Vec<i32> = waiting.into_iter().filter(|pid| common::alive(*pid)).collect();
    assert_eq!(alive, Vec::<i32>::new(), "ready sandboxes outlived the server");
    assert_eq!(server.run_cgroups(), Vec::<String>::new(), "cgroups outlived the server");
}

#[tokio::test]
async fn a_ready_sandbox_past_its_idle_lifetime_is_replaced() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1", "--pool-idle-seconds", "1"]).await;
    server.wait_for_each_kind(1).await;
    let first = server.ready_sandbox_pids();
    assert!(!first.is_empty(), "no ready sandbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while first.iter().any(|pid| common::alive(*pid)) {
        assert!(std::time::Instant::now() < deadline, "the stale sandbox was never removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A new one takes its place. (Each lives a second once ready, so on a busy machine the
    // first one seen may itself expire before a script could claim it: look, don't claim.)
    loop {
        let replaced = server.ready_sandbox_pids();
        if !replaced.is_empty() && replaced.iter().all(|pid| !first.contains(pid)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new ready sandbox: {first:?} {replaced:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = server.execute("def main():\n    return {'fresh': True}\n", None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"fresh": true})), "{body}");
}

/// A successful run is answered as soon as its report and output are read, before its jail has
/// ended: everything the script printed is still in the answer, byte for byte, even output
/// that fills the pipes many times over, and the sandbox is gone right after.
#[tokio::test]
async fn an_answer_before_the_jail_ends_has_all_of_the_output() {
    let server = pooled(1, 2).await;
    let script = "import sys\ndef main():\n    for i in range(3000):\n        print('%06d' % i + 'o' * 93)\n        sys.stderr.write('%06d' % i + 'e' * 93 + '\\n')\n    return {'lines': 3000}\n";
    for _ in 0..3 {
        let body = run_warm(&server, script, None).await;
        assert_eq!(body["outcome"], "success", "{body}");
        let (stdout, stderr) =
            (body["stdout"].as_str().unwrap_or_default(), body["stderr"].as_str().unwrap_or_default());
        assert_eq!(
            (stdout.len(), stderr.len()),
            (300_000, 300_000),
            "output lost: {}",
            &stdout[stdout.len().saturating_sub(200)..]
        );
        assert!(stdout.ends_with(&format!("{:06}{}\n", 2999, "o".repeat(93))));
        assert!(stderr.ends_with(&format!("{:06}{}\n", 2999, "e".repeat(93))));
    }
    server.assert_healthy_and_clean().await;
}

/// A thread that keeps printing after main() returned neither holds the answer until the
/// deadline nor outlives it: the answer comes (with the result), and the sandbox ends.
#[tokio::test]
async fn a_thread_printing_after_main_returned_does_not_hold_the_answer() {
    let server = pooled(1, 2).await;
    let script = "import threading, sys\ndef spam():\n    while True:\n        sys.stdout.write('x' * 1000)\ndef main():\n    threading.Thread(target=spam, daemon=True).start()\n    return {'ok': 1}\n";
    let started = std::time::Instant::now();
    let body = run_warm(&server, script, Some(json!({"timeout_seconds": 20}))).await;
    assert_eq!((body["outcome"].as_str(), &body["result"]), (Some("success"), &json!({"ok": 1})), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the answer waited for the deadline");
    server.assert_healthy_and_clean().await;
}

/// The most ready sandboxes seen starting at once while the pool refills from empty: every
/// ready sandbox is killed, then /metrics is read until the pool is full again.
async fn most_starting_at_once(server: &Server, full: f64) -> f64 {
    server.wait_for_gauge_value("pyexec_pool_ready", full).await;
    for pid in server.ready_sandbox_pids() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut most: f64 = 0.0;
    let mut emptied = false;
    loop {
        let starting = server.metric("pyexec_pool_starting").await.expect("starting gauge");
        let ready = server.metric("pyexec_pool_ready").await.expect("ready gauge");
        most = most.max(starting);
        emptied |= ready < full;
        if emptied && ready >= full && starting == 0.0 {
            return most;
        }
        assert!(std::time::Instant::now() < deadline, "the pool did not refill: {ready} ready, {starting} starting");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn the_pool_starts_several_sandboxes_at_once_up_to_its_setting() {
    let many = Server::start_with(&["--pool-min", "3", "--pool-max", "3", "--pool-starts-at-once", "3"]).await;
    let most = most_starting_at_once(&many, 6.0).await;
    assert!(most >= 2.0, "at most {most} sandbox(es) started at once");
    // Three of each kind at first, three of each again after the kill: every start is timed.
    for kind in ["plain", "preloaded"] {
        let started = many.metric(&format!("pyexec_pool_start_seconds_count{{kind=\"{kind}\"}}")).await;
        assert!(started.is_some_and(|n| n >= 6.0), "{kind} starts timed: {started:?}");
        let seconds = many.metric(&format!("pyexec_pool_start_seconds_sum{{kind=\"{kind}\"}}")).await;
        assert!(seconds.is_some_and(|s| s > 0.0), "{kind} start time: {seconds:?}");
    }
    let one = Server::start_with(&["--pool-min", "3", "--pool-max", "3", "--pool-starts-at-once", "1"]).await;
    let most = most_starting_at_once(&one, 6.0).await;
    assert_eq!(most, 1.0, "--pool-starts-at-once 1 started {most} at once");
}

/// A request that finds no ready sandbox of its kind while one is being started waits for that
/// start instead of starting cold. With `--pool-fork false` a preloaded sandbox imports pandas
/// itself, so its start takes about what a cold start of the same script does, and one already
/// under way is always the sooner. Each round empties the pool's preloaded kind, catches its
/// replacement being started, and sends a pandas script: it never goes cold for want of a ready
/// sandbox (it found the start ended, or waited for it; a wait is bounded by a cold start's
/// time, which a start slowed by a busy machine may pass), until one has waited and run warm.
#[tokio::test]
async fn a_request_waits_for_a_start_under_way_rather_than_starting_cold() {
    let server = Server::start_with(&["--pool-min", "1", "--pool-max", "1", "--pool-fork", "false"]).await;
    let pandas = "import pandas\ndef main():\n    return {'rows': len(pandas.DataFrame({'a': [1, 2]}))}\n";
    let waits = "pyexec_pool_waits_total{kind=\"preloaded\",ended=\"hit\"}";
    let waits_in_vain = "pyexec_pool_waits_total{kind=\"preloaded\",ended=\"cold\"}";
    let empty = "pyexec_pool_misses_total{kind=\"preloaded\",reason=\"empty\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for round in 0.. {
        server.wait_for_each_kind(1).await;
        // The ready one is taken; its replacement starts (the pool looks at least once a second).
        let body = run_warm(&server, pandas, None).await;
        assert_eq!(body["result"], json!({"rows": 2}), "{body}");
        // The start may also have ended already: then this round has nothing to catch.
        let ready = "pyexec_pool_ready{kind=\"preloaded\"}";
        let caught = loop {
            if server.metric("pyexec_pool_starting").await == Some(1.0) {
                break true;
            }
            if server.metric(ready).await == Some(1.0) {
                break false;
            }
            assert!(std::time::Instant::now() < deadline, "no start under way seen in {round} rounds");
        };
        if !caught {
            continue;
        }
        let (cold, warm, in_vain) =
            (cold_starts(&server).await, hits(&server).await, server.metric(waits_in_vain).await);
        let (status, body) = server.execute(pandas, None).await;
        assert_eq!((status, &body["result"]), (200, &json!({"rows": 2})), "{body}");
        assert_eq!(server.metric(empty).await, Some(0.0), "round {round}: it did not wait for the start: {body}");
        if server.metric(waits_in_vain).await == in_vain {
            assert_eq!(cold_starts(&server).await, cold, "round {round}: the script started cold: {body}");
            assert_eq!(hits(&server).await, warm + 1.0);
        }
        if server.metric(waits).await.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no request waited for a start in {round} rounds");
    }
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn without_cgroups_ready_sandboxes_lower_their_rlimits_to_each_jobs_memory_and_process_limits() {
    // As in a container that is not privileged: no writable cgroups, so each ready sandbox's
    // harness lowers RLIMIT_AS and RLIMIT_NPROC to its job's before the script runs.
    let server = Server::start_with(&["--cgroups", "off", "--pool-min", "1", "--pool-max", "2"]).await;
    let pandas = "import pandas as pd\ndef main():\n    return {'rows': len(pd.DataFrame({'a': [1, 2]}))}";
    let body = run_warm(&server, pandas, None).await;
    assert_eq!(body["result"], json!({"rows": 2}), "{body}");

    let memory_bomb =
        "import pandas\ndef main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))";
    let body = run_warm(&server, memory_bomb, Some(json!({"memory_mb": 300}))).await;
    assert_eq!(body["outcome"], "memory_limit", "{body}");
    assert_eq!(body["error"], "Memory limit of 300 MiB exceeded (MemoryError)");

    let fork_bomb =
        "import os, time\ndef main():\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)";
    let body = run_warm(&server, fork_bomb, Some(json!({"max_pids": 16}))).await;
    assert_eq!(body["outcome"], "exception", "{body}");
    assert_eq!(body["error"], "BlockingIOError: [Errno 11] Resource temporarily unavailable");
    server.assert_healthy_and_clean().await;
}
