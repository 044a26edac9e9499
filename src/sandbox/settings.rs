//! Settings of the sandbox: where nsjail and Python are, which cgroups to use, the limits.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::jail::cgroup::{parse_cpus, parse_seconds, CpuShare};
use super::limits::LimitSettings;

#[derive(Args, Clone, Debug)]
pub struct SandboxSettings {
    /// What the supervisor runs on: `host` (a Linux kernel: nsjail with --nsjail-config, user and
    /// network namespaces, cgroups) or `gvisor` (inside a gVisor sandbox such as a pod with the
    /// gvisor runtime class: nsjail with --nsjail-gvisor-config, started by util-linux's prlimit
    /// and setpriv as uid 65534 with CAP_SYS_ADMIN; needs root with SYS_ADMIN, SETUID and SETGID,
    /// and runsc's network set to none; no cgroups, memory is RLIMIT_AS). See
    /// docs/gvisor.md.
    #[arg(long, env = "PYEXEC_ISOLATION", value_enum, default_value_t = Isolation::Host)]
    pub isolation: Isolation,
    /// The nsjail binary (a path, or a name looked up on PATH).
    #[arg(long, env = "PYEXEC_NSJAIL", default_value = ".tools/nsjail/bin/nsjail")]
    pub nsjail: PathBuf,
    /// nsjail configuration with the settings shared by every run (see nsjail.cfg), for
    /// `--isolation host`.
    #[arg(long, env = "PYEXEC_NSJAIL_CONFIG", default_value = "nsjail.cfg")]
    pub nsjail_config: PathBuf,
    /// nsjail configuration for `--isolation gvisor` (see nsjail-gvisor.cfg): no user, network or
    /// cgroup namespace, no rlimits set by nsjail, a seccomp policy.
    #[arg(long, env = "PYEXEC_NSJAIL_GVISOR_CONFIG", default_value = "nsjail-gvisor.cfg")]
    pub nsjail_gvisor_config: PathBuf,
    /// Python environment (a virtual environment made from a system Python, with pandas and
    /// numpy) mounted read-only at /opt/pyexec inside the sandbox.
    #[arg(long, env = "PYEXEC_PYTHON_ENV", default_value = ".tools/python")]
    pub python_env: PathBuf,
    /// Which cgroups limit memory and processes: auto (v2, then v1, else rlimits), v1, v2 or off.
    /// Always off with `--isolation gvisor` (gVisor does not enforce cgroup memory limits).
    /// Without cgroups (off, or none writable, as in a container that is not privileged) memory
    /// is RLIMIT_AS, bounded per process rather than for the script's whole process tree, and
    /// processes RLIMIT_NPROC; a ready sandbox of the pool lowers both to its job's when the job
    /// arrives (a job asking for more than the pool's limits starts cold).
    #[arg(long, env = "PYEXEC_CGROUPS", value_enum, default_value_t = CgroupChoice::Auto)]
    pub cgroups: CgroupChoice,
    /// Name of the parent cgroup that per-run cgroups are created under. The run cgroups carry
    /// the server's pid, so several servers may share a parent; at start, empty run cgroups
    /// left there by servers that are gone are removed.
    #[arg(long, env = "PYEXEC_CGROUP_PARENT", default_value = "pyexec")]
    pub cgroup_parent: String,
    /// `pyexec serve` with cgroups: remount the host's cgroup2 hierarchy with the kernel's
    /// favordynmods option (Linux 6.0+) unless it has it, so that moving a new sandbox into its
    /// cgroups does not wait behind scripts that fork without pause (see docs/performance.md). It
    /// makes forks and exits a little slower everywhere on the host and lasts until the next boot;
    /// false leaves the mount alone.
    #[arg(long, env = "PYEXEC_CGROUP_FAVOR_DYNMODS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroup_favor_dynmods: bool,
    /// CPUs one sandbox may use at most (a CFS quota of its cgroup; 0 for no cap; fractions
    /// allowed). Every running sandbox also gets the same CPU weight, so the kernel shares the
    /// CPUs equally between them; ready sandboxes of the pool import at a hundredth of it. Needs
    /// the cpu controller (v1 /sys/fs/cgroup/cpu, or delegated on v2); without it, logged once.
    #[arg(long, env = "PYEXEC_CPU_PER_SANDBOX", default_value_t = 1.0, value_parser = parse_cpus)]
    pub cpu_per_sandbox: f64,
    /// CPU seconds after which a running sandbox counts as a long run and its CPU weight drops
    /// to a tenth (0: never). Long runs share the CPUs equally among themselves and take
    /// whatever is idle, but scripts that just arrived are slowed down less by those that spin
    /// until their timeout; ordinary scripts, which use less CPU, keep the full weight however
    /// long they wait. Needs the cpu controller, like --cpu-per-sandbox.
    #[arg(long, env = "PYEXEC_CPU_LONG_RUN_SECONDS", default_value_t = 0.1, value_parser = parse_seconds)]
    pub cpu_long_run_seconds: f64,
    /// Whether a long run also becomes an idle group (cpu.idle, Linux 5.15+; ignored where the
    /// kernel lacks it): it then runs only when no newer script wants the CPU, which keeps a
    /// hello's latency near idle beside scripts that spin or fork until their timeout. While
    /// newer scripts keep every CPU busy, an idle long run that waited most of the last second
    /// for the CPU and got less than 5% of one has a run's weight for the next quarter second,
    /// so it still progresses; `false` keeps just the tenth (a few percent of a busy CPU).
    #[arg(long, env = "PYEXEC_CPU_LONG_RUN_IDLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cpu_long_run_idle: bool,
    /// The first host uid (and gid) of the range sandboxes run as, with `--isolation host` and a
    /// supervisor that is root. Each sandbox has an id of its own for its whole life (the script
    /// is 65534 inside), so what the kernel counts per user (pipe buffers, file descriptors in
    /// flight, processes, queued signals) is counted per sandbox. No one else on the host may
    /// use the range; it must not hold 65534.
    #[arg(long, env = "PYEXEC_SANDBOX_ID_FIRST", default_value_t = 2_000_000_000)]
    pub sandbox_id_first: u32,
    /// How many ids the range has: at least the sandboxes that may live at once (running
    /// scripts, ready sandboxes of the pool, sandboxes still ending) of every server on the host
    /// that shares the range.
    #[arg(long, env = "PYEXEC_SANDBOX_ID_COUNT", default_value_t = 65_536)]
    pub sandbox_id_count: u32,
    /// Where the ids are leased: a directory per id in use, locked by the server whose sandbox
    /// has it and holding the id's own device nodes (null, zero, urandom) that its sandbox sees.
    /// Must allow device nodes (not a `nodev` mount), as /dev does.
    #[arg(long, env = "PYEXEC_SANDBOX_ID_DIR", default_value = "/dev/pyexec")]
    pub sandbox_id_dir: PathBuf,
    #[command(flatten)]
    pub limits: LimitSettings,
}

impl SandboxSettings {
    /// How every run's cgroup shares the CPUs.
    pub fn cpu_share(&self) -> CpuShare {
        let long_run_after =
            (self.cpu_long_run_seconds > 0.0).then(|| Duration::from_secs_f64(self.cpu_long_run_seconds));
        CpuShare { cap_cpus: self.cpu_per_sandbox, long_run_after, long_run_idle: self.cpu_long_run_idle }
    }
}

/// What the sandbox runs on, which decides how nsjail is configured and started.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// A Linux kernel (a machine, or a container under runc): nsjail.cfg.
    Host,
    /// Inside gVisor (runsc), where nsjail can make neither user nor network namespaces.
    Gvisor,
}

/// Which cgroup hierarchy `--cgroups` asks for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupChoice {
    /// v2 when the unified hierarchy has the memory and pids controllers, then v1, else rlimits.
    Auto,
    V1,
    V2,
    /// No cgroups: per-process rlimits only.
    Off,
}
