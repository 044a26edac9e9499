//! The nsjail command line for one run (a pure function of the configuration and the limits),
//! and the reading of nsjail's log for how the jailed process ended.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::gvisor::GvisorTools;
use super::ids;
use crate::sandbox::limits::Limits;

/// Where the Python environment (interpreter symlink, pandas, numpy) appears inside the jail.
pub const PYTHON_ENV_IN_JAIL: &str = "/opt/pyexec";
/// The fd the harness writes its report to inside the jail.
pub const RESULT_FD: i32 = 3;
/// The fd nsjail writes its own log to, kept apart from the script's stderr.
pub const LOG_FD: i32 = 4;
/// The fd of the pool's template on which it is asked to fork (`Start::Template`).
pub const CONTROL_FD: i32 = 5;
/// The fd nsjail reads the template jail's configuration from (derived from nsjail.cfg at
/// start-up, `template::template_config`; never written to a file).
pub const TEMPLATE_CONFIG_FD: i32 = 6;
/// Where the template jail's /proc is mounted (the harness's `_TEMPLATE_PROC`).
pub const TEMPLATE_PROC: &str = "/tmp/.proc";
/// Where the template jail sees the device nodes of every sandbox id (the harness's
/// `_TEMPLATE_IDS`), inside its /tmp like its /proc.
pub const TEMPLATE_IDS: &str = "/tmp/.ids";
/// The fd on which nsjail holds its sandbox's id lease (never passed into the jail).
pub const LEASE_FD: i32 = 7;

/// The harness, embedded so the binary needs no file beside it: one program, its parts in the
/// order that each defines what the later ones use (`harness/common.py` says which does what).
pub const HARNESS: &str = concat!(
    include_str!("../harness/common.py"),
    include_str!("../harness/ready.py"),
    include_str!("../harness/template.py"),
    include_str!("../harness/files.py"),
    include_str!("../harness/run.py"),
);

/// Loads the harness's byte code from the last argument: compiling the harness in every run
/// would cost about 1.5 ms of a 20 ms hello world.
const LOAD_COMPILED: &str = "import sys,marshal;exec(marshal.loads(bytes.fromhex(sys.argv.pop())))";

/// How the harness reaches the jailed interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Harness {
    /// As source, compiled by every run.
    Source,
    /// As byte code (marshal, hex), compiled once at start-up by the same interpreter.
    Compiled(String),
}

impl Harness {
    /// The interpreter's arguments after the flags:
    /// `-c <program> RESULT_FD [out=<bytes> | preload=<modules> [lower=<rlimits>]] [byte code]`
    /// (a cold run's cap on output files; a ready one's comes with its job).
    fn program_args(&self, start: &Start, cgroups: CgroupLimits, limits: &Limits) -> Vec<String> {
        let mut args = match self {
            Harness::Source => vec!["-c".into(), HARNESS.into(), RESULT_FD.to_string()],
            Harness::Compiled(_) => vec!["-c".into(), LOAD_COMPILED.into(), RESULT_FD.to_string()],
        };
        if let Start::Cold = start {
            args.push(format!("out={}", limits.output_files_bytes));
        }
        if let Start::Ready { preload, .. } | Start::Template { preload, .. } = start {
            args.push(format!("preload={}", preload.join(",")));
            let lowered = lowered_by_harness(cgroups);
            if !lowered.is_empty() {
                args.push(format!("lower={}", lowered.join(",")));
            }
        }
        if let Start::Template { filter_hex, .. } = start {
            args.push(format!("template={CONTROL_FD}"));
            args.push(format!("filter={filter_hex}"));
        }
        if let Harness::Compiled(hex) = self {
            args.push(hex.clone());
        }
        args
    }
}

/// The rlimits a ready jail's harness lowers to its job's when the job arrives, besides CPU,
/// file size and open files (always its own): memory (`as`, RLIMIT_AS) when no cgroup holds
/// it, as inside gVisor, and processes (`nproc`, RLIMIT_NPROC) always (see `nsjail_args`).
/// Without cgroups the jail starts with the ready limits' values as their ceiling
/// (`ready::within_rlimits`).
pub fn lowered_by_harness(cgroups: CgroupLimits) -> Vec<&'static str> {
    let mut lowered = Vec::new();
    if !cgroups.memory {
        lowered.push("as");
    }
    lowered.push("nproc");
    lowered
}

/// How a jail starts: with its script (the cold path), or ready, waiting for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The script comes on stdin at once; nsjail applies the run's limits.
    Cold,
    /// The harness imports `preload`, reports ready, then waits for one `Job` (JSON) on stdin
    /// and lowers its own CPU, file-size and open-file rlimits to the job's (and memory and
    /// processes without cgroups, `lowered_by_harness`); nsjail starts it with the host's hard
    /// limits for those. `backstop_seconds` is nsjail's own time limit.
    Ready { preload: Vec<String>, backstop_seconds: u64 },
    /// The pool's template: the harness imports `preload` once and forks ready sandboxes when
    /// asked on `CONTROL_FD`; each forked sandbox installs `filter_hex` (template::filter) and
    /// then behaves as `Ready`. nsjail reads its configuration from `TEMPLATE_CONFIG_FD`, mounts
    /// a /proc at `TEMPLATE_PROC` and sets no time limit (the template lives as long as the pool).
    Template { preload: Vec<String>, filter_hex: String },
}

impl Start {
    /// Whether the harness waits for its job (or forks sandboxes that do): the CPU, file-size
    /// and open-file limits are then its job's, applied by the harness when the job arrives.
    fn waits_for_job(&self) -> bool {
        !matches!(self, Start::Cold)
    }
}

/// What nsjail needs from the installation, fixed for the process's lifetime.
#[derive(Clone, Debug)]
pub struct JailPaths {
    pub nsjail: PathBuf,
    pub config: PathBuf,
    /// Host path of the Python environment (a venv made from the system Python).
    pub python_env: PathBuf,
    pub harness: Harness,
    /// Inside gVisor: the tools that set the rlimits and start nsjail as 65534, since nsjail
    /// cannot (its configuration has `disable_rl`).
    pub gvisor: Option<GvisorTools>,
}

/// Who the jailed process is on the host, and whose device nodes it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Its own host uid and gid (a lease, `ids`), and that id's device nodes in `devices`.
    Leased { id: u32, devices: PathBuf },
    /// The supervisor's own uid and gid and the host's device nodes: a supervisor that is not
    /// root can map no other id.
    Own { uid: u32, gid: u32 },
    /// The pool's template: host 65534 itself, with `count` ids from `first` mapped as they
    /// are, for each forked sandbox's keeper to switch to its lease (CAP_SETUID and CAP_SETGID
    /// kept for that), and every id's device nodes (`devices`) at `TEMPLATE_IDS`.
    Template { first: u32, count: u32, devices: PathBuf },
    /// As the configuration says (inside gVisor).
    Configured,
}

impl Identity {
    /// nsjail's arguments for it: the id maps, capabilities and the device binds.
    fn args(&self) -> Vec<String> {
        let nobody = ids::ID_IN_SANDBOX;
        let host_devices = || devices_from(Path::new("/dev"));
        match self {
            Identity::Leased { id, devices } => {
                let mut args = ids::id_map_args(*id).to_vec();
                args.extend(devices_from(devices));
                args
            }
            Identity::Own { uid, gid } => {
                let mut args =
                    vec!["--user".into(), format!("{nobody}:{uid}:1"), "--group".into(), format!("{nobody}:{gid}:1")];
                args.extend(host_devices());
                args
            }
            Identity::Template { first, count, .. } => {
                let mut args = Vec::new();
                for flag in ["--user", "--group"] {
                    args.extend([
                        flag.into(),
                        format!("{nobody}:{nobody}:1"),
                        flag.into(),
                        format!("{first}:{first}:{count}"),
                    ]);
                }
                args.extend(["--cap".into(), "CAP_SETUID".into(), "--cap".into(), "CAP_SETGID".into()]);
                args.extend(host_devices());
                args
            }
            Identity::Configured => Vec::new(),
        }
    }
}

/// Read-only binds of the device nodes in `dir` at /dev/null, /dev/zero, /dev/urandom and
/// /dev/random: writes to a device work on a read-only mount, changes to its inode do not.
fn devices_from(dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for (name, target) in [("null", "null"), ("zero", "zero"), ("urandom", "urandom"), ("urandom", "random")] {
        args.push("--bindmount_ro".into());
        args.push(format!("{}:/dev/{target}", path_str(&dir.join(name))));
    }
    args
}

/// Which limits the kernel enforces through cgroups; the rest become rlimits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory: bool,
    pub pids: bool,
}

/// nsjail's arguments for one run (without the program name).
pub fn nsjail_args(
    paths: &JailPaths,
    limits: &Limits,
    cgroups: CgroupLimits,
    start: &Start,
    identity: &Identity,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::with_capacity(48);
    args.push("--config".into());
    args.push(match start {
        Start::Template { .. } => format!("/proc/self/fd/{TEMPLATE_CONFIG_FD}").into(),
        _ => paths.config.clone().into_os_string(),
    });
    let mut push = |a: String| args.push(OsString::from(a));
    push("--log_fd".into());
    push(LOG_FD.to_string());
    // nsjail's own limit is a backstop; the supervisor kills at the exact deadline first.
    push("--time_limit".into());
    match start {
        Start::Cold => push((limits.timeout_ms.div_ceil(1000) + 1).to_string()),
        Start::Ready { backstop_seconds, .. } => push(backstop_seconds.to_string()),
        Start::Template { .. } => push("0".into()),
    }
    if paths.gvisor.is_none() {
        // A ready jail lowers these itself when its job arrives (the harness, before any user
        // code): CPU counts from then, and the limits are the job's, not known at start.
        let ready = start.waits_for_job();
        push("--rlimit_cpu".into());
        push(if ready { "inf".into() } else { limits.cpu_seconds.to_string() });
        push("--rlimit_fsize".into());
        push(if ready { "inf".into() } else { limits.file_size_mb.to_string() });
        push("--rlimit_nofile".into());
        push(if ready { "hard".into() } else { limits.open_files.to_string() });
        push("--rlimit_as".into());
        push(if cgroups.memory { "hard".into() } else { limits.memory_mb.to_string() });
        // RLIMIT_NPROC as well as the cgroup's pids.max: the kernel counts it per user
        // namespace (Linux 5.14+), so per sandbox, and checks it before it copies the address
        // space, where pids.max is checked after: a fork bomb at its limit then fails each
        // fork cheaply instead of copying and freeing a whole interpreter's page tables each
        // time (half the CPUs in kernel time under the mixed benchmark). A ready jail with
        // cgroups starts unbounded here (the cgroup holds it) and its harness lowers it to the
        // job's; pids.max stays the bound of the whole tree.
        push("--rlimit_nproc".into());
        push(if ready && cgroups.pids { "hard".into() } else { limits.max_pids.to_string() });
    }
    for arg in identity.args() {
        push(arg);
    }
    push("--mount".into());
    push(format!("none:/tmp:tmpfs:size={},mode=1777", limits.tmp_mb * 1024 * 1024));
    push("--bindmount_ro".into());
    push(format!("{}:{}", path_str(&paths.python_env), PYTHON_ENV_IN_JAIL));
    push("--pass_fd".into());
    push(RESULT_FD.to_string());
    if let Start::Template { .. } = start {
        push("--pass_fd".into());
        push(CONTROL_FD.to_string());
        // Its own /proc (to write each forked sandbox's uid and gid maps), inside its /tmp: a
        // forked sandbox mounts its own /tmp over both, and no /proc appears in any root.
        push("--mount".into());
        push(format!("none:{TEMPLATE_PROC}:proc:rw"));
        if let Identity::Template { devices, .. } = identity {
            push("--bindmount_ro".into());
            push(format!("{}:{TEMPLATE_IDS}", path_str(devices)));
        }
    }
    push("--".into());
    push(format!("{PYTHON_ENV_IN_JAIL}/bin/python3"));
    // -I: ignore PYTHON* variables and the user site; -S: skip the site module (the harness
    // adds the environment's packages itself, 4 ms sooner); -B: write no .pyc files.
    push("-I".into());
    push("-S".into());
    push("-B".into());
    for arg in paths.harness.program_args(start, cgroups, limits) {
        push(arg);
    }
    args
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// How the jailed process ended, as nsjail logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    Exited(i32),
    Signaled(i32),
}

/// Reads nsjail's final status line: `pid=N (...) exited with status: C, ...` or
/// `pid=N (...) terminated with signal: NAME (S), ...`.
pub fn parse_child_status(log: &str) -> Option<ChildStatus> {
    log.lines().rev().find_map(|line| {
        if let Some(rest) = after(line, "exited with status: ") {
            return leading_number(rest).map(ChildStatus::Exited);
        }
        if let Some(rest) = after(line, "terminated with signal: ") {
            let open = rest.find('(')?;
            return leading_number(&rest[open + 1..]).map(ChildStatus::Signaled);
        }
        None
    })
}

/// nsjail's own warnings and errors, for the service log (never sent to the caller).
pub fn problems(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.starts_with("[E]") || line.starts_with("[F]") || line.starts_with("[W]")).collect()
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

fn leading_number(text: &str) -> Option<i32> {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        crate::sandbox::limits::testing::small_limits()
    }

    fn paths() -> JailPaths {
        JailPaths {
            nsjail: "/x/nsjail".into(),
            config: "/x/nsjail.cfg".into(),
            python_env: "/x/venv".into(),
            harness: Harness::Compiled("00ff".into()),
            gvisor: None,
        }
    }

    const WITH_CGROUPS: CgroupLimits = CgroupLimits { memory: true, pids: true };
    const WITHOUT_CGROUPS: CgroupLimits = CgroupLimits { memory: false, pids: false };

    /// nsjail's arguments for `start` with the test paths and limits, as the configuration says.
    fn args_for(start: &Start, cgroups: CgroupLimits) -> Vec<OsString> {
        nsjail_args(&paths(), &limits(), cgroups, start, &Identity::Configured)
    }

    fn value_after(args: &[OsString], flag: &str) -> String {
        let at = args.iter().position(|a| a == flag).expect(flag);
        args[at + 1].to_string_lossy().into_owned()
    }

    #[test]
    fn cgroups_replace_the_memory_and_process_rlimits() {
        let with = args_for(&Start::Cold, WITH_CGROUPS);
        assert_eq!(value_after(&with, "--rlimit_as"), "hard");
        // Processes are limited by both: RLIMIT_NPROC fails a fork before the address space
        // is copied.
        assert_eq!(value_after(&with, "--rlimit_nproc"), "32");
        let without = args_for(&Start::Cold, WITHOUT_CGROUPS);
        assert_eq!(value_after(&without, "--rlimit_as"), "256");
        assert_eq!(value_after(&without, "--rlimit_nproc"), "32");
    }

    #[test]
    fn per_run_limits_reach_nsjail() {
        let args = args_for(&Start::Cold, WITH_CGROUPS);
        assert_eq!(value_after(&args, "--time_limit"), "4");
        assert_eq!(value_after(&args, "--rlimit_cpu"), "5");
        assert_eq!(value_after(&args, "--mount"), "none:/tmp:tmpfs:size=8388608,mode=1777");
        assert_eq!(value_after(&args, "--bindmount_ro"), "/x/venv:/opt/pyexec");
        assert_eq!(value_after(&args, "--pass_fd"), "3");
    }

    #[test]
    fn the_python_environment_is_never_mounted_at_its_host_path() {
        let args = args_for(&Start::Cold, WITH_CGROUPS);
        let program_at = args.iter().position(|a| a == "--").expect("separator") + 1;
        assert_eq!(args[program_at], "/opt/pyexec/bin/python3");
    }

    #[test]
    fn compiled_harness_byte_code_is_the_last_argument_and_the_fd_stays_first() {
        let args = args_for(&Start::Cold, WITH_CGROUPS);
        let tail: Vec<String> = args[args.len() - 4..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(tail, [LOAD_COMPILED, "3", "out=2048", "00ff"]);
        let source = JailPaths { harness: Harness::Source, ..paths() };
        let args = nsjail_args(&source, &limits(), WITH_CGROUPS, &Start::Cold, &Identity::Configured);
        let tail: Vec<String> = args[args.len() - 2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(tail, ["3", "out=2048"], "a cold run's cap on output files follows the result fd");
    }

    #[test]
    fn inside_gvisor_nsjail_gets_no_rlimits_since_its_parent_sets_them() {
        let tools = GvisorTools { prlimit: "/x/prlimit".into(), setpriv: "/x/setpriv".into() };
        let gvisor = JailPaths { gvisor: Some(tools), ..paths() };
        let args = nsjail_args(&gvisor, &limits(), WITHOUT_CGROUPS, &Start::Cold, &Identity::Configured);
        assert!(!args.iter().any(|a| a.to_string_lossy().starts_with("--rlimit")), "{args:?}");
        assert_eq!(value_after(&args, "--pass_fd"), "3");
        assert_eq!(value_after(&args, "--time_limit"), "4");
    }

    #[test]
    fn a_template_jail_reads_its_own_config_gets_its_control_socket_and_proc_and_never_times_out() {
        let start = Start::Template { preload: vec!["pandas".into()], filter_hex: "2000".into() };
        let args = args_for(&start, WITH_CGROUPS);
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(value_after(&args, "--config"), format!("/proc/self/fd/{TEMPLATE_CONFIG_FD}"));
        assert_eq!(value_after(&args, "--time_limit"), "0");
        assert!(text.windows(2).any(|w| w == ["--pass_fd", &CONTROL_FD.to_string()]), "{text:?}");
        // /proc inside /tmp, mounted after /tmp itself.
        let tmp = text.iter().position(|a| a.starts_with("none:/tmp:tmpfs")).expect("/tmp");
        let proc = text.iter().position(|a| *a == format!("none:{TEMPLATE_PROC}:proc:rw")).expect("/proc");
        assert!(tmp < proc, "{text:?}");
        let tail = &text[text.len() - 6..];
        assert_eq!(tail, ["3", "preload=pandas", "lower=nproc", "template=5", "filter=2000", "00ff"]);
    }

    #[test]
    fn a_ready_jail_gets_the_preload_list_before_the_byte_code_and_no_job_rlimits() {
        let start = Start::Ready { preload: vec!["numpy".into(), "pandas".into()], backstop_seconds: 900 };
        let args = args_for(&start, WITH_CGROUPS);
        let tail: Vec<String> = args[args.len() - 5..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(tail, [LOAD_COMPILED, "3", "preload=numpy,pandas", "lower=nproc", "00ff"]);
        assert_eq!(value_after(&args, "--time_limit"), "900");
        // The cgroup holds processes until the job's RLIMIT_NPROC is set by the harness.
        assert_eq!(value_after(&args, "--rlimit_nproc"), "hard");
        assert_eq!(value_after(&args, "--rlimit_cpu"), "inf");
        assert_eq!(value_after(&args, "--rlimit_fsize"), "inf");
        assert_eq!(value_after(&args, "--rlimit_nofile"), "hard");
        // /tmp's size is fixed when the jail starts.
        assert_eq!(value_after(&args, "--mount"), "none:/tmp:tmpfs:size=8388608,mode=1777");
    }

    #[test]
    fn without_cgroups_a_ready_jail_lowers_its_memory_and_process_rlimits_itself() {
        let start = Start::Ready { preload: vec!["numpy".into()], backstop_seconds: 900 };
        let args = args_for(&start, WITHOUT_CGROUPS);
        let tail: Vec<String> = args[args.len() - 4..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(tail, ["3", "preload=numpy", "lower=as,nproc", "00ff"]);
        // The ready limits are the ceiling the harness lowers from.
        assert_eq!(value_after(&args, "--rlimit_as"), "256");
        assert_eq!(value_after(&args, "--rlimit_nproc"), "32");
        let cold = args_for(&Start::Cold, WITHOUT_CGROUPS);
        assert!(!cold.iter().any(|a| a.to_string_lossy().starts_with("lower=")), "{cold:?}");
    }

    fn text(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_leased_jail_is_its_id_on_the_host_and_sees_only_its_ids_device_nodes_read_only() {
        let identity = Identity::Leased { id: 2_000_000_003, devices: "/dev/pyexec/2000000003".into() };
        let cgroups = CgroupLimits { memory: true, pids: true };
        let args = text(&nsjail_args(&paths(), &limits(), cgroups, &Start::Cold, &identity));
        assert!(args.windows(2).any(|w| w == ["--user", "65534:2000000003:1"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--group", "65534:2000000003:1"]), "{args:?}");
        for bind in [
            "/dev/pyexec/2000000003/null:/dev/null",
            "/dev/pyexec/2000000003/zero:/dev/zero",
            "/dev/pyexec/2000000003/urandom:/dev/urandom",
            "/dev/pyexec/2000000003/urandom:/dev/random",
        ] {
            assert!(args.windows(2).any(|w| w == ["--bindmount_ro", bind]), "{bind}: {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("/dev/null:")), "a host device node: {args:?}");
        assert!(!args.iter().any(|a| a == "--cap"), "{args:?}");
    }

    #[test]
    fn the_template_maps_the_id_range_as_it_is_and_keeps_only_the_caps_to_switch_to_one() {
        let identity = Identity::Template { first: 2_000_000_000, count: 64, devices: "/dev/pyexec".into() };
        let start = Start::Template { preload: vec![], filter_hex: "2000".into() };
        let args =
            text(&nsjail_args(&paths(), &limits(), CgroupLimits { memory: true, pids: true }, &start, &identity));
        // The first map is the template's own uid (nsjail runs it as the first map's inside id).
        let users: Vec<&String> = args.windows(2).filter(|w| w[0] == "--user").map(|w| &w[1]).collect();
        assert_eq!(users, ["65534:65534:1", "2000000000:2000000000:64"]);
        let caps: Vec<&String> = args.windows(2).filter(|w| w[0] == "--cap").map(|w| &w[1]).collect();
        assert_eq!(caps, ["CAP_SETUID", "CAP_SETGID"]);
        // Every id's device nodes inside its /tmp, mounted after /tmp itself.
        let tmp = args.iter().position(|a| a.starts_with("none:/tmp:tmpfs")).expect("/tmp");
        let ids = args.iter().position(|a| *a == format!("/dev/pyexec:{TEMPLATE_IDS}")).expect("ids");
        assert!(tmp < ids, "{args:?}");
    }

    #[test]
    fn child_status_is_read_from_the_last_status_line() {
        let exited = "[I][x] Mount: '/tmp'\n[I][x] pid=12 ([STANDALONE MODE]) exited with status: 3, (PIDs left: 0)\n";
        assert_eq!(parse_child_status(exited), Some(ChildStatus::Exited(3)));
        let signaled = "[I][x] pid=12 ([STANDALONE MODE]) terminated with signal: SIGSEGV (11), (PIDs left: 0)";
        assert_eq!(parse_child_status(signaled), Some(ChildStatus::Signaled(11)));
        assert_eq!(parse_child_status("[F][x] Launching child process failed"), None);
    }
}
