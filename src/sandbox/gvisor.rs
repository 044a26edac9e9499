//! Starting nsjail inside gVisor (runsc), where it cannot run as root or set rlimits itself
//! (hack/gvisor/FINDINGS.md): util-linux's prlimit sets the run's rlimits, then setpriv drops to
//! uid/gid 65534 keeping only CAP_SYS_ADMIN, as an ambient capability, for nsjail's namespaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::limits::Limits;

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
pub fn launch_command(
    tools: &GvisorTools,
    nsjail: &Path,
    nsjail_args: Vec<OsString>,
    limits: &Limits,
) -> (PathBuf, Vec<OsString>) {
    let mut args: Vec<OsString> = [
        format!("--as={}", limits.memory_mb * MIB),
        format!("--cpu={}", limits.cpu_seconds),
        format!("--fsize={}", limits.file_size_mb * MIB),
        format!("--nofile={}", limits.open_files),
        // Counted per uid inside the gVisor sandbox (the pod), not the host.
        format!("--nproc={}", limits.max_pids),
        format!("--stack={STACK_BYTES}"),
        "--core=0".to_string(),
        "--".to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
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
        let (program, args) = launch_command(&tools(), Path::new("/x/nsjail"), vec!["--config".into()], &limits());
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
    fn only_cap_sys_admin_reaches_nsjail() {
        let (_, args) = launch_command(&tools(), Path::new("/x/nsjail"), vec![], &limits());
        let caps: Vec<String> = strings(&args).into_iter().filter(|a| a.contains("caps=")).collect();
        assert_eq!(caps, ["--inh-caps=-all,+sys_admin", "--ambient-caps=+sys_admin"]);
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
