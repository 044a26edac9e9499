//! The command line: every setting, with its environment variable and default, parsed once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::controller::ControllerArgs;
use crate::executor::kube::KubeSettings;
pub use crate::mcp::McpArgs;
use crate::sandbox::files::InputFileSettings;
use crate::sandbox::warm::pool::PreloadSettings;
use crate::sandbox::SandboxSettings;

#[derive(Parser, Debug)]
#[command(
    name = "pyexec",
    version,
    about = "Runs untrusted Python scripts in a sandbox and returns what main() returned"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogSettings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (POST /execute).
    Serve(Box<ServeArgs>),
    /// Run one script in the sandbox and print its envelope as JSON (the sandbox pod's entrypoint).
    Sandbox(SandboxArgs),
    /// Run PythonExecution resources in sandbox pods (the Kubernetes controller).
    Controller(ControllerArgs),
    /// Print the PythonExecution CustomResourceDefinition as YAML.
    Crd,
    /// Serve the run_python tool over MCP on stdin and stdout, running each call through a pyexec
    /// service's POST /execute (the service itself serves the same tool at /mcp).
    Mcp(McpArgs),
    /// Print a reference page generated from the code (`make docs` writes them into docs/).
    #[command(hide = true, subcommand)]
    Docs(Reference),
}

/// The reference pages generated from the code.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// docs/configuration.md: every setting of every command, from the command line's definition.
    Configuration,
    /// docs/metrics.md: every metric of the service and the controller, from their declarations.
    Metrics,
    /// docs/openapi.json: the OpenAPI document `GET /openapi.json` serves, from the API's types.
    Openapi,
}

#[derive(Args, Debug, Clone)]
pub struct LogSettings {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "PYEXEC_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. "info" or "pyexec=debug".
    #[arg(long, env = "PYEXEC_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Run scripts in nsjail on this machine.
    Local,
    /// Create PythonExecution resources in a Kubernetes cluster.
    Kubernetes,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. On a loopback address only loopback Host names are answered (a guard
    /// against DNS rebinding); beyond loopback, set --api-token-file.
    #[arg(long, env = "PYEXEC_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding a bearer token every route but /healthz and /readyz then requires
    /// (`Authorization: Bearer <token>`); read once at start-up, one trailing newline ignored.
    #[arg(long, env = "PYEXEC_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Origins (scheme://host[:port], comma-separated) whose browser pages may call the API;
    /// requests with any other Origin header get 403. None by default.
    #[arg(long, env = "PYEXEC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Where scripts run.
    #[arg(long, env = "PYEXEC_EXECUTOR", value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Sandboxes running at once. Default (local placement): as many as memory and processes
    /// allow, each run counted at the default --memory-mb and --max-pids: the memory available
    /// (MemAvailable, or the service's own cgroup limit if lower) divided by --memory-mb, and the
    /// process limit (kernel.pid_max, kernel.threads-max, the service's pids.max) divided by
    /// --max-pids + 1, whichever is smaller. The kernel shares the CPUs between them
    /// (--cpu-per-sandbox). Kubernetes placement: executions in flight (default 256).
    #[arg(long, env = "PYEXEC_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Executions allowed to wait for a free sandbox; past it requests get 429.
    #[arg(long, env = "PYEXEC_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Refuse a request at once (429 with Retry-After) when the executions already waiting
    /// would keep it from starting within this many times its timeout, instead of queueing it
    /// until its caller gives up; 0 turns this off (the queue's length alone refuses). Local
    /// placement: estimated from the queue, the run slots and how long recent runs held a slot.
    /// Kubernetes placement: from the executions waiting for a pod and how fast the cluster
    /// finished executions while some waited (judged after 3 s of such waiting). POST /execute
    /// and POST /executions.
    #[arg(long, env = "PYEXEC_OVERLOAD_WAIT_FACTOR", default_value_t = 1.0, value_parser = non_negative)]
    pub overload_wait_factor: f64,
    /// Largest request body, in bytes (413 past it): room for the largest script and, as
    /// base64, the most input files a request may send (--max-input-files-bytes).
    #[arg(long, env = "PYEXEC_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,
    /// Largest script, in bytes (413 past it).
    #[arg(long, env = "PYEXEC_MAX_SCRIPT_BYTES", default_value_t = 1 << 20)]
    pub max_script_bytes: usize,
    /// Refuse bodies that are not valid JSON, instead of reading the unescaped `{"script": "…"}`
    /// bodies of the Python Code Execution Service's documented examples with a warning.
    #[arg(long, env = "PYEXEC_STRICT_JSON", default_value_t = false)]
    pub strict_json: bool,
    /// Seconds in-flight executions get to finish after SIGTERM or Ctrl-C before they are killed.
    #[arg(long, env = "PYEXEC_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    #[command(flatten)]
    pub input_files: InputFileSettings,
    #[command(flatten)]
    pub sandbox: SandboxSettings,
    #[command(flatten)]
    pub pool: crate::sandbox::warm::pool::PoolSettings,
    /// Settings of the kubernetes executor.
    #[command(flatten)]
    pub kube: KubeSettings,
    #[command(flatten)]
    pub executions: crate::executions::ExecutionsSettings,
}

#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// The script itself, run under the default limits; when set, --script-file is ignored.
    #[arg(long, env = "PYEXEC_SCRIPT", hide_env_values = true)]
    pub script: Option<String>,
    /// File holding the script; "-" reads it from stdin.
    #[arg(long, env = "PYEXEC_SCRIPT_FILE", default_value = "-")]
    pub script_file: PathBuf,
    /// Where to write a one-line summary when the run ends (Kubernetes' termination message).
    #[arg(long, env = "PYEXEC_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// Wait for the job on stdin, how a sandbox pod started ahead gets its work: prepare one
    /// ready sandbox (--preload-modules imported, the default limits), write the line
    /// "pyexec-sandbox: ready for one job" to stderr, read stdin to its end, run the one job
    /// document it holds and print the envelope. No byte on stdin: exit code 3, no envelope; not
    /// a job: exit code 4 and a sandbox_failure envelope. --script and --script-file are then
    /// ignored.
    #[arg(long, env = "PYEXEC_JOB_ON_STDIN", default_value_t = false)]
    pub job_on_stdin: bool,
    #[command(flatten)]
    pub preload: PreloadSettings,
    #[command(flatten)]
    pub sandbox: SandboxSettings,
}

/// A number that is 0 or more.
fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!("{text:?} is not a number of 0 or more")),
    }
}

/// Any group of settings with every default, as a command given no flags has it: the one clap
/// fixture of the unit tests.
#[cfg(test)]
pub(crate) fn defaults<T: Args>() -> T {
    #[derive(Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        settings: T,
    }
    Only::<T>::parse_from(["test"]).settings
}
