//! A real `pyexec serve` process for integration tests: started on a free loopback port with
//! the repository's nsjail and Python environment, stopped with SIGTERM when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// How long a server may take to become ready (it starts in milliseconds; CI machines are slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a server keeps ready sandboxes. A case that must hold on the warm path and on the
/// cold one takes a `Pool` and is declared with [`pool_case!`], which makes it two tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    On,
    Off,
}

/// `pool_case!(name);` above `async fn name(pool: Pool)` runs that case twice, as the tests
/// `name::pool_on` and `name::pool_off`. The cold path's own clean-up (a cancelled cold run, its
/// leftovers) is only visible without ready sandboxes, and a warm run must contain the same.
#[macro_export]
macro_rules! pool_case {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn pool_on() {
                super::$name($crate::common::Pool::On).await
            }

            #[tokio::test]
            async fn pool_off() {
                super::$name($crate::common::Pool::Off).await
            }
        }
    };
}

pub struct Server {
    pub base: String,
    pub cgroup_parent: String,
    /// Its --state-dir: a directory of its own, removed when it is dropped, unless the test
    /// gave one (to start a second server on the same executions).
    state_dir: Option<PathBuf>,
    child: Option<Child>,
    client: reqwest::Client,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `pyexec <subcommand>` run from the repository with its nsjail and Python environment.
pub fn pyexec(subcommand: &str) -> Command {
    let repo = repo();
    let tools = repo.join(".tools");
    assert!(
        tools.join("nsjail/bin/nsjail").exists() && tools.join("python/bin/python3").exists(),
        "run `make setup` (or `make test`) first: .tools/ is missing nsjail or the Python environment"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
    command
        .arg(subcommand)
        .current_dir(&repo)
        .env("PYEXEC_NSJAIL", tools.join("nsjail/bin/nsjail"))
        .env("PYEXEC_NSJAIL_CONFIG", repo.join("nsjail.cfg"))
        .env("PYEXEC_PYTHON_ENV", tools.join("python"));
    command
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `serve` flags, with or without ready sandboxes.
    pub async fn start_in(pool: Pool, extra: &[&str]) -> Server {
        let mut flags = extra.to_vec();
        if pool == Pool::Off {
            flags.extend(["--pool-max", "0"]);
        }
        Self::start_with(&flags).await
    }

    /// Starts a server with extra `serve` flags; a secret in its environment checks that
    /// nothing of the service's environment reaches a sandbox.
    pub async fn start_with(extra: &[&str]) -> Server {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        Self::start_under(&format!("pyexec-test-{}-{n}", std::process::id()), extra).await
    }

    /// Starts a server whose run cgroups go under `cgroup_parent`, with extra `serve` flags.
    pub async fn start_under(cgroup_parent: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let cgroup_parent = cgroup_parent.to_string();
        let own_state_dir = (!extra.contains(&"--state-dir"))
            .then(|| std::env::temp_dir().join(format!("pyexec-test-state-{}-{port}", std::process::id())));
        let mut state_dir_flag = Vec::new();
        if let Some(dir) = &own_state_dir {
            state_dir_flag = vec!["--state-dir".to_string(), dir.display().to_string()];
        }
        let child = pyexec("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cgroup-parent", &cgroup_parent])
            .args(["--shutdown-grace-seconds", "5"])
            .args(&state_dir_flag)
            .args(extra)
            .env("PYEXEC_LOG", "warn")
            .env("PYEXEC_TEST_SECRET", "hunter2")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pyexec serve");
        let server = Server {
            base: format!("http://127.0.0.1:{port}"),
            cgroup_parent,
            state_dir: own_state_dir,
            child: Some(child),
            client: reqwest::Client::new(),
        };
        server.wait_until_healthy().await;
        // With the pool on, the first script of a test runs in a ready sandbox (the metrics
        // that tell are behind the token when one is required).
        let pool_off = extra.windows(2).any(|pair| pair == ["--pool-max", "0"])
            || std::env::var("PYEXEC_POOL_MAX").is_ok_and(|max| max.trim() == "0");
        if !pool_off && !extra.contains(&"--api-token-file") {
            server.wait_for_each_kind(1).await;
        }
        server
    }

    async fn wait_until_healthy(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = self.client.get(format!("{}/healthz", self.base)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy in {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id, while it runs (for reading its memory use from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a script as JSON, optionally with limits; returns (status, body).
    /// Runs `script` in a ready sandbox: waits for one of each kind, runs it, and asserts that
    /// the pool hit counter `hits` (e.g. `pyexec_pool_hits_total{kind="preloaded"}`) went up by one.
    pub async fn execute_warm(&self, script: &str, limits: Option<Value>, hits: &str) -> Value {
        self.wait_for_each_kind(1).await;
        let before = self.metric(hits).await.expect("hit counter");
        let (status, body) = self.execute(script, limits).await;
        assert_eq!(status, 200, "{body}");
        let after = self.metric(hits).await;
        assert_eq!(after, Some(before + 1.0), "the script did not run in a ready sandbox ({hits}): {body}");
        body
    }

    pub async fn execute(&self, script: &str, limits: Option<Value>) -> (u16, Value) {
        let mut body = serde_json::json!({ "script": script });
        if let Some(limits) = limits {
            body["limits"] = limits;
        }
        let response = self.client.post(self.url("/execute")).json(&body).send().await.expect("POST /execute");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    }

    /// POSTs raw bytes with a content type, exactly as given.
    pub async fn post_raw(&self, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/execute")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("POST /execute")
    }

    /// Waits until the server reports `n` executions running (from /metrics).
    pub async fn wait_for_in_flight(&self, n: usize) {
        let expected = format!("pyexec_in_flight {n}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics =
                self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
            if metrics.lines().any(|line| line == expected) {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {n} executions in flight");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a raw HTTP/1.1 request (head and the given body bytes, which may be fewer than the
    /// head declares) and returns the status and body: for checking that an oversized body is
    /// refused before it is read.
    pub fn raw_request(&self, head: &str, body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.write_all(head.as_bytes()).expect("write head");
        // The server may answer and close before all of the body is sent: that is the point.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
        (status, body)
    }

    /// Asserts the service still answers and runs scripts, and that no process is left in any of
    /// its cgroups (the server keeps a few empty ones to reuse until it stops).
    pub async fn assert_healthy_and_clean(&self) {
        let health = self.client.get(self.url("/healthz")).send().await.expect("GET /healthz");
        assert_eq!(health.status().as_u16(), 200, "service unhealthy after the case");
        let (status, body) = self.execute("def main():\n    return {'alive': True}\n", None).await;
        assert_eq!((status, &body["result"]), (200, &serde_json::json!({"alive": true})), "{body}");
        // A successful run answers as soon as its report and output are read; its jail ends and
        // its cgroup empties just after (in flight until then).
        self.wait_for_in_flight(0).await;
        // A ready sandbox being forked passes through the template's cgroup for a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !self.occupied_cgroups().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.occupied_cgroups(), Vec::<String>::new(), "processes left in the cgroups of finished runs");
    }

    /// The server's cgroups that hold a process now, except those of ready sandboxes waiting
    /// in the pool (nsjail and its interpreter, or a forked sandbox's keeper and first process,
    /// nothing else) and of the pool's template (nsjail and the template).
    pub fn occupied_cgroups(&self) -> Vec<String> {
        self.run_cgroups()
            .into_iter()
            .filter(|dir| !cgroup_pids(dir).is_empty() && !holds_a_waiting_sandbox(dir))
            .collect()
    }

    /// Waits until the pool has at least `n` ready sandboxes (from /metrics).
    pub async fn wait_for_ready(&self, n: usize) {
        self.wait_for_gauge_value("pyexec_pool_ready", n as f64).await;
    }

    /// Waits until the pool has `n` ready sandboxes of each kind (plain and preloaded).
    pub async fn wait_for_each_kind(&self, n: usize) {
        for kind in ["plain", "preloaded"] {
            self.wait_for_gauge_value(&format!("pyexec_pool_ready{{kind=\"{kind}\"}}"), n as f64).await;
        }
    }

    /// Waits until the gauge `name` (summed over its labels) is at least `value`.
    pub async fn wait_for_gauge_value(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.metric(name).await.is_some_and(|now| now >= value) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never reached {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The host pids in the server's cgroups of ready sandboxes (`ready-<pid>-<n>`).
    pub fn ready_sandbox_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .run_cgroups()
            .iter()
            .filter(|dir| Path::new(dir).file_name().is_some_and(|name| name.to_string_lossy().starts_with("ready-")))
            .flat_map(|dir| cgroup_pids(dir))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Cgroups that exist now under this server's parent (none once it has stopped).
    pub fn run_cgroups(&self) -> Vec<String> {
        let mut left = Vec::new();
        for hierarchy in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"] {
            let parent = Path::new(hierarchy).join(&self.cgroup_parent);
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        left.push(entry.path().display().to_string());
                    }
                }
            }
        }
        left
    }

    /// The text of GET /metrics.
    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.expect("GET /metrics").text().await.expect("text")
    }

    /// The value of the metric line that starts with `name ` (a counter or gauge, `name` may
    /// include its labels), if present; otherwise the sum of its labelled lines (`name{...} `),
    /// if any.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        let prefix = format!("{name} ");
        if let Some(value) = text.lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()) {
            return Some(value);
        }
        let labelled = format!("{name}{{");
        let values: Vec<f64> = text
            .lines()
            .filter(|line| line.starts_with(&labelled))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Processes whose parent is the server (nsjail, or the shell that starts it), except the
    /// ready sandboxes of the pool (their command line has the harness's `preload=`): none once
    /// every run has ended. A warm run's leftovers look like a ready sandbox here, so the cold
    /// path's cleanup is checked with the pool off (`PYEXEC_POOL_MAX=0`).
    pub fn child_processes(&self) -> Vec<u32> {
        let Some(server) = self.child.as_ref().map(Child::id) else { return Vec::new() };

        let mut children = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(server) && !is_ready_sandbox(pid) {
                children.push(pid);
            }
        }
        children
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A file holding `text`, removed when dropped (a token file, for example).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("pyexec-test-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write a temporary file");
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a process exists and has not exited (a zombie has).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// Whether a process is (the shell that starts, or the nsjail of) a ready sandbox.
fn is_ready_sandbox(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|byte| *byte == 0).any(|arg| arg.starts_with(b"preload=")))
}

/// The pids listed in a cgroup's `cgroup.procs`.
pub fn cgroup_pids(dir: &str) -> Vec<i32> {
    std::fs::read_to_string(Path::new(dir).join("cgroup.procs"))
        .map(|procs| procs.lines().filter_map(|line| line.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// A `ready-<pid>-<n>` cgroup with at most two processes: a ready sandbox (nsjail and its
/// interpreter, or a forked one's keeper and first process) starting or waiting for its job; or
/// a template's (`template-<pid>-<n>`); leftovers of a cold run would be in a `slot-<pid>-<n>`.
fn holds_a_waiting_sandbox(dir: &str) -> bool {
    let name = Path::new(dir).file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    // A template's group also holds, for a moment, the keeper of each sandbox it forks; no
    // script's process is ever in it.
    name.starts_with("template-") || (name.starts_with("ready-") && cgroup_pids(dir).len() <= 2)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
