//! The images run by a container engine exactly as images/README.md tells a Docker user to run
//! them: each `docker run` command of the sandbox image, read from that README, with `docker`
//! replaced by the engine, `--detach --name` added and the published port moved to a free one
//! on loopback; then real HTTP to the container. The service image answers `--help`.
//!
//! Run only by `make container-test` (hack/container/container-test.sh), which installs podman,
//! builds both images from their Dockerfiles, gives podman this machine's configuration and
//! checks the host after these tests; `test = false` in Cargo.toml keeps `cargo test` from
//! running it.
//!   PYEXEC_CONTAINER_ENGINE   the engine's command (default podman)

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../shared/curl_examples.rs"]
mod curl_examples;

const README: &str = include_str!("../../images/README.md");
/// The sandbox image's name in the README's commands.
const SANDBOX_IMAGE: &str = "pyexec-sandbox";
const SERVICE_IMAGE: &str = "pyexec-service";
/// The service starts in well under a second; a busy CI machine may take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A script's run, a pandas import on a cold start included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn engine() -> String {
    std::env::var("PYEXEC_CONTAINER_ENGINE").unwrap_or_else(|_| "podman".into())
}

fn run_engine(args: &[&str]) -> Output {
    Command::new(engine()).args(args).output().unwrap_or_else(|e| panic!("{} {args:?}: {e}", engine()))
}

fn engine_ok(args: &[&str]) -> String {
    let output = run_engine(args);
    assert!(output.status.success(), "{} {args:?} failed: {}", engine(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The README's `docker run` commands of the sandbox image, as words, in its order.
fn documented_runs() -> Vec<Vec<String>> {
    README
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("docker run ") && line.ends_with(SANDBOX_IMAGE))
        .map(|line| line.split_whitespace().map(String::from).collect())
        .collect()
}

/// The documented command with `--privileged` in it, or without.
fn documented_run(privileged: bool) -> Vec<String> {
    let runs = documented_runs();
    assert_eq!(runs.len(), 2, "images/README.md should give two `docker run` forms of {SANDBOX_IMAGE}: {runs:?}");
    let found = runs.into_iter().find(|run| run.iter().any(|w| w == "--privileged") == privileged);
    found.unwrap_or_else(|| panic!("no documented `docker run` with privileged={privileged}"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A container started from a documented command; removed (with its writable layer) on drop.
struct Container {
    name: String,
    base: String,
    client: reqwest::Client,
}

impl Container {
    /// `documented` with only these changes: the engine for `docker`, `--detach --name <name>`
    /// after `run`, and `-p 127.0.0.1:<free port>:8080` for `-p 8080:8080`; ready.
    async fn start(documented: &[String], label: &str) -> Container {
        let container = Container::run(documented, label);
        container.wait_ready().await;
        container
    }

    /// `start` without waiting for anything.
    fn run(documented: &[String], label: &str) -> Container {
        assert_eq!(documented.get(..2), Some(&["docker".to_string(), "run".to_string()][..]), "{documented:?}");
        let name = format!("pyexec-container-test-{label}-{}", std::process::id());
        let port = free_port();
        let mut args = vec!["run".to_string(), "--detach".into(), "--name".into(), name.clone()];
        for word in &documented[2..] {
            args.push(if word == "8080:8080" { format!("127.0.0.1:{port}:8080") } else { word.clone() });
        }
        assert!(
            args.iter().any(|a| a.ends_with(":8080") && a.starts_with("127.0.0.1:")),
            "no -p 8080:8080 in {documented:?}"
        );
        eprintln!("[container-test] {} {}", engine(), args.join(" "));
        let container = Container {
            name,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client"),
        };
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        engine_ok(&words);
        container
    }

    /// Waits (with a timeout) for the first answer of /readyz: its status and body.
    async fn first_readiness(&self) -> (u16, String) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = self.client.get(format!("{}/readyz", self.base)).send().await {
                return (response.status().as_u16(), response.text().await.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = self.client.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {READY_TIMEOUT:?}; its log:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let output = run_engine(&["logs", &self.name]);
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    async fn execute(&self, script: &str, limits: Value) -> (u16, Value) {
        let body = json!({ "script": script, "limits": limits });
        let response = self
            .client
            .post(format!("{}/execute", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /execute to {}: {e}\n{}", self.name, self.logs()));
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (with a timeout) until a ready sandbox of each kind waits in the pool.
    async fn wait_for_the_pool(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for kind in ["plain", "preloaded"] {
            let gauge = format!("pyexec_pool_ready{{kind=\"{kind}\"}}");
            while self.metric(&gauge).await.unwrap_or(0.0) < 1.0 {
                assert!(Instant::now() < deadline, "no ready {kind} sandbox in {}:\n{}", self.name, self.logs());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `execute` in a ready sandbox of the plain kind: waits for one, and asserts through the
    /// pool's hit counter that the script ran in it.
    async fn execute_warm(&self, script: &str, limits: Value) -> (u16, Value) {
        self.wait_for_the_pool().await;
        let hits = "pyexec_pool_hits_total{kind=\"plain\"}";
        let before = self.metric(hits).await.unwrap_or(0.0);
        let (status, body) = self.execute(script, limits).await;
        assert_eq!(self.metric(hits).await, Some(before + 1.0), "the script did not run warm: {body}");
        (status, body)
    }

    /// The processes in the container (`<engine> top`: user and command).
    fn processes(&self) -> Vec<String> {
        let text = engine_ok(&["top", &self.name, "user", "args"]);
        text.lines().skip(1).map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
    }

    /// Stops it the way `docker stop` does (SIGTERM, then the service's graceful shutdown) and
    /// returns its exit code.
    fn stop(&self) -> i64 {
        engine_ok(&["stop", "--time", "30", &self.name]);
        let code = engine_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        code.trim().parse().unwrap_or_else(|e| panic!("exit code {code:?}: {e}"))
    }

    /// The paths its writable layer changed, added or deleted (`<engine> diff`).
    fn changed_paths(&self) -> Vec<String> {
        let text = engine_ok(&["diff", &self.name]);
        text.lines().map(str::trim).filter(|line| !line.is_empty()).map(String::from).collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run_engine(&["rm", "--force", "--time", "5", &self.name]);
    }
}

/// Everything a user of the local placement in a container relies on, in one container.
async fn the_local_placement_holds(documented: &[String], label: &str, cgroups: bool) {
    let container = Container::start(documented, label).await;
    let log = container.logs();
    assert!(log.contains("pool of ready sandboxes on"), "the pool should be on:\n{log}");
    let rlimits = log.contains("cgroups=off, rlimits only");
    assert_eq!(rlimits, !cgroups, "cgroups={cgroups} expected in this form:\n{log}");

    curl_examples::assert_the_documented_examples_answer(&container.base);

    // The pandas example, in a ready sandbox (the pool's hit counter says so).
    container.wait_for_the_pool().await;
    let hits = "pyexec_pool_hits_total{kind=\"preloaded\"}";
    let before = container.metric(hits).await.unwrap_or(0.0);
    let sum = curl_examples::run_curl(&container.base, curl_examples::PANDAS);
    assert_eq!(sum["result"], json!({"sum": 6}), "{sum}");
    assert_eq!(container.metric(hits).await, Some(before + 1.0), "the pandas example did not run warm: {sum}");

    let (status, body) = container.execute("def not_main():\n    return {}", json!({})).await;
    assert_eq!((status, body), (400, json!({"error": "Script must contain a 'main()' function."})));

    // No network from a script: the container has one (it answers on a published port), the
    // jail only its own loopback, left down. Nothing outside is contacted: the addresses are the
    // container's own gateway and the documentation range (RFC 5737).
    let network = r#"
import socket
def main():
    out = {}
    for name, target in [("gateway", ("10.0.2.2", 8080)), ("outside", ("192.0.2.1", 80))]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(target)
            out[name] = "connected"
        except OSError as e:
            out[name] = e.errno
        finally:
            s.close()
    try:
        socket.getaddrinfo("deb.debian.org", 80)
        out["dns"] = "resolved"
    except OSError as e:
        out["dns"] = "failed"
    names = []
    for index in range(1, 256):
        try:
            names.append(socket.if_indextoname(index))
        except OSError:
            pass
    out["interfaces"] = sorted(names)
    return out
"#;
    let (status, body) = container.execute(network, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // 101: ENETUNREACH.
    assert_eq!(body["result"], json!({"gateway": 101, "outside": 101, "dns": "failed", "interfaces": ["lo"]}));

    // The limits, each with its own clear error, in ready sandboxes: without cgroups (the
    // unprivileged form) their harness lowered its rlimits to the job's first.
    let memory_bomb = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))";
    let (status, body) = container.execute_warm(memory_bomb, json!({"memory_mb": 256})).await;
    assert_eq!((status, &body["outcome"]), (200, &json!("memory_limit")), "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Memory limit of 256 MiB exceeded"), "{body}");

    let fork_bomb =
        "import os, time\ndef main():\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)";
    let (status, body) = container.execute_warm(fork_bomb, json!({"max_pids": 16})).await;
    assert_eq!((status, &body["outcome"]), (200, &json!("exception")), "{body}");
    assert_eq!(body["error"], "BlockingIOError: [Errno 11] Resource temporarily unavailable");

    let forever = "def main():\n    while True:\n        pass";
    let (status, body) = container.execute_warm(forever, json!({"timeout_seconds": 2})).await;
    assert_eq!((status, &body["outcome"]), (200, &json!("timeout")), "{body}");
    assert_eq!(body["error"], "Execution timed out after 2 s (wall-clock limit)");

    // A cold start too: a ready sandbox's /tmp has its size from its start.
    let cold_starts = container.metric("pyexec_cold_starts_total").await.unwrap_or(0.0);
    let (status, body) = container.execute("def main():\n    return {'cold': True}", json!({"tmp_mb": 32})).await;
    assert_eq!((status, &body["result"]), (200, &json!({"cold": true})), "{body}");
    assert_eq!(container.metric("pyexec_cold_starts_total").await, Some(cold_starts + 1.0), "{body}");

    // Nothing of the runs is left in the container: only the service and its ready sandboxes
    // run (nsjail and the interpreters of the pool, as 65534), and no script's process.
    let processes = container.processes();
    assert!(processes.iter().any(|p| p.contains("pyexec serve")), "{processes:?}");
    let strays: Vec<&String> = processes
        .iter()
        .filter(|p| !(p.contains("pyexec serve") || p.contains("nsjail") || p.contains("/opt/pyexec/bin/python")))
        .collect();
    assert!(strays.is_empty(), "processes besides the service and its ready sandboxes: {strays:?}");
    assert!(!processes.iter().any(|p| p.contains("sleep") || p.contains("bytearray")), "{processes:?}");

    // A graceful stop: exit 0, and the container's own layer holds only the executions store,
    // nsjail's two work directories (mount points it reuses, named after its uid) and the
    // engine's files in /etc (hosts, hostname, resolv.conf).
    assert_eq!(container.stop(), 0, "exit code of a stopped service:\n{}", container.logs());
    let log = container.logs();
    assert!(!log.contains("could not be forked"), "a ready sandbox could not be forked from its template:\n{log}");
    let expected = |line: &str| {
        ["C /etc", "C /tmp", "C /var", "C /var/lib", "C /var/lib/pyexec"].contains(&line)
            || line.starts_with("A /var/lib/pyexec/executions.sqlite3")
            || ["root", "tmp"]
                .iter()
                .any(|dir| line.starts_with("A /tmp/nsjail.") && line.ends_with(&format!(".{dir}")))
    };
    let changed: Vec<String> = container.changed_paths().into_iter().filter(|line| !expected(line)).collect();
    assert_eq!(changed, Vec::<String>::new(), "files the runs left in the container");
}

#[tokio::test]
async fn the_unprivileged_form_serves_the_documented_examples_with_its_pool_and_limits() {
    the_local_placement_holds(&documented_run(false), "unprivileged", false).await;
}

#[tokio::test]
async fn the_privileged_form_serves_the_documented_examples_with_its_pool_and_cgroup_limits() {
    the_local_placement_holds(&documented_run(true), "privileged", true).await;
}

#[tokio::test]
async fn a_plain_run_with_the_engines_default_profiles_is_not_ready() {
    // What the README warns of: the default seccomp profile refuses nsjail's namespaces.
    let plain: Vec<String> = ["docker", "run", "-p", "8080:8080", SANDBOX_IMAGE].map(String::from).to_vec();
    let container = Container::run(&plain, "plain");
    let (status, body) = container.first_readiness().await;
    assert_eq!(status, 503, "{body}");
    // /readyz runs a trivial script: nsjail could not make its namespaces.
    assert!(body.contains("Not ready: a trivial script"), "{body}");
}

#[test]
fn the_service_image_answers_help() {
    let help = engine_ok(&["run", "--rm", SERVICE_IMAGE, "pyexec", "--help"]);
    for subcommand in ["serve", "controller", "sandbox"] {
        assert!(help.contains(subcommand), "no {subcommand} in `pyexec --help`:\n{help}");
    }
    let serve = engine_ok(&["run", "--rm", SERVICE_IMAGE, "pyexec", "serve", "--help"]);
    assert!(serve.contains("--executor"), "{serve}");
    let user = engine_ok(&["image", "inspect", "--format", "{{.Config.User}}", SERVICE_IMAGE]);
    assert_eq!(user.trim(), "65532:65532");
}
