//! Starting nsjail inside gVisor (runsc), where it cannot run as root or set rlimits itself
//! (docs/gvisor.md): util-linux's prlimit sets the run's rlimits, then setpriv drops to
//! uid/gid 65534 keeping only CAP_SYS_ADMIN, as an ambient capability, for nsjail's namespaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::nsjail::Start;
use crate::sandbox::limits::Limits;

/// gVisor's kernel version string (its uname -v and the end of /proc/version), the same in every
/// gVisor release: gVisor's pkg/sentry/kernel/version.LinuxVersion.
const GVISOR_LINUX_VERSION: &str = "#1 SMP Sun Jan 10 15:06:54 PST 2016";
/// gVisor's release names end so ("4.19.0-gvisor", "5.15.0-gvisor"; older ones said "4.4.0").
const GVISOR_RELEASE_SUFFIX: &str = "-gvisor";
const PROC_VERSION: &str = "/proc/version";
const PROC_NET_DEV: &str = "/proc/net/dev";

/// Why `--isolation gvisor` refuses to run a script where it finds itself.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentRefusal {
    #[error(
        "--isolation gvisor, but this is not gVisor's kernel ({PROC_VERSION}: {0:?}): refusing to run the \
         script with the gVisor profile on a host kernel (is the pod's runtime class gVisor's?)"
    )]
    NotGvisor(String),
    #[error(
        "--isolation gvisor needs a sandbox without network devices, but it has {0:?}: refusing to run the \
         script (runsc's network must be \"none\")"
    )]
    NetworkDevices(Vec<String>),
    #[error("--isolation gvisor: reading {path}: {source}")]
    Unreadable {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Whether /proc/version's text is gVisor's.
pub fn is_gvisor_kernel(proc_version: &str) -> bool {
    let mut words = proc_version.split_whitespace();
    let release = words.nth(2).unwrap_or_default();
    proc_version.trim_end().ends_with(GVISOR_LINUX_VERSION) || release.ends_with(GVISOR_RELEASE_SUFFIX)
}

/// The network devices other than loopback that /proc/net/dev lists (two header lines, then
/// one `name: counters` line per device).
pub fn non_loopback_devices(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|name| !name.is_empty() && name != "lo")
        .collect()
}

/// Refuses unless the texts of /proc/version and /proc/net/dev say gVisor with loopback only.
pub fn check_environment(proc_version: &str, proc_net_dev: &str) -> Result<(), EnvironmentRefusal> {
    if !is_gvisor_kernel(proc_version) {
        return Err(EnvironmentRefusal::NotGvisor(proc_version.trim().to_string()));
    }
    let devices = non_loopback_devices(proc_net_dev);
    if !devices.is_empty() {
        return Err(EnvironmentRefusal::NetworkDevices(devices));
    }
    Ok(())
}

/// `check_environment` on this process's own /proc.
pub fn check_this_environment() -> Result<(), EnvironmentRefusal> {
    let read = |path: &'static str| {
        std::fs::read_to_string(path).map_err(|source| EnvironmentRefusal::Unreadable { path, source })
    };
    check_environment(&read(PROC_VERSION)?, &read(PROC_NET_DEV)?)
}

/// The uid and gid nsjail and the script run as (nobody): without a user namespace nsjail
/// cannot change them, so it starts with them.
pub const JAIL_ID: u32 = 65534;
/// RLIMIT_STACK and RLIMIT_CORE, as nsjail.cfg sets them on the host.
const STACK_BYTES: u64 = 8 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// The util-linux programs that start nsjail inside gVisor, found once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GvisorTools {
    pub prlimit: PathBuf,
    pub setpriv: PathBuf,
}

/// The command that starts nsjail for one run inside gVisor: `prlimit <limits> -- setpriv <drop>
/// -- nsjail <nsjail_args>`. Returns the program and its arguments.
///
/// Memory is always RLIMIT_AS: gVisor accepts cgroup memory limits but does not enforce them.
/// A ready jail (`Start::Ready`) starts with `limits`' memory and processes as ceilings, and
/// with no CPU or file-size limit and the supervisor's open-file limit: its harness lowers all
/// five to its job's when the job arrives, before any of the job's code runs.
pub fn launch_command(
    tools: &GvisorTools,
    nsjail: &Path,
    nsjail_args: Vec<OsString>,
    limits: &Limits,
    start: &Start,
) -> (PathBuf, Vec<OsString>) {
    let ready = matches!(start, Start::Ready { .. });
    let mut rlimits = vec![format!("--as={}", limits.memory_mb * MIB)];
    if ready {
        rlimits.extend(["--cpu=unlimited".to_string(), "--fsize=unlimited".to_string()]);
    } else {
        rlimits.extend([
            format!("--cpu={}", limits.cpu_seconds),
            format!("--fsize={}", limits.file_size_mb * MIB),
            format!("--nofile={}", limits.open_files),
        ]);
    }
    rlimits.extend([
        // Counted per uid inside the gVisor sandbox (the pod), not the host.
        format!("--nproc={}", limits.max_pids),
        format!("--stack={STACK_BYTES}"),
        "--core=0".to_string(),
        "--".to_string(),
    ]);
    let mut args: Vec<OsString> = rlimits.into_iter().map(OsString::from).collect();
    args.push(tools.setpriv.clone().into_os_string());
    args.extend(setpriv_drop().into_iter().map(OsString::from));
    args.push("--".into());
    args.push(nsjail.as_os_str().to_owned());
    args.extend(nsjail_args);
    (tools.prlimit.clone(), args)
}

/// setpriv's options: become 65534 with no groups and CAP_SYS_ADMIN inheritable and ambient, so
/// that it survives the exec of nsjail (nsjail drops it before it execs Python). The bounding
/// set is left alone: cutting it needs CAP_SETPCAP, which the pod does not get.
fn setpriv_drop() -> Vec<String> {
    vec![
        format!("--reuid={JAIL_ID}"),
        format!("--regid={JAIL_ID}"),
        "--clear-groups".into(),
        "--inh-caps=-all,+sys_admin".into(),
        "--ambient-caps=+sys_admin".into(),
    ]
}

/// The command that sends `signal` to a process of the jail's uid: a root supervisor without
/// CAP_KILL (the pod drops it) may not signal uid 65534 itself, a process of that uid may.
pub fn signal_command(tools: &GvisorTools, pid: u32, signal: &str) -> (PathBuf, Vec<OsString>) {
    let args = [
        format!("--reuid={JAIL_ID}"),
        format!("--regid={JAIL_ID}"),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "kill -s \"$1\" \"$2\"".into(),
        "sh".into(),
        signal.into(),
        pid.to_string(),
    ];
    (tools.setpriv.clone(), args.into_iter().map(OsString::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> GvisorTools {
        GvisorTools { prlimit: "/usr/bin/prlimit".into(), setpriv: "/usr/bin/setpriv".into() }
    }

    fn limits() -> Limits {
        crate::sandbox::limits::testing::small_limits()
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn prlimit_sets_every_rlimit_then_setpriv_drops_to_nobody_then_nsjail_runs() {
        let (program, args) =
            launch_command(&tools(), Path::new("/x/nsjail"), vec!["--config".into()], &limits(), &Start::Cold);
        assert_eq!(program, PathBuf::from("/usr/bin/prlimit"));
        assert_eq!(
            strings(&args),
            [
                "--as=268435456",
                "--cpu=5",
                "--fsize=4194304",
                "--nofile=64",
                "--nproc=32",
                "--stack=8388608",
                "--core=0",
                "--",
                "/usr/bin/setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+sys_admin",
                "--ambient-caps=+sys_admin",
                "--",
                "/x/nsjail",
                "--config",
            ]
        );
    }

    #[test]
    fn a_ready_jail_starts_under_its_memory_and_process_ceilings_and_no_cpu_or_file_limit() {
        let start = Start::Ready { preload: vec![], backstop_seconds: 60 };
        let (_, args) = launch_command(&tools(), Path::new("/x/nsjail"), vec![], &limits(), &start);
        let args = strings(&args);
        let rlimits = &args[..args.iter().position(|a| a == "--").expect("separator")];
        assert_eq!(
            rlimits,
            ["--as=268435456", "--cpu=unlimited", "--fsize=unlimited", "--nproc=32", "--stack=8388608", "--core=0"]
        );
    }

    #[test]
    fn only_cap_sys_admin_reaches_nsjail() {
        let (_, args) = launch_command(&tools(), Path::new("/x/nsjail"), vec![], &limits(), &Start::Cold);
        let caps: Vec<String> = strings(&args).into_iter().filter(|a| a.contains("caps=")).collect();
        assert_eq!(caps, ["--inh-caps=-all,+sys_admin", "--ambient-caps=+sys_admin"]);
    }

    const GVISOR_VERSION: &str = "Linux version 4.19.0-gvisor #1 SMP Sun Jan 10 15:06:54 PST 2016\n";
    const HOST_VERSION: &str = "Linux version 6.18.44-fc-v669 (root@build) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC\n";
    const LOOPBACK_ONLY: &str = "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n";

    #[test]
    fn gvisor_is_recognised_by_its_kernel_version_string_or_release() {
        assert!(is_gvisor_kernel(GVISOR_VERSION));
        assert!(is_gvisor_kernel("Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"));
        assert!(is_gvisor_kernel("Linux version 5.15.0-gvisor #1 SMP Sun Jan 10 15:06:54 PST 2016"));
        assert!(!is_gvisor_kernel(HOST_VERSION));
        assert!(!is_gvisor_kernel(""));
    }

    #[test]
    fn loopback_alone_is_no_network() {
        assert_eq!(non_loopback_devices(LOOPBACK_ONLY), Vec::<String>::new());
        let with_eth0 = format!("{LOOPBACK_ONLY}  eth0: 1296 16 0 0 0 0 0 0 866 11 0 0 0 0 0 0\n");
        assert_eq!(non_loopback_devices(&with_eth0), ["eth0"]);
    }

    #[test]
    fn the_environment_check_refuses_a_host_kernel_and_network_devices() {
        assert!(check_environment(GVISOR_VERSION, LOOPBACK_ONLY).is_ok());
        let host = check_environment(HOST_VERSION, LOOPBACK_ONLY).expect_err("a host kernel");
        assert!(matches!(host, EnvironmentRefusal::NotGvisor(_)), "{host}");
        assert!(host.to_string().contains("not gVisor's kernel"), "{host}");
        let eth0 = format!("{LOOPBACK_ONLY}  eth0: 1296 16 0 0 0 0 0 0 866 11 0 0 0 0 0 0\n");
        let networked = check_environment(GVISOR_VERSION, &eth0).expect_err("a network device");
        assert!(networked.to_string().contains("eth0"), "{networked}");
    }

    #[test]
    fn signals_are_sent_as_the_jail_uid_without_capabilities() {
        let (program, args) = signal_command(&tools(), 42, "TERM");
        assert_eq!(program, PathBuf::from("/usr/bin/setpriv"));
        let args = strings(&args);
        assert!(args.contains(&"--reuid=65534".to_string()) && args.contains(&"--inh-caps=-all".to_string()));
        assert_eq!(args[args.len() - 2..], ["TERM", "42"]);
    }
}
