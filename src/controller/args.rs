//! Settings of `pyexec controller`, parsed once by clap (flags and environment variables).

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

use crate::sandbox::LimitSettings;

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Address of /healthz, /readyz (ready once the caches have synced) and /metrics.
    #[arg(long, env = "PYEXEC_CONTROLLER_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Namespace whose PythonExecutions are run; empty watches all namespaces.
    #[arg(long, env = "PYEXEC_WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,
    #[command(flatten)]
    pub pod: PodSettings,
    /// RuntimeClass handlers that are gVisor's: unless --without-gvisor, the controller refuses to
    /// start when the sandbox runtime class does not exist or selects another handler.
    #[arg(long, env = "PYEXEC_GVISOR_HANDLERS", value_delimiter = ',', default_value = "runsc")]
    pub gvisor_handlers: Vec<String>,
    /// Seconds a sandbox pod may take to start (scheduling, image pull) before its execution fails.
    #[arg(long, env = "PYEXEC_POD_START_TIMEOUT_SECONDS", default_value_t = 120)]
    pub pod_start_timeout_seconds: u64,
    /// Defaults and maxima of the limits; a PythonExecution asking for more than a maximum fails.
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub pool: WarmPoolSettings,
    /// For fault-injection tests only: milliseconds to wait between marking a job's delivery
    /// started and writing it, so a test can restart the controller in between. Leave at 0.
    #[arg(long, env = "PYEXEC_TEST_HAND_OVER_DELAY_MS", default_value_t = 0)]
    pub test_hand_over_delay_ms: u64,
}

/// The warm pool: sandbox pods started before executions arrive.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct WarmPoolSettings {
    /// Preloaded sandbox pods kept started ahead in the watched namespace, at the least, each
    /// waiting for one execution's job with --pool-preload-modules imported: a script that names
    /// one of those modules claims one (when its limits fit the default limits). The pool grows
    /// with demand up to --pool-max-size and shrinks back when idle. 0 turns this pool off.
    /// Needs --namespace.
    #[arg(long, env = "PYEXEC_POD_POOL_SIZE", default_value_t = 2)]
    pub pool_size: usize,
    /// Plain sandbox pods kept started ahead, at the least, each an interpreter with nothing
    /// imported: a script that names none of the preload modules claims one. They start in a
    /// fraction of a preloaded pod's CPU time and memory. When the pool of a script's kind is
    /// empty it takes the other kind; with both empty (or both sizes 0) it gets a pod created
    /// for it. 0 turns this pool off.
    #[arg(long, env = "PYEXEC_POD_POOL_PLAIN_SIZE", default_value_t = 2)]
    pub pool_plain_size: usize,
    /// The most pods of each kind a pool keeps however high the demand (never below its size):
    /// each pool aims at twice the executions of its kind that arrive while one pod starts
    /// (arrivals with a 5 s half-life, the start measured from creation to ready), and deletes
    /// ready pods above that once they have waited 30 s. Each pod holds its CPU request.
    #[arg(long, env = "PYEXEC_POD_POOL_MAX_SIZE", default_value_t = 6)]
    pub pool_max_size: usize,
    /// Seconds a ready pool pod waits for a job before it is replaced.
    #[arg(long, env = "PYEXEC_POD_POOL_IDLE_SECONDS", default_value_t = 600)]
    pub pool_idle_seconds: u64,
    /// Modules a pool pod's sandbox imports before its job arrives (comma-separated; empty for
    /// none). Pods created for one execution import nothing ahead.
    #[arg(long, env = "PYEXEC_POD_PRELOAD_MODULES", value_delimiter = ',', default_value = "numpy,pandas")]
    pub pool_preload_modules: Vec<String>,
}

impl WarmPoolSettings {
    pub fn preload(&self) -> Vec<String> {
        self.pool_preload_modules.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect()
    }
}

/// Everything about the sandbox pod that comes from configuration rather than the resource.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    /// Image of sandbox pods: Python with pandas and numpy, nsjail, and `pyexec` on PATH.
    #[arg(long, env = "PYEXEC_SANDBOX_IMAGE", default_value = "pyexec-sandbox:dev")]
    pub sandbox_image: String,
    /// imagePullPolicy of sandbox pods.
    #[arg(
        long,
        env = "PYEXEC_SANDBOX_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub sandbox_image_pull_policy: String,
    /// runtimeClassName of sandbox pods: gVisor's (checked at start-up against
    /// --gvisor-handlers), whose pods get PYEXEC_ISOLATION=gvisor. With --without-gvisor, any
    /// class or none (empty: the node's default runtime), not checked.
    #[arg(long, env = "PYEXEC_RUNTIME_CLASS", default_value = "gvisor")]
    pub runtime_class: String,
    /// Run sandbox pods without gVisor, on the node's own kernel (PYEXEC_ISOLATION=host): nsjail
    /// is then the only isolation. Without this flag the controller refuses a runtime class that
    /// is not gVisor's, and an empty one.
    #[arg(long, env = "PYEXEC_WITHOUT_GVISOR", default_value_t = false)]
    pub without_gvisor: bool,
    /// CPU limit of a sandbox pod, in millicores: the most its script may use.
    #[arg(long, env = "PYEXEC_POD_CPU_MILLICORES", default_value_t = 1000)]
    pub pod_cpu_millicores: u64,
    /// CPU request of a sandbox pod, in millicores (at most the limit): what the scheduler
    /// reserves, so that ready pool pods, which only wait, do not hold whole cores. The pools
    /// at their --pool-max-size hold 2 x that x this much of the nodes' CPU, which pods created
    /// for executions then cannot be scheduled on.
    #[arg(long, env = "PYEXEC_POD_CPU_REQUEST_MILLICORES", default_value_t = 100)]
    pub pod_cpu_request_millicores: u64,
    /// Privileges of the sandbox container: nsjail inside it needs to create namespaces.
    #[arg(long, env = "PYEXEC_SANDBOX_SECURITY", value_enum, default_value_t = DEFAULT_SANDBOX_SECURITY)]
    pub sandbox_security: SandboxSecurity,
}

/// The sandbox container's privileges: root with SYS_ADMIN, SETUID and SETGID, which nsjail
/// needs on a kernel and the supervisor needs inside gVisor (docs/gvisor.md).
pub const DEFAULT_SANDBOX_SECURITY: SandboxSecurity = SandboxSecurity::Nsjail;

/// What the sandbox container may do. nsjail builds its jail from namespaces, so the container
/// needs more than the restricted profile; gVisor (the runtime class) contains whatever it gets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxSecurity {
    /// Root in the container with only SYS_ADMIN, SETUID and SETGID, seccomp and AppArmor
    /// unconfined (their default profiles refuse unshare and mount), read-only root file system;
    /// under gVisor also allowPrivilegeEscalation: false.
    Nsjail,
    /// A privileged container: for runtimes where the capabilities above are not enough.
    Privileged,
    /// The restricted Pod Security profile (non-root, no capabilities, RuntimeDefault seccomp):
    /// for an image whose sandbox runs without nsjail namespaces, gVisor being the isolation.
    Restricted,
}
