//! `make bench`: end-to-end HTTP latency and throughput of pyexec beside the same scripts run
//! as bare `python3 script.py` (the sandbox's own interpreter and packages), in one process,
//! on the same machine, with the ratio. Numbers, not assertions: this is not a test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const HELLO: &str = "def main():\n    return {'message': 'Hello World'}\n";
const PANDAS: &str = "def main():\n    import pandas as pd\n    import numpy as np\n    data = {\"A\": [1, 2, 3], \"B\": [4, 5, 6]}\n    df = pd.DataFrame(data)\n    return {\"sum\": int(np.sum(df[\"A\"]))}\n";

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
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.5), p99: at(0.99), per_second: samples.len() as f64 / wall.as_secs_f64() }
}

/// Runs `total` calls of `call`, `concurrency` at a time; returns per-call latency and wall time.
async fn measure<F, Fut>(total: usize, concurrency: usize, call: F) -> Stats
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                let t = Instant::now();
                call().await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.expect("worker"));
    }
    stats(samples, started.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".tools/python/bin/python3");
    let binary = repo.join("target/release/pyexec");
    assert!(python.exists() && binary.exists(), "run `make bench` (it builds and sets up first)");

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let mut server = Command::new(&binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--max-queue", "256"])
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

    let scratch = std::env::temp_dir().join(format!("pyexec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!("pyexec benchmark: {cpus} CPUs, server concurrency {cpus} (default), baseline = bare `python3 -I script.py` with the sandbox's thread settings");
    println!(
        "{:<7} {:>4} {:>6} | {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} | {:>7}",
        "script", "conc", "runs", "http p50", "http p99", "req/s", "bare p50", "bare p99", "runs/s", "p50 x"
    );
    for (name, script, runs) in [("hello", HELLO, 200usize), ("pandas", PANDAS, 40)] {
        let file = scratch.join(format!("{name}.py"));
        std::fs::write(&file, format!("{script}\nprint(main())\n")).expect("write script");
        // Warm the page cache and the server once, outside the measurement.
        for _ in 0..3 {
            let _ = client.post(format!("{base}/execute")).json(&json!({"script": script})).send().await;
            let _ = Command::new(&python).arg("-I").arg(&file).stdout(Stdio::null()).status();
        }
        for concurrency in [1usize, 8] {
            let total = if concurrency == 1 { runs } else { runs * 2 };
            let (c, url, body) = (client.clone(), format!("{base}/execute"), json!({"script": script}));
            let http = measure(total, concurrency, move || {
                let (c, url, body) = (c.clone(), url.clone(), body.clone());
                async move {
                    let response = c.post(url).json(&body).send().await.expect("POST");
                    assert_eq!(response.status().as_u16(), 200, "benchmark request failed");
                    let _ = response.bytes().await;
                }
            })
            .await;
            let (python, file) = (python.clone(), file.clone());
            let bare = measure(total, concurrency, move || {
                let (python, file) = (python.clone(), file.clone());
                async move {
                    let status = tokio::process::Command::new(python)
                        .arg("-I")
                        .arg(file)
                        .envs(SANDBOX_ENV.iter().copied())
                        .stdout(Stdio::null())
                        .status()
                        .await;
                    assert!(status.is_ok_and(|s| s.success()), "bare python failed");
                }
            })
            .await;
            println!(
                "{:<7} {:>4} {:>6} | {:>9} {:>9} {:>7.1} | {:>9} {:>9} {:>7.1} | {:>6.2}x",
                name,
                concurrency,
                total,
                ms(http.p50),
                ms(http.p99),
                http.per_second,
                ms(bare.p50),
                ms(bare.p99),
                bare.per_second,
                http.p50.as_secs_f64() / bare.p50.as_secs_f64()
            );
        }
    }
    println!("(latencies in ms; `p50 x` = pyexec p50 / bare p50)");
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let _ = server.wait();
}
