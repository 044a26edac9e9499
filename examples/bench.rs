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

    /// For a server with a pool: waits (untimed) until a ready sandbox exists and none is
    /// being started (the pool is idle, as a caller that thinks between calls finds it).
    async fn wait_until_warm(&self) {
        let Runner::Http { client, base } = self else { return };
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(client, base, "pyexec_pool_ready").await < 1.0
            || metric(client, base, "pyexec_pool_starting").await > 0.0
        {
            assert!(Instant::now() < deadline, "the pool never refilled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    let prefix = format!("{name} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
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

    fn stop(mut self) {
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

#[tokio::main]
async fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".tools/python/bin/python3");
    let binary = repo.join("target/release/pyexec");
    assert!(python.exists() && binary.exists(), "run `make bench` (it builds and sets up first)");
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
    println!("pyexec benchmark: {cpus} CPUs, server defaults (concurrency {cpus}, pool of ready sandboxes on with numpy,pandas preloaded); baseline = bare `python3 -I script.py` with the sandbox's thread settings");
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
        let ready = metric(client, base, "pyexec_pool_ready").await;
        let memory = metric(client, base, "pyexec_pool_ready_memory_bytes").await;
        if ready > 0.0 {
            println!();
            println!(
                "idle pool: {ready} ready sandbox(es), {:.1} MiB each (cgroup memory: the preloaded interpreter, its /tmp and page cache charged to it)",
                memory / ready / (1024.0 * 1024.0)
            );
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
