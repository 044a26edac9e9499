//! `make bench`: end-to-end HTTP latency and throughput of pyexec beside the same scripts run
//! as bare `python3 -I script.py` (the sandbox's own interpreter and packages), in one process,
//! on the same machine, with the ratio. Two servers: one with the pool of ready sandboxes (the
//! default) and one with `--pool-max 0` (every script starts cold). Numbers, not assertions:
//! this is not a test.
//!
//! - concurrency 1: each script alone; the warm figures wait (untimed) until a ready sandbox
//!   exists and the pool is not starting one, as a caller that thinks between calls finds it;
//!   the back-to-back figures send the next request as soon as the last answer arrived (the
//!   pool refills meanwhile, or is empty);
//! - concurrency 8, sustained for `SUSTAIN` with a mix of hello and pandas scripts: throughput
//!   and latency of each, warm pool, cold, and bare Python;
//! - memory of the idle pool, per ready sandbox.
//!
//! `make bench MODE=mixed` (`cargo run --release --example bench -- mixed`) measures fairness
//! instead: hello alone at concurrency 1 (idle), then `CONCURRENCY` workers for `MIXED_SUSTAIN`
//! where one request in ten is hostile (a spinner, a fork bomb or an output flood, each until
//! its 10 s timeout) and the rest hello; it prints hello's p50/p99 under the mix beside idle and
//! counts failures (a non-200 answer, or a hello that did not succeed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const HELLO: &str = "def main():\n    return {'message': 'Hello World'}\n";
const PANDAS: &str = "def main():\n    import pandas as pd\n    import numpy as np\n    data = {\"A\": [1, 2, 3], \"B\": [4, 5, 6]}\n    df = pd.DataFrame(data)\n    return {\"sum\": int(np.sum(df[\"A\"]))}\n";
/// Runs of each script at concurrency 1.
const RUNS: usize = 30;
/// How long the concurrency-8 mix runs, per side.
const SUSTAIN: Duration = Duration::from_secs(30);
const CONCURRENCY: usize = 8;

/// The thread settings the sandbox's environment has (nsjail.cfg), so both sides load the same
/// BLAS configuration.
const SANDBOX_ENV: [(&str, &str); 4] =
    [("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("NUMEXPR_NUM_THREADS", "1")];

struct Stats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    if samples.is_empty() {
        return Stats { p50: Duration::ZERO, p99: Duration::ZERO, per_second: 0.0 };
    }
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.5), p99: at(0.99), per_second: samples.len() as f64 / wall.as_secs_f64() }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One way of running a script: through a server, or as bare Python.
#[derive(Clone)]
enum Runner {
    Http { client: reqwest::Client, base: String },
    Bare { python: PathBuf, scratch: PathBuf },
}

impl Runner {
    async fn run(&self, name: &str, script: &str) {
        match self {
            Runner::Http { client, base } => {
                let response =
                    client.post(format!("{base}/execute")).json(&json!({"script": script})).send().await.expect("POST");
                assert_eq!(response.status().as_u16(), 200, "benchmark request failed");
                let body: serde_json::Value = response.json().await.expect("JSON");
                assert_eq!(body["outcome"], "success", "benchmark script failed: {body}");
            }
            Runner::Bare { python, scratch } => {
                let status = tokio::process::Command::new(python)
                    .arg("-I")
                    .arg(scratch.join(format!("{name}.py")))
                    .envs(SANDBOX_ENV.iter().copied())
                    .stdout(Stdio::null())
                    .status()
                    .await;
                assert!(status.is_ok_and(|s| s.success()), "bare python failed");
            }
        }
    }

    /// For a server with a pool: waits (untimed) until a ready sandbox of each kind exists and
    /// none is being started (the pool is idle, as a caller that thinks between calls finds it).
    async fn wait_until_warm(&self) {
        let Runner::Http { client, base } = self else { return };
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(client, base, "pyexec_pool_ready{kind=\"plain\"}").await < 1.0
            || metric(client, base, "pyexec_pool_ready{kind=\"preloaded\"}").await < 1.0
            || metric(client, base, "pyexec_pool_starting").await > 0.0
        {
            assert!(Instant::now() < deadline, "the pool never refilled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The metric line `name ` (labels may be part of `name`), or else the sum of its labelled lines.
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    let prefix = format!("{name} ");
    if let Some(value) = text.lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()) {
        return value;
    }
    let labelled = format!("{name}{{");
    let values = text.lines().filter(|line| line.starts_with(&labelled));
    values.filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
}

/// `RUNS` calls one after another; `warm` waits for a ready sandbox before each (untimed).
async fn sequential(runner: &Runner, name: &str, script: &str, warm: bool) -> Stats {
    let mut samples = Vec::with_capacity(RUNS);
    let mut busy = Duration::ZERO;
    for _ in 0..RUNS {
        if warm {
            runner.wait_until_warm().await;
        }
        let t = Instant::now();
        runner.run(name, script).await;
        samples.push(t.elapsed());
        busy += t.elapsed();
    }
    stats(samples, busy)
}

/// `CONCURRENCY` workers alternating hello and pandas for `SUSTAIN`: stats of each script.
async fn sustained_mix(runner: &Runner) -> (Stats, Stats) {
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let runner = runner.clone();
        workers.push(tokio::spawn(async move {
            let (mut hello, mut pandas) = (Vec::new(), Vec::new());
            let mut n = worker;
            while started.elapsed() < SUSTAIN {
                let t = Instant::now();
                if n % 2 == 0 {
                    runner.run("hello", HELLO).await;
                    hello.push(t.elapsed());
                } else {
                    runner.run("pandas", PANDAS).await;
                    pandas.push(t.elapsed());
                }
                n += 1;
            }
            (hello, pandas)
        }));
    }
    let (mut hello, mut pandas) = (Vec::new(), Vec::new());
    for worker in workers {
        let (h, p) = worker.await.expect("worker");
        hello.extend(h);
        pandas.extend(p);
    }
    let wall = started.elapsed();
    (stats(hello, wall), stats(pandas, wall))
}

struct Server {
    child: Child,
    runner: Runner,
}

impl Server {
    async fn start(binary: &Path, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--max-queue", "256"])
            // Each server its own cgroup parent, so that the servers' cgroups are told apart
            // when one looks (their slots never mix either way: slots carry the server's pid).
            .args(["--cgroup-parent", &format!("pyexec-bench-{port}")])
            .args(extra)
            .env("PYEXEC_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start pyexec");
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server { child, runner: Runner::Http { client, base } }
    }

    fn stop(self) {}
}

/// Stopped with SIGTERM also when the benchmark panics, so that no server outlives it.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn row(label: &str, stats: &Stats, bare: &Stats) {
    println!(
        "{:<28} | {:>9} {:>9} {:>8.1} | {:>6.2}x {:>7.2}x",
        label,
        ms(stats.p50),
        ms(stats.p99),
        stats.per_second,
        stats.p50.as_secs_f64() / bare.p50.as_secs_f64(),
        stats.per_second / bare.per_second
    );
}

/// How long the mixed load runs (hostile scripts started near its end finish after it).
const MIXED_SUSTAIN: Duration = Duration::from_secs(30);
/// Hello runs alone, one after another, for the idle figures of the mixed mode.
const IDLE_RUNS: usize = 100;
/// One request in this many is hostile in the mixed mode.
const HOSTILE_EVERY: usize = 10;
/// The hostile scripts of the mixed mode: each runs until its timeout.
const HOSTILE: [(&str, &str); 3] = [
    ("spinner", "def main():\n    while True:\n        pass\n"),
    (
        "fork bomb",
        "import os\ndef main():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
    ),
    ("output flood", "import sys\ndef main():\n    line = 'x' * 65536\n    while True:\n        sys.stdout.write(line)\n"),
];
/// The hostile scripts' timeout, given in each request.
const HOSTILE_TIMEOUT_SECONDS: f64 = 10.0;

/// What one request of the mixed mode came to.
enum Answer {
    Hello(Duration),
    Hostile { kind: &'static str, outcome: String },
    Failed(String),
}

/// POSTs `body`; a hello must answer 200 with its result, a hostile script 200 with any outcome.
async fn mixed_request(client: &reqwest::Client, base: &str, n: usize) -> Answer {
    let hostile = (n % HOSTILE_EVERY == HOSTILE_EVERY - 1).then(|| HOSTILE[(n / HOSTILE_EVERY) % HOSTILE.len()]);
    let body = match hostile {
        Some((_, script)) => json!({"script": script, "limits": {"timeout_seconds": HOSTILE_TIMEOUT_SECONDS}}),
        None => json!({"script": HELLO}),
    };
    let t = Instant::now();
    let response = match client.post(format!("{base}/execute")).json(&body).send().await {
        Ok(response) => response,
        Err(err) => return Answer::Failed(format!("request: {err}")),
    };
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let elapsed = t.elapsed();
    match (hostile, status) {
        (_, status) if status != 200 => Answer::Failed(format!("status {status}: {body}")),
        (Some((kind, _)), _) => Answer::Hostile { kind, outcome: body["outcome"].as_str().unwrap_or("?").to_string() },
        (None, _) if body["result"] == json!({"message": "Hello World"}) => Answer::Hello(elapsed),
        (None, _) => Answer::Failed(format!("hello: {body}")),
    }
}

/// The mixed mode: hello idle, then hello under a load with hostile scripts, on one server.
async fn mixed(binary: &Path) {
    let server = Server::start(binary, &[]).await;
    let Runner::Http { client, base } = server.runner.clone() else { unreachable!("an HTTP runner") };
    for _ in 0..3 {
        server.runner.run("hello", HELLO).await;
    }
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!(
        "pyexec fairness benchmark: {cpus} CPUs, server defaults (slots from memory, --cpu-per-sandbox 1, --cpu-long-run-seconds 0.1, pool on)"
    );
    println!("load average before: {}", loadavg());

    let mut idle = Vec::with_capacity(IDLE_RUNS);
    let mut failures = Vec::new();
    for n in 0..IDLE_RUNS {
        // n * HOSTILE_EVERY is never hostile.
        match mixed_request(&client, &base, n * HOSTILE_EVERY).await {
            Answer::Hello(elapsed) => idle.push(elapsed),
            Answer::Failed(why) => failures.push(why),
            Answer::Hostile { .. } => unreachable!("idle runs are hello only"),
        }
    }
    let idle_wall: Duration = idle.iter().sum();
    let idle = stats(idle, idle_wall);

    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, counter) = (client.clone(), base.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while started.elapsed() < MIXED_SUSTAIN {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answers.push(mixed_request(&client, &base, n).await);
            }
            answers
        }));
    }
    let mut hello = Vec::new();
    let mut hostile: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for worker in workers {
        for answer in worker.await.expect("worker") {
            match answer {
                Answer::Hello(elapsed) => hello.push(elapsed),
                Answer::Hostile { kind, outcome } => *hostile.entry(format!("{kind}: {outcome}")).or_default() += 1,
                Answer::Failed(why) => failures.push(why),
            }
        }
    }
    let wall = started.elapsed();
    let mixed = stats(hello.clone(), wall);
    println!("load average after: {}", loadavg());
    println!();
    println!("hello, {IDLE_RUNS} runs alone, then concurrency {CONCURRENCY} for {} s with one request in {HOSTILE_EVERY} hostile", MIXED_SUSTAIN.as_secs());
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7}", "", "p50 ms", "p99 ms", "runs", "p99 x");
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>6.2}x", "hello idle", ms(idle.p50), ms(idle.p99), IDLE_RUNS, 1.0);
    println!(
        "{:<28} | {:>9} {:>9} {:>8} | {:>6.2}x",
        "hello under the mix",
        ms(mixed.p50),
        ms(mixed.p99),
        hello.len(),
        mixed.p99.as_secs_f64() / idle.p99.as_secs_f64()
    );
    let hostile: Vec<String> = hostile.iter().map(|(what, count)| format!("{what} x{count}")).collect();
    println!("hostile scripts (outcomes): {}", hostile.join(", "));
    let hits = metric(&client, &base, "pyexec_pool_hits_total").await;
    let colds = metric(&client, &base, "pyexec_cold_starts_total").await;
    println!("(whole run: {hits} warm, {colds} cold starts; p99 x = p99 under the mix / idle p99; aim <= 3x)");
    println!("failures: {}", failures.len());
    for why in failures.iter().take(5) {
        println!("  {why}");
    }
    server.stop();
}

/// /proc/loadavg's first three fields (how busy the machine was).
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[tokio::main]
async fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".tools/python/bin/python3");
    let binary = repo.join("target/release/pyexec");
    assert!(python.exists() && binary.exists(), "run `make bench` (it builds and sets up first)");
    match std::env::args().nth(1).as_deref() {
        Some("mixed") => return mixed(&binary).await,
        None | Some("") | Some("normal") => {}
        Some(other) => panic!("unknown bench mode {other:?}: none (or normal), or mixed"),
    }
    let scratch = std::env::temp_dir().join(format!("pyexec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    for (name, script) in [("hello", HELLO), ("pandas", PANDAS)] {
        std::fs::write(scratch.join(format!("{name}.py")), format!("{script}\nprint(main())\n")).expect("write script");
    }
    let bare = Runner::Bare { python, scratch: scratch.clone() };
    let warm = Server::start(&binary, &[]).await;
    let cold = Server::start(&binary, &["--pool-max", "0"]).await;
    // Warm the page cache and both servers once, outside the measurement.
    for runner in [&bare, &warm.runner, &cold.runner] {
        for _ in 0..3 {
            runner.run("hello", HELLO).await;
            runner.run("pandas", PANDAS).await;
        }
    }

    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!("pyexec benchmark: {cpus} CPUs, server defaults (slots from memory, --cpu-per-sandbox 1, pool of ready sandboxes on with numpy,pandas preloaded); baseline = bare `python3 -I script.py` with the sandbox's thread settings");
    println!();
    println!("concurrency 1, {RUNS} runs each (warm: a ready sandbox waits and the pool is idle when the request is sent; back-to-back: no pause between requests)");
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7} {:>8}", "", "p50 ms", "p99 ms", "runs/s", "p50 x", "rate x");
    for (name, script) in [("hello", HELLO), ("pandas", PANDAS)] {
        let base = sequential(&bare, name, script, false).await;
        let hot = sequential(&warm.runner, name, script, true).await;
        let rushed = sequential(&warm.runner, name, script, false).await;
        let chilly = sequential(&cold.runner, name, script, false).await;
        row(&format!("{name} bare python"), &base, &base);
        row(&format!("{name} pyexec warm"), &hot, &base);
        row(&format!("{name} pool on, back-to-back"), &rushed, &base);
        row(&format!("{name} pyexec cold"), &chilly, &base);
    }

    if let Runner::Http { client, base } = &warm.runner {
        warm.runner.wait_until_warm().await;
        // Let the pool settle to what it keeps when idle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!();
        for kind in ["plain", "preloaded"] {
            let ready = metric(client, base, &format!("pyexec_pool_ready{{kind=\"{kind}\"}}")).await;
            let memory = metric(client, base, &format!("pyexec_pool_ready_memory_bytes{{kind=\"{kind}\"}}")).await;
            if ready > 0.0 {
                println!(
                    "idle pool, {kind}: {ready} ready sandbox(es), {:.1} MiB each (cgroup memory: the waiting interpreter, its /tmp and page cache charged to it)",
                    memory / ready / (1024.0 * 1024.0)
                );
            }
        }
    }

    println!();
    println!(
        "concurrency {CONCURRENCY}, a mix of hello and pandas alternating, sustained {} s per side",
        SUSTAIN.as_secs()
    );
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7} {:>8}", "", "p50 ms", "p99 ms", "runs/s", "p50 x", "rate x");
    let (bare_hello, bare_pandas) = sustained_mix(&bare).await;
    let (warm_hello, warm_pandas) = sustained_mix(&warm.runner).await;
    let (cold_hello, cold_pandas) = sustained_mix(&cold.runner).await;
    row("hello bare python", &bare_hello, &bare_hello);
    row("hello pyexec pool on", &warm_hello, &bare_hello);
    row("hello pyexec pool off", &cold_hello, &bare_hello);
    row("pandas bare python", &bare_pandas, &bare_pandas);
    row("pandas pyexec pool on", &warm_pandas, &bare_pandas);
    row("pandas pyexec pool off", &cold_pandas, &bare_pandas);
    if let Runner::Http { client, base } = &warm.runner {
        let hits = metric(client, base, "pyexec_pool_hits_total").await;
        let colds = metric(client, base, "pyexec_cold_starts_total").await;
        println!("(pool on, whole run: {hits} warm, {colds} cold starts)");
    }
    println!("(p50 x = p50 / bare p50; rate x = runs per second / bare runs per second)");

    warm.stop();
    cold.stop();
    let _ = std::fs::remove_dir_all(&scratch);
}
