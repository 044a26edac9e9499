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
//!   and latency of each, warm pool, cold, and bare Python; the pool's two sides run twice each,
//!   on, off, off, on, so that a machine whose speed drifts does not favour one of them;
//! - memory of the idle pool, per ready sandbox.
//!
//! `make bench MODE=mixed` (`cargo run --release --example bench -- mixed`) measures fairness
//! instead: hello alone at concurrency 1 (idle); then `CONCURRENCY` workers for `MIXED_SUSTAIN`
//! where one request in ten sleeps 10 s and the rest are hello (the same load shape with nothing
//! hostile: how much of hello's tail the concurrency itself costs); then the same with one
//! request in ten hostile (a spinner, a fork bomb or an output flood, each until its 10 s
//! timeout). It prints hello's p50/p99 in each beside idle, the hostile scripts' own cost (p99
//! under the mix over p99 beside sleepers), and counts failures (a non-200 answer, or a hello that
//! did not succeed).

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
    Http {
        client: reqwest::Client,
        base: String,
    },
    /// The same server through POST /executions and a long-poll of GET /executions/{id}?wait=.
    Submitted {
        client: reqwest::Client,
        base: String,
    },
    Bare {
        python: PathBuf,
        scratch: PathBuf,
    },
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
            Runner::Submitted { client, base } => {
                let response = client
                    .post(format!("{base}/executions"))
                    .json(&json!({"script": script}))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status().as_u16(), 202, "benchmark submission failed");
                let submitted: serde_json::Value = response.json().await.expect("JSON");
                let id = submitted["id"].as_str().expect("an id");
                let response =
                    client.get(format!("{base}/executions/{id}?wait=60")).send().await.expect("GET with wait");
                let body: serde_json::Value = response.json().await.expect("JSON");
                assert_eq!(body["response"]["outcome"], "success", "benchmark execution failed: {body}");
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
        let (Runner::Http { client, base } | Runner::Submitted { client, base }) = self else { return };
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

/// How the pool served a whole run: warm starts (those that waited for a start under way) and
/// cold starts by reason, from the server's counters.
async fn pool_summary(client: &reqwest::Client, base: &str) -> String {
    let hits = metric(client, base, "pyexec_pool_hits_total").await;
    let colds = metric(client, base, "pyexec_cold_starts_total").await;
    let mut waited = 0.0;
    let mut reasons = Vec::new();
    for kind in ["plain", "preloaded"] {
        waited += metric(client, base, &format!("pyexec_pool_waits_total{{kind=\"{kind}\",ended=\"hit\"}}")).await;
    }
    for reason in ["empty", "waited_in_vain", "unfit"] {
        let mut n = 0.0;
        for kind in ["plain", "preloaded"] {
            let line = format!("pyexec_pool_misses_total{{kind=\"{kind}\",reason=\"{reason}\"}}");
            n += metric(client, base, &line).await;
        }
        reasons.push(format!("{reason} {n}"));
    }
    format!("{hits} warm ({waited} of them after waiting for a start), {colds} cold starts ({})", reasons.join(", "))
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

/// What a sustained mix came to: each script's latencies, over `wall`.
struct Mix {
    hello: Vec<Duration>,
    pandas: Vec<Duration>,
    wall: Duration,
}

impl Mix {
    /// Two windows of the same side as one.
    fn and(mut self, other: Mix) -> Mix {
        self.hello.extend(other.hello);
        self.pandas.extend(other.pandas);
        Mix { wall: self.wall + other.wall, ..self }
    }

    fn stats(self) -> (Stats, Stats) {
        (stats(self.hello, self.wall), stats(self.pandas, self.wall))
    }
}

/// `CONCURRENCY` workers alternating hello and pandas for `SUSTAIN`.
async fn sustained_mix(runner: &Runner) -> Mix {
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
    Mix { hello, pandas, wall: started.elapsed() }
}

struct Server {
    child: Child,
    runner: Runner,
    state_dir: PathBuf,
}

impl Server {
    async fn start(binary: &Path, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let state_dir = std::env::temp_dir().join(format!("pyexec-bench-state-{port}"));
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--max-queue", "256"])
            .arg("--state-dir")
            .arg(&state_dir)
            // Each server its own cgroup parent, so that the servers' cgroups are told apart
            // when one looks (their slots never mix either way: slots carry the server's pid).
            .args(["--cgroup-parent", &format!("pyexec-bench-{port}")])
            .args(extra)
            // The server logs warnings only, unless PYEXEC_LOG asks for more (its lines go to
            // stderr: `PYEXEC_LOG=info make bench MODE=mixed 2>log` keeps each run's path and times).
            .env("PYEXEC_LOG", std::env::var("PYEXEC_LOG").unwrap_or_else(|_| "warn".into()))
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
        Server { child, runner: Runner::Http { client, base }, state_dir }
    }

    /// The same server, through executions.
    fn submitted(&self) -> Runner {
        match &self.runner {
            Runner::Http { client, base } => Runner::Submitted { client: client.clone(), base: base.clone() },
            other => other.clone(),
        }
    }

    fn stop(self) {}
}

/// Stopped with SIGTERM also when the benchmark panics, so that no server outlives it.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
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
/// What takes the hostile scripts' place in the baseline of the same shape: a script that holds
/// its worker as long, without using CPU.
const SLEEPER: (&str, &str) = ("sleeper", "import time\ndef main():\n    time.sleep(10)\n    return {}\n");
/// The sleeper's timeout: past its sleep.
const SLEEPER_TIMEOUT_SECONDS: f64 = 12.0;

/// What every tenth request of a sustained load is.
#[derive(Clone, Copy)]
enum Tenth {
    /// A spinner, a fork bomb or an output flood in turn, each until its timeout.
    Hostile,
    /// A script that sleeps as long (the same load shape, nothing hostile).
    Sleeper,
}

/// What one request of the mixed mode came to.
enum Answer {
    Hello(Duration),
    Hostile { kind: &'static str, outcome: String },
    Failed(String),
}

/// POSTs request `n`: a hello, or every `HOSTILE_EVERY`th `tenth`. A hello must answer 200 with
/// its result, any other script 200 with any outcome.
async fn mixed_request(client: &reqwest::Client, base: &str, n: usize, tenth: Tenth) -> Answer {
    let other = (n % HOSTILE_EVERY == HOSTILE_EVERY - 1).then(|| match tenth {
        Tenth::Hostile => (HOSTILE[(n / HOSTILE_EVERY) % HOSTILE.len()], HOSTILE_TIMEOUT_SECONDS),
        Tenth::Sleeper => (SLEEPER, SLEEPER_TIMEOUT_SECONDS),
    });
    let hostile = other.map(|(script, _)| script);
    let body = match other {
        Some(((_, script), timeout)) => json!({"script": script, "limits": {"timeout_seconds": timeout}}),
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

/// `CONCURRENCY` workers for `MIXED_SUSTAIN`, every `HOSTILE_EVERY`th request `tenth`: the
/// hellos' latencies, the other scripts' outcomes, and the failures.
async fn sustained_shape(client: &reqwest::Client, base: &str, tenth: Tenth) -> Shape {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, counter) = (client.clone(), base.to_string(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while started.elapsed() < MIXED_SUSTAIN {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answers.push(mixed_request(&client, &base, n, tenth).await);
            }
            answers
        }));
    }
    let mut shape = Shape { hello: Vec::new(), others: std::collections::BTreeMap::new(), failures: Vec::new() };
    for worker in workers {
        for answer in worker.await.expect("worker") {
            match answer {
                Answer::Hello(elapsed) => shape.hello.push(elapsed),
                Answer::Hostile { kind, outcome } => {
                    *shape.others.entry(format!("{kind}: {outcome}")).or_default() += 1
                }
                Answer::Failed(why) => shape.failures.push(why),
            }
        }
    }
    shape
}

/// What a sustained load came to.
struct Shape {
    hello: Vec<Duration>,
    others: std::collections::BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// The mixed mode: hello idle, then hello in a load whose every tenth request sleeps (the
/// baseline of the same shape), then in the same load with hostile scripts, on one server.
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
        match mixed_request(&client, &base, n * HOSTILE_EVERY, Tenth::Hostile).await {
            Answer::Hello(elapsed) => idle.push(elapsed),
            Answer::Failed(why) => failures.push(why),
            Answer::Hostile { .. } => unreachable!("idle runs are hello only"),
        }
    }
    let idle_wall: Duration = idle.iter().sum();
    let idle = stats(idle, idle_wall);

    let sleepers = sustained_shape(&client, &base, Tenth::Sleeper).await;
    let hostile = sustained_shape(&client, &base, Tenth::Hostile).await;
    failures.extend(sleepers.failures.iter().chain(&hostile.failures).cloned());
    let calm = stats(sleepers.hello.clone(), MIXED_SUSTAIN);
    let mixed = stats(hostile.hello.clone(), MIXED_SUSTAIN);
    println!("load average after: {}", loadavg());
    println!();
    println!(
        "hello, {IDLE_RUNS} runs alone, then concurrency {CONCURRENCY} for {} s with one request in {HOSTILE_EVERY} a 10 s sleeper (same shape, nothing hostile), then the same with one in {HOSTILE_EVERY} hostile",
        MIXED_SUSTAIN.as_secs()
    );
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7}", "", "p50 ms", "p99 ms", "runs", "p99 x");
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>6.2}x", "hello idle", ms(idle.p50), ms(idle.p99), IDLE_RUNS, 1.0);
    for (label, stats, runs) in
        [("hello beside sleepers", &calm, sleepers.hello.len()), ("hello under the mix", &mixed, hostile.hello.len())]
    {
        let times = stats.p99.as_secs_f64() / idle.p99.as_secs_f64();
        println!("{label:<28} | {:>9} {:>9} {runs:>8} | {times:>6.2}x", ms(stats.p50), ms(stats.p99));
    }
    let others: Vec<String> =
        sleepers.others.iter().chain(&hostile.others).map(|(what, count)| format!("{what} x{count}")).collect();
    println!("every tenth script (outcomes): {}", others.join(", "));
    println!(
        "(whole run: {}; p99 x = p99 / idle p99, aim <= 3x under the mix; the hostile scripts' own cost: p99 under the mix / beside sleepers = {:.2}x)",
        pool_summary(&client, &base).await,
        mixed.p99.as_secs_f64() / calm.p99.as_secs_f64()
    );
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
    println!("pyexec benchmark: {cpus} CPUs, server defaults (slots from memory, --cpu-per-sandbox 1, pool of ready sandboxes on with numpy,pandas preloaded, forked from a template per kind); baseline = bare `python3 -I script.py` with the sandbox's thread settings");
    println!();
    println!("concurrency 1, {RUNS} runs each (warm: a ready sandbox waits and the pool is idle when the request is sent; back-to-back: no pause between requests)");
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7} {:>8}", "", "p50 ms", "p99 ms", "runs/s", "p50 x", "rate x");
    for (name, script) in [("hello", HELLO), ("pandas", PANDAS)] {
        let base = sequential(&bare, name, script, false).await;
        let hot = sequential(&warm.runner, name, script, true).await;
        let polled = sequential(&warm.submitted(), name, script, true).await;
        let rushed = sequential(&warm.runner, name, script, false).await;
        let chilly = sequential(&cold.runner, name, script, false).await;
        row(&format!("{name} bare python"), &base, &base);
        row(&format!("{name} pyexec warm"), &hot, &base);
        row(&format!("{name} warm, submit + wait"), &polled, &base);
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
        let template = metric(client, base, "pyexec_pool_template_memory_bytes").await;
        if template > 0.0 {
            println!(
                "idle pool, the templates they are forked from: {:.1} MiB in all, held once (copy-on-write pages are charged to them, not to the sandboxes)",
                template / (1024.0 * 1024.0)
            );
        }
    }

    println!();
    println!(
        "concurrency {CONCURRENCY}, a mix of hello and pandas alternating, sustained {} s per window: bare once, then pool on and off twice each in the order on, off, off, on (the order cancels a steady drift of the machine's speed)",
        SUSTAIN.as_secs()
    );
    println!("{:<28} | {:>9} {:>9} {:>8} | {:>7} {:>8}", "", "p50 ms", "p99 ms", "runs/s", "p50 x", "rate x");
    let (bare_hello, bare_pandas) = sustained_mix(&bare).await.stats();
    let warm_first = sustained_mix(&warm.runner).await;
    let cold_both = sustained_mix(&cold.runner).await.and(sustained_mix(&cold.runner).await);
    let (warm_hello, warm_pandas) = warm_first.and(sustained_mix(&warm.runner).await).stats();
    let (cold_hello, cold_pandas) = cold_both.stats();
    row("hello bare python", &bare_hello, &bare_hello);
    row("hello pyexec pool on", &warm_hello, &bare_hello);
    row("hello pyexec pool off", &cold_hello, &bare_hello);
    row("pandas bare python", &bare_pandas, &bare_pandas);
    row("pandas pyexec pool on", &warm_pandas, &bare_pandas);
    row("pandas pyexec pool off", &cold_pandas, &bare_pandas);
    if let Runner::Http { client, base } = &warm.runner {
        println!("(pool on, whole run: {})", pool_summary(client, base).await);
    }
    println!("(p50 x = p50 / bare p50; rate x = runs per second / bare runs per second)");

    warm.stop();
    cold.stop();
    let _ = std::fs::remove_dir_all(&scratch);
}
