//! A started sandbox with its pipes and cgroup lease: the process whose end is the sandbox's
//! end (nsjail, or a forked sandbox's keeper), how it is waited for and how it is ended; and, in
//! its modules, how a jail is made: nsjail's command line, gVisor's, cgroups, host ids, the
//! harness's installation, /proc readings.

pub mod cgroup;
pub mod gvisor;
pub mod ids;
pub(in crate::sandbox) mod install;
pub mod nsjail;
pub mod procfs;

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::pipe2;
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::process::Child;

use crate::sandbox::warm::template::ForkedKeeper;
use crate::sandbox::SandboxError;
use cgroup::RunCgroup;
use gvisor::GvisorTools;
use ids::IdLease;
use nsjail::ChildStatus;

/// How long nsjail gets to kill and reap the script after SIGTERM before it is killed itself.
pub(super) const NSJAIL_TERM_GRACE: Duration = Duration::from_secs(1);

/// A started sandbox that has not been fed yet.
pub(super) struct Jail {
    pub(super) keeper: Keeper,
    pub(super) stdin: pipe::Sender,
    pub(super) stdout: pipe::Receiver,
    pub(super) stderr: pipe::Receiver,
    pub(super) result: pipe::Receiver,
    /// nsjail's log; a forked sandbox has none (it reads as empty).
    pub(super) log: pipe::Receiver,
    pub(super) cgroup: Option<RunCgroup>,
    pub(super) terminate_on_drop: TerminateOnDrop,
    /// Its host id, held until its processes are gone (None inside gVisor, or when the
    /// supervisor is not root).
    pub(super) lease: Option<IdLease>,
}

impl Jail {
    /// Starts the sandbox's end: SIGTERM to nsjail, which kills and reaps the interpreter; a
    /// forked sandbox's processes are killed through its cgroup.
    pub(super) fn terminate(&self) {
        match &self.keeper {
            Keeper::Nsjail(child) => {
                if let Some(pid) = child.id() {
                    signal_nsjail(pid, Signal::SIGTERM, self.terminate_on_drop.gvisor.as_ref());
                }
            }
            Keeper::Forked(_) => {
                if let Some(group) = &self.cgroup {
                    group.kill_all_once();
                }
            }
        }
    }
}

/// The process whose end is the sandbox's end.
pub(super) enum Keeper {
    /// nsjail, the parent of the jailed interpreter: it reaps it and logs how it ended.
    Nsjail(Child),
    /// A sandbox forked from the pool's template: its keeper waits for it in the template's
    /// jail and says how it ended (`template::ForkedKeeper`).
    Forked(ForkedKeeper),
}

impl Keeper {
    /// Waits until the sandbox has ended. Cancel-safe.
    pub(super) async fn wait(&mut self) {
        match self {
            Keeper::Nsjail(child) => {
                let _ = child.wait().await;
            }
            Keeper::Forked(keeper) => keeper.wait().await,
        }
    }

    /// Whether a forked sandbox's keeper ended without saying how the sandbox ended.
    pub(super) fn lost(&self) -> bool {
        matches!(self, Keeper::Forked(keeper) if keeper.lost())
    }

    /// Whether the sandbox has ended, without waiting.
    pub(super) fn ended(&mut self) -> bool {
        match self {
            Keeper::Nsjail(child) => !matches!(child.try_wait(), Ok(None)),
            Keeper::Forked(keeper) => keeper.ended(),
        }
    }

    /// nsjail's host pid (a forked sandbox has no process of the supervisor's).
    pub(super) fn nsjail_pid(&self) -> Option<u32> {
        match self {
            Keeper::Nsjail(child) => child.id(),
            Keeper::Forked(_) => None,
        }
    }

    /// How the sandbox's interpreter ended: from nsjail's `log`, or as its keeper said.
    pub(super) fn status(&self, log: &str) -> Option<ChildStatus> {
        match self {
            Keeper::Nsjail(_) => nsjail::parse_child_status(log),
            Keeper::Forked(keeper) => keeper.status(),
        }
    }

    /// Ends a sandbox past its deadline (or cancelled) and waits for it: nsjail is asked to kill
    /// and reap the script (`end_jail`); a forked sandbox's processes are killed through its
    /// cgroup.
    pub(super) async fn end(&mut self, cgroup: Option<&RunCgroup>, gvisor: Option<&GvisorTools>) {
        match self {
            Keeper::Nsjail(child) => end_jail(child, gvisor).await,
            Keeper::Forked(keeper) => {
                if let Some(group) = cgroup {
                    group.kill_all_once();
                }
                if tokio::time::timeout(NSJAIL_TERM_GRACE, keeper.wait()).await.is_err() {
                    tracing::warn!("a forked sandbox's keeper did not end after its processes were killed");
                }
            }
        }
    }

    /// `end`, at shutdown or for a ready sandbox that went stale; nsjail is killed outright if it
    /// does not end in time.
    pub(super) async fn destroy(&mut self, cgroup: Option<&RunCgroup>, gvisor: Option<&GvisorTools>) {
        self.end(cgroup, gvisor).await;
        if let Keeper::Nsjail(child) = self {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Ends a jail past its deadline (or cancelled): SIGTERM makes nsjail kill and reap the script
/// (SIGKILL to nsjail would leave the killed script for the host's init to reap); SIGKILL
/// after the grace period.
pub(super) async fn end_jail(child: &mut Child, gvisor: Option<&GvisorTools>) {
    if let Some(pid) = child.id() {
        signal_nsjail(pid, Signal::SIGTERM, gvisor);
    }
    if tokio::time::timeout(NSJAIL_TERM_GRACE, child.wait()).await.is_err() {
        match (child.id(), gvisor) {
            (Some(pid), Some(tools)) => signal_nsjail(pid, Signal::SIGKILL, Some(tools)),
            _ => {
                let _ = child.start_kill();
            }
        }
    }
}

/// A pipe whose ends close on exec (they are handed to a child by explicit fd mappings or
/// `SCM_RIGHTS`).
pub(super) fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::Spawn(std::io::Error::from(e)))
}

/// Sends SIGTERM to nsjail if the run is dropped before nsjail was reaped (a forked sandbox
/// has no pid here: its cgroup's release kills it).
pub(super) struct TerminateOnDrop {
    pub(super) pid: Option<u32>,
    pub(super) gvisor: Option<GvisorTools>,
}

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            signal_nsjail(pid, Signal::SIGTERM, self.gvisor.as_ref());
        }
    }
}

/// Signals nsjail. Inside gVisor nsjail runs as 65534 and this process is root without
/// CAP_KILL (the pod drops it), so the signal is sent by a short-lived process of nsjail's uid.
pub(super) fn signal_nsjail(pid: u32, signal: Signal, gvisor: Option<&GvisorTools>) {
    let Some(tools) = gvisor else {
        let _ = kill(Pid::from_raw(pid as i32), signal);
        return;
    };
    if kill(Pid::from_raw(pid as i32), signal).is_ok() {
        return;
    }
    tracing::debug!(pid, ?signal, "signalling nsjail as its own uid");
    let name = signal.as_str().trim_start_matches("SIG");
    let (program, args) = gvisor::signal_command(tools, pid, name);
    let sent = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match sent {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            tracing::warn!(pid, stderr = %String::from_utf8_lossy(&output.stderr), "could not signal nsjail")
        }
        Err(err) => tracing::warn!(pid, error = %err, "could not signal nsjail"),
    }
}
