//! Settings of the sandbox: where nsjail and Python are, which cgroups to use, the limits.

use std::path::PathBuf;

use clap::Args;

use super::limits::LimitSettings;

#[derive(Args, Clone, Debug)]
pub struct SandboxSettings {
    /// The nsjail binary (a path, or a name looked up on PATH).
    #[arg(long, env = "PYEXEC_NSJAIL", default_value = ".tools/nsjail/bin/nsjail")]
    pub nsjail: PathBuf,
    /// nsjail configuration with the settings shared by every run (see nsjail.cfg).
    #[arg(long, env = "PYEXEC_NSJAIL_CONFIG", default_value = "nsjail.cfg")]
    pub nsjail_config: PathBuf,
    /// Python environment (a virtual environment made from a system Python, with pandas and
    /// numpy) mounted read-only at /opt/pyexec inside the sandbox.
    #[arg(long, env = "PYEXEC_PYTHON_ENV", default_value = ".tools/python")]
    pub python_env: PathBuf,
    /// Which cgroups limit memory and processes: auto (v2, then v1, else rlimits), v1, v2 or off.
    #[arg(long, env = "PYEXEC_CGROUPS", default_value = "auto", value_parser = ["auto", "v1", "v2", "off"])]
    pub cgroups: String,
    /// Name of the parent cgroup that per-run cgroups are created under.
    #[arg(long, env = "PYEXEC_CGROUP_PARENT", default_value = "pyexec")]
    pub cgroup_parent: String,
    #[command(flatten)]
    pub limits: LimitSettings,
}
