//! A started nsjail process with its pipes and cgroup lease, and how it is signalled.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::cgroup::RunCgroup;
use super::gvisor::{self, GvisorTools};

/// How long nsjail gets to kill and reap the script after SIGTERM before it is killed itself.
pub(super) const NSJAIL_TERM_GRACE: Duration = Duration::from_secs(1);

/// A started jail that has not been fed yet.
pub(super) struct Jail {
    pub(super) child: Child,
    pub(super) stdin: ChildStdin,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: ChildStderr,
    pub(super) result: pipe::Receiver,
    pub(super) log: pipe::Receiver,
    pub(super) cgroup: Option<RunCgroup>,
    pub(super) terminate_on_drop: TerminateOnDrop,
}

impl Jail {
    /// SIGTERM to nsjail, which kills and reaps the interpreter.
    pub(super) fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            signal_nsjail(pid, Signal::SIGTERM, self.terminate_on_drop.gvisor.as_ref());
        }
    }
}

/// Sends SIGTERM to nsjail if the run is dropped before nsjail was reaped.
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
