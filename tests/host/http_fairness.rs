//! Fair sharing of the CPUs over real HTTP with real nsjail: every running script's cgroup has
//! the cpu controller with the same weight and a cap, a spinner gets no more CPU than its cap,
//! ready sandboxes import at a low weight raised when their job arrives, a long run drops to
//! the idle class (or a lower weight) beside new ones, and more scripts than cores run at once
//! (slots are bounded by memory and processes, not cores).

mod common;

use std::path::{Path, PathBuf};

use common::{cgroup_pids, Pool, Server};
use serde_json::{json, Value};

/// A run's CPU weight as the v1 `cpu.shares` or v2 `cpu.weight` file has it.
const RUN_WEIGHT: (&str, &str) = ("1024", "100");
/// A run's weight once it has used --cpu-long-run-seconds of CPU.
const LONG_RUN_WEIGHT: (&str, &str) = ("102", "10");
/// A ready sandbox's weight before its job arrives.
const REFILL_WEIGHT: (&str, &str) = ("10", "1");

/// The CPU settings of one of the server's cgroups, read from the host.
#[derive(Debug, PartialEq)]
struct CpuFiles {
    name: String,
    weight: String,
    /// CPUs per period, as "quota period" (v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`, or v2
    /// `cpu.max`).
    max: String,
    /// `cpu.idle` ("1": scheduled only when no other group wants the CPU); empty on kernels
    /// without it.
    idle: String,
    unified: bool,
}

/// The server's cgroups that have the cpu controller and hold a process now.
fn occupied_cpu_groups(server: &Server) -> Vec<CpuFiles> {
    let v1 = Path::new("/sys/fs/cgroup/cpu").join(&server.cgroup_parent);
    let v2 = Path::new("/sys/fs/cgroup").join(&server.cgroup_parent);
    let (parent, unified) = if v1.is_dir() { (v1, false) } else { (v2, true) };
    let read =
        |dir: &PathBuf, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default().trim().to_string();
    let mut groups = Vec::new();
    for entry in std::fs::read_dir(&parent).expect("the server's cpu cgroup parent").flatten() {
        let dir = entry.path();
        if !dir.is_dir() || cgroup_pids(&dir.display().to_string()).is_empty() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let idle = read(&dir, "cpu.idle");
        let files = if unified {
            CpuFiles { name, weight: read(&dir, "cpu.weight"), max: read(&dir, "cpu.max"), idle, unified }
        } else {
            let max = format!("{} {}", read(&dir, "cpu.cfs_quota_us"), read(&dir, "cpu.cfs_period_us"));
            CpuFiles { name, weight: read(&dir, "cpu.shares"), max, idle, unified }
        };
        groups.push(files);
    }
    groups
}

/// The first occupied cpu group that is `found`, polled for at most `seconds` (a run's weight
/// changes, and its sandbox joins its cgroup, a moment after what the test waited for); fails
/// saying it `never` happened, with the groups last seen.
async fn group_where(server: &Server, seconds: u64, never: &str, found: impl Fn(&CpuFiles) -> bool) -> CpuFiles {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let mut groups = occupied_cpu_groups(server);
        if let Some(group) = groups.iter().position(&found).map(|at| groups.swap_remove(at)) {
            return group;
        }
        assert!(std::time::Instant::now() < deadline, "{never}: {groups:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The first occupied cpu group not named `besides`.
async fn occupied_group_besides(server: &Server, besides: Option<&str>) -> CpuFiles {
    group_where(server, 5, "the run never entered a cgroup", |g| Some(g.name.as_str()) != besides).await
}

/// Whether the group has this weight, and is out of the idle class.
fn weight(files: &CpuFiles, (v1, v2): (&str, &str)) -> bool {
    files.weight == if files.unified { v2 } else { v1 } && files.idle != "1"
}

/// Whether the group has the long-run weight (in or out of the idle class).
fn long_run_weight(files: &CpuFiles) -> bool {
    files.weight == if files.unified { LONG_RUN_WEIGHT.1 } else { LONG_RUN_WEIGHT.0 }
}

/// A long run: in the idle class (whose weight the kernel then reports as its own minimum),
/// or with the long-run weight where the kernel has no idle class.
fn long_run(files: &CpuFiles) -> bool {
    files.idle == "1" || files.idle.is_empty() && long_run_weight(files)
}

/// A script that sleeps `seconds` and returns when it started and ended (host wall clock).
fn sleeper(seconds: f64) -> String {
    format!("import time\ndef main():\n    start = time.time()\n    time.sleep({seconds})\n    return {{'start': start, 'end': time.time()}}\n")
}

/// Starts `script` in the background; the answer is awaited by the caller.
fn spawn(server: &Server, script: String) -> tokio::task::JoinHandle<(u16, Value)> {
    let client = server.client().clone();
    let url = server.url("/execute");
    tokio::spawn(async move {
        let response = client.post(url).json(&json!({ "script": script })).send().await.expect("POST /execute");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    })
}

#[tokio::test]
async fn a_running_script_has_the_run_weight_and_the_cap() {
    let server =
        Server::start_with(&["--pool-max", "0", "--cpu-per-sandbox", "0.5", "--cpu-long-run-seconds", "0"]).await;
    let run = spawn(&server, sleeper(3.0));
    server.wait_for_in_flight(1).await;
    let group = &occupied_group_besides(&server, None).await;
    let groups = occupied_cpu_groups(&server);
    assert_eq!(groups.len(), 1, "one run, one occupied cpu group: {groups:?}");
    assert!(weight(group, RUN_WEIGHT), "{group:?}");
    assert_eq!(group.max, "50000 100000", "half a CPU per 100 ms period: {group:?}");
    let (status, body) = run.await.expect("task");
    assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn ready_sandboxes_import_at_a_low_weight_raised_when_their_job_arrives() {
    // No long-run demotion: the claimed sandbox keeps the run weight however slow the machine.
    // Ready sandboxes that start their own interpreter (not forked from a template, whose forks
    // cost milliseconds and are made at the run weight: http_fork.rs).
    let server = Server::start_with(&["--cpu-long-run-seconds", "0", "--pool-fork", "false"]).await;
    let waiting = occupied_cpu_groups(&server);
    assert!(!waiting.is_empty(), "a ready sandbox waits in its cgroup");
    for group in &waiting {
        assert!(group.name.starts_with("ready-") && weight(group, REFILL_WEIGHT), "{group:?}");
        assert_eq!(group.max, "100000 100000", "ready sandboxes are capped too: {group:?}");
    }
    let hits = server.metric("pyexec_pool_hits_total").await.unwrap_or(0.0);
    let run = spawn(&server, sleeper(3.0));
    server.wait_for_in_flight(1).await;
    let running: Vec<CpuFiles> = occupied_cpu_groups(&server).into_iter().filter(|g| weight(g, RUN_WEIGHT)).collect();
    assert_eq!(running.len(), 1, "exactly the claimed sandbox runs at the run weight: {running:?}");
    assert!(running[0].name.starts_with("ready-"), "the script ran warm: {running:?}");
    let (status, body) = run.await.expect("task");
    assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    assert_eq!(server.metric("pyexec_pool_hits_total").await, Some(hits + 1.0));
    server.assert_healthy_and_clean().await;
}

pool_case!(a_spinner_gets_no_more_cpu_than_its_cap);
async fn a_spinner_gets_no_more_cpu_than_its_cap(pool: Pool) {
    let server = Server::start_in(pool, &["--cpu-per-sandbox", "0.3"]).await;
    let spinner = "import time\ndef main():\n    wall, cpu = time.monotonic(), time.process_time()\n    while time.monotonic() - wall < 3:\n        pass\n    return {'cpu': time.process_time() - cpu, 'wall': time.monotonic() - wall}\n";
    let (status, body) = server.execute(spinner, None).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    let cpu = body["result"]["cpu"].as_f64().expect("cpu seconds");
    let wall = body["result"]["wall"].as_f64().expect("wall seconds");
    // Capped at 0.3 CPU it gets about 0.9 s of 3 s; uncapped on an idle core, about 3 s.
    assert!(cpu / wall <= 0.45, "the spinner used {cpu:.2} s of CPU in {wall:.2} s, past its cap of 0.3 CPU");
    assert!(cpu >= 0.1, "the spinner hardly ran: {cpu:.2} s of CPU in {wall:.2} s");
    server.assert_healthy_and_clean().await;
}

pool_case!(more_scripts_than_cores_run_at_once);
async fn more_scripts_than_cores_run_at_once(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let n = (cores + 2).max(4);
    let runs: Vec<_> = (0..n).map(|_| spawn(&server, sleeper(4.0))).collect();
    let mut spans = Vec::new();
    for run in runs {
        let (status, body) = run.await.expect("task");
        assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
        let start = body["result"]["start"].as_f64().expect("start");
        let end = body["result"]["end"].as_f64().expect("end");
        spans.push((start, end));
    }
    // All overlapped: the last to start began before the first to end ended. With one slot per
    // core, the later ones would start only after earlier ones ended.
    let last_start = spans.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let first_end = spans.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(last_start < first_end, "{n} sleepers on {cores} cores did not all run at once: {spans:?}");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_long_run_drops_to_the_long_run_weight_and_a_new_run_keeps_the_run_weight() {
    let server = Server::start_with(&["--pool-max", "0", "--cpu-long-run-seconds", "0.3"]).await;
    let spinner = "import time\ndef main():\n    start = time.monotonic()\n    while time.monotonic() - start < 5:\n        pass\n    return {}\n";
    let long = spawn(&server, spinner.to_string());
    server.wait_for_in_flight(1).await;
    // The weight drops once the spinner used 0.3 s of CPU; poll for it, bounded.
    let demoted = group_where(&server, 3, "the long run kept its weight", long_run).await.name;
    // A script that waits uses no CPU: it keeps the run weight.
    let fresh = spawn(&server, sleeper(1.0));
    server.wait_for_in_flight(2).await;
    let fresh_group = occupied_group_besides(&server, Some(&demoted)).await;
    assert!(weight(&fresh_group, RUN_WEIGHT), "{fresh_group:?}");
    for run in [long, fresh] {
        let (status, body) = run.await.expect("task");
        assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    }
    // The long run's group, taken again by a next run, leaves the idle class for it. Both groups
    // are idle once no run is in flight (an answered run counts until its sandbox has ended and
    // its group is back): two runs take both.
    server.wait_for_in_flight(0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let next = [spawn(&server, sleeper(1.0)), spawn(&server, sleeper(1.0))];
    server.wait_for_in_flight(2).await;
    let groups = loop {
        let groups = occupied_cpu_groups(&server);
        if groups.len() == 2 {
            break groups;
        }
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(5), "{groups:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(groups.iter().any(|group| group.name == demoted), "{demoted} was not taken again: {groups:?}");
    assert!(groups.iter().all(|group| weight(group, RUN_WEIGHT)), "{groups:?}");
    for run in next {
        let (status, body) = run.await.expect("task");
        assert_eq!(status, 200, "{body}");
    }
    server.assert_healthy_and_clean().await;
}

/// CPU seconds (user + system) the process `pid` has used, from /proc.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc stat");
    let fields = pyexec::sandbox::jail::procfs::stat_fields(&stat).expect("stat fields after the command name");
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// An output flood's cost lands on the flood, not on the service: past its cap the server
/// drains the pipe at a bounded pace (the writer waits on a full pipe), where it used to read
/// and drop everything at full speed (2.0 s of server CPU for a 5 s flood).
#[tokio::test]
async fn an_output_flood_costs_the_service_little_cpu() {
    let server = Server::start_with(&["--pool-max", "0"]).await;
    let pid = server.pid().expect("the server's pid");
    let flood = "import sys\ndef main():\n    line = 'x' * 65536\n    while True:\n        sys.stdout.write(line)\n";
    let before = cpu_seconds_of(pid);
    let (status, body) = server.execute(flood, Some(json!({"timeout_seconds": 3}))).await;
    let used = cpu_seconds_of(pid) - before;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("timeout")), "{body}");
    assert_eq!(body["stdout_truncated"], true);
    assert!(used < 0.5, "the server used {used:.2} CPU seconds during a 3 s flood");
    server.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn with_cpu_long_run_idle_false_a_long_run_only_drops_to_the_long_run_weight() {
    let server =
        Server::start_with(&["--pool-max", "0", "--cpu-long-run-seconds", "0.2", "--cpu-long-run-idle", "false"]).await;
    let spinner = "import time\ndef main():\n    start = time.monotonic()\n    while time.monotonic() - start < 2:\n        pass\n    return {}\n";
    let long = spawn(&server, spinner.to_string());
    server.wait_for_in_flight(1).await;
    let group = group_where(&server, 3, "the long run kept its weight", long_run_weight).await;
    assert_ne!(group.idle, "1", "the long run is not in the idle class: {group:?}");
    let (status, body) = long.await.expect("task");
    assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    server.assert_healthy_and_clean().await;
}

/// A long run in the idle class beside runs that keep every CPU busy at a run's weight is not
/// left without CPU: after a second in which it waited and ran under its floor, its group gets
/// a run's weight, outside the idle class, and the long run ends with what it computed.
#[tokio::test]
async fn a_starving_long_run_gets_a_run_weight_back_for_a_while() {
    // Spinners keep a run's weight for their first 3 CPU-seconds, capped at one CPU each.
    let server =
        Server::start_with(&["--pool-max", "0", "--cpu-per-sandbox", "1", "--cpu-long-run-seconds", "3"]).await;
    let spinner = |seconds: u32| {
        format!("import time\ndef main():\n    start = time.monotonic()\n    while time.monotonic() - start < {seconds}:\n        pass\n    return {{'cpu': time.process_time()}}\n")
    };
    let long = spawn(&server, spinner(7));
    server.wait_for_in_flight(1).await;
    let demoted = group_where(&server, 8, "the long run never entered the idle class", |g| g.idle == "1").await.name;
    // As many fresh spinners as CPUs: each keeps a CPU busy at a run's weight.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let fresh: Vec<_> = (0..cpus).map(|_| spawn(&server, spinner(4))).collect();
    server.wait_for_in_flight(1 + cpus).await;
    let never = "the starving long run never got a run's weight";
    group_where(&server, 5, never, |g| g.name == demoted && weight(g, RUN_WEIGHT)).await;
    for run in fresh.into_iter().chain([long]) {
        let (status, body) = run.await.expect("task");
        assert_eq!((status, body["outcome"].as_str()), (200, Some("success")), "{body}");
    }
    server.assert_healthy_and_clean().await;
}
