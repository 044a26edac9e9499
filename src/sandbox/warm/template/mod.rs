//! The pool's template: one jailed interpreter that has imported `--preload-modules` once and
//! forks each preloaded ready sandbox of the pool, so that a sandbox costs a fork and its own
//! namespaces instead of an interpreter start and a pandas import.
//!
//! The template never reads or runs a script. For each request (`Template::fork`: a tmpfs size,
//! a backstop, and five fds over its control socket) it forks a keeper, which says who it is
//! (its pid, translated by the kernel into the supervisor's view, in the credentials of one byte
//! on the status socket), waits until the supervisor has moved it into the sandbox's own cgroup
//! (`Pending::into_cgroup`), then makes the sandbox's own user, mount, pid, network, IPC, UTS and
//! cgroup namespaces and forks the sandbox's first process. That process mounts its own /tmp
//! (over the template's /proc) and /dev/shm, drops every capability, installs the namespace and mount
//! denials (`filter`), draws new random state, says it is ready and waits for its one job like
//! any ready sandbox (src/sandbox/harness/template.py, `_serve_template`). The keeper writes how it ended
//! on the status socket (`ForkedKeeper`).

mod config;
pub mod filter;

pub use config::{denied_calls, template_config, ConfigError};

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt::PassCred, ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use crate::sandbox::jail::cgroup::RunCgroup;
use crate::sandbox::jail::ids::IdLease;
use crate::sandbox::jail::nsjail::ChildStatus;
use crate::sandbox::jail::{cloexec_pipe, Jail, Keeper, TerminateOnDrop};
use crate::sandbox::SandboxError;

/// The running template: its jail (nsjail, its cgroup) and the supervisor's end of its control
/// socket. Dropping it ends the template and with it every sandbox it forked (they live in its
/// pid namespace).
pub(in crate::sandbox) struct Template {
    /// The modules it imported.
    pub(in crate::sandbox) preload: Vec<String>,
    /// When it was ready, and how many sandboxes it has forked: its forks share its
    /// interpreter's start-up secrets (`Life`).
    pub(in crate::sandbox) born: Instant,
    pub(in crate::sandbox) forks: u64,
    /// How long it took to start: what a sandbox that imports the same modules itself (a cold
    /// start) takes.
    pub(in crate::sandbox) start_took: Duration,
    /// One reference per forked sandbox still alive (each keeper's), besides this one: a
    /// retired template ends when its last fork has.
    pub(in crate::sandbox) live: Arc<()>,
    pub(in crate::sandbox) keeper: Keeper,
    pub(in crate::sandbox) cgroup: Option<RunCgroup>,
    pub(in crate::sandbox) terminate_on_drop: TerminateOnDrop,
    pub(in crate::sandbox) control: StdUnixStream,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("preload", &self.preload).field("nsjail", &self.keeper.nsjail_pid()).finish()
    }
}

impl Template {
    /// Whether its jail still runs.
    pub(in crate::sandbox) fn alive(&mut self) -> bool {
        !self.keeper.ended()
    }

    /// Whether it has forked as many sandboxes, or lived as long, as `life` allows.
    pub(in crate::sandbox) fn spent(&self, life: &Life) -> bool {
        self.forks >= life.max_forks || self.born.elapsed() >= life.max_age
    }

    /// Whether it is in the last fifth of its life (`Life::ending`): time to start its successor.
    pub(in crate::sandbox) fn ending(&self, life: &Life) -> bool {
        life.ending(self.forks, self.born.elapsed())
    }

    /// Whether no sandbox it forked is still alive.
    pub(in crate::sandbox) fn unused(&self) -> bool {
        Arc::strong_count(&self.live) == 1
    }

    /// Asks for one forked sandbox whose /tmp holds `tmp_bytes`, whose keeper kills it after
    /// `backstop`, and which runs as `lease`'s host id with its device nodes: its pipes and
    /// status socket are made here and sent along with the lease's directory, which the keeper
    /// holds open for as long as it lives.
    pub(in crate::sandbox) fn fork(
        &mut self,
        tmp_bytes: u64,
        backstop: Duration,
        lease: IdLease,
    ) -> Result<Pending, SandboxError> {
        let spawn = SandboxError::Spawn;
        let (stdin_r, stdin_w) = cloexec_pipe()?;
        let (stdout_r, stdout_w) = cloexec_pipe()?;
        let (stderr_r, stderr_w) = cloexec_pipe()?;
        let (result_r, result_w) = cloexec_pipe()?;
        let (status, theirs) = StdUnixStream::pair().map_err(spawn)?;
        // Set before the keeper can send: the kernel then attaches its credentials.
        setsockopt(&status, PassCred, &true).map_err(|e| spawn(e.into()))?;
        let message = format!("{tmp_bytes} {} {}", backstop.as_secs().max(1), lease.id());
        let fds = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            result_w.as_raw_fd(),
            theirs.as_raw_fd(),
            lease.fd().as_raw_fd(),
        ];
        let sent = sendmsg::<()>(
            self.control.as_raw_fd(),
            &[IoSlice::new(message.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            // Never block the runtime on a template that stopped reading: fail the start instead.
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        );
        match sent {
            Ok(n) if n == message.len() => {}
            Ok(_) => return Err(SandboxError::Template("its control socket took part of a request".into())),
            Err(err) => return Err(SandboxError::Template(format!("asking it to fork: {err}"))),
        }
        self.forks += 1;
        let template = self.live.clone();
        // The template holds its own copies of the sandbox's ends now; ours close here.
        Ok(Pending { template, status, stdin: stdin_w, stdout: stdout_r, stderr: stderr_r, result: result_r, lease })
    }

    /// Ends the template (and every sandbox it forked): it exits when its control socket
    /// closes; its cgroup kills what is left.
    pub(in crate::sandbox) async fn destroy(self) {
        let Template { mut keeper, cgroup, mut terminate_on_drop, control, .. } = self;
        drop(control);
        if tokio::time::timeout(Duration::from_secs(1), keeper.wait()).await.is_err() {
            keeper.destroy(cgroup.as_ref(), None).await;
        }
        terminate_on_drop.pid = None;
        if let Some(group) = cgroup {
            group.release().await;
        }
    }
}

/// How long a template may serve: its forks share the secrets its interpreter drew at start
/// (the hash seed, the stack canary, the pointer guard, AT_RANDOM), so a template forks at most
/// `max_forks` sandboxes and for at most `max_age`, then a new one takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Life {
    pub max_forks: u64,
    pub max_age: Duration,
}

impl Life {
    /// Whether a template that forked `forks` sandboxes and lived `age` is in the last fifth of
    /// its life, by either measure: its successor starts then, so that it is ready to take over
    /// when this one is spent, instead of every fork of these modules waiting for an import.
    pub fn ending(&self, forks: u64, age: Duration) -> bool {
        forks.saturating_mul(5) >= self.max_forks.saturating_mul(4) || age.mul_f64(5.0) >= self.max_age.mul_f64(4.0)
    }
}

/// The pool's templates: those that fork (one per list of preloaded modules), their successors
/// (started near the end of their life, waiting to take over), and retired ones that still have
/// live forks (ending a template ends every sandbox it forked).
#[derive(Debug, Default)]
pub(in crate::sandbox) struct Templates {
    pub(in crate::sandbox) serving: Vec<Template>,
    pub(in crate::sandbox) successors: Vec<Template>,
    pub(in crate::sandbox) retired: Vec<Template>,
    /// The modules whose successor is being started now.
    pub(in crate::sandbox) succeeding: Vec<Vec<String>>,
    /// Templates started while a fork waited for them, and successors that took over from a
    /// spent template with no fork waiting, since start-up.
    pub(in crate::sandbox) started_at_need: u64,
    pub(in crate::sandbox) took_over: u64,
}

impl Templates {
    /// Every template, serving, waiting to serve or retired.
    pub(in crate::sandbox) fn all(&self) -> impl Iterator<Item = &Template> {
        self.serving.iter().chain(self.successors.iter()).chain(self.retired.iter())
    }

    /// Whether the template serving `preload` is near its end with no successor ready or on
    /// its way: the caller starts one (and says so with `succeeding`).
    pub(in crate::sandbox) fn wants_successor(&self, preload: &[String], life: &Life) -> bool {
        self.serving.iter().any(|t| t.preload == preload && t.ending(life))
            && !self.successors.iter().any(|t| t.preload == preload)
            && !self.succeeding.iter().any(|p| p == preload)
    }

    /// A successor of `preload` is ready (or failed to start: None).
    pub(in crate::sandbox) fn succeeded(&mut self, preload: &[String], successor: Option<Template>) {
        self.succeeding.retain(|p| p != preload);
        self.successors.extend(successor);
    }

    /// Takes the template for `preload` out of service when it has ended (at once) or is
    /// spent (retired until its forks have ended), and ends the retired templates whose forks
    /// all have.
    pub(in crate::sandbox) async fn retire(&mut self, preload: &[String], life: &Life) {
        if let Some(at) = self.serving.iter().position(|t| t.preload == preload) {
            if !self.serving[at].alive() {
                tracing::warn!(modules = preload.join(","), "a template of the pool ended; replacing it");
                self.serving.swap_remove(at).destroy().await;
            } else if self.serving[at].spent(life) {
                let template = self.serving.swap_remove(at);
                tracing::info!(modules = preload.join(","), forks = template.forks, "a template of the pool retires");
                self.retired.push(template);
            }
        }
        if !self.serving.iter().any(|t| t.preload == preload) {
            if let Some(at) = self.successors.iter().position(|t| t.preload == preload) {
                let mut successor = self.successors.swap_remove(at);
                if successor.alive() {
                    tracing::info!(modules = preload.join(","), "a template's successor takes over");
                    // Its life counts from when it began to serve.
                    successor.born = Instant::now();
                    self.serving.push(successor);
                    self.took_over += 1;
                } else {
                    successor.destroy().await;
                }
            }
        }
        let (done, kept): (Vec<Template>, Vec<Template>) =
            std::mem::take(&mut self.retired).into_iter().partition(Template::unused);
        self.retired = kept;
        futures::future::join_all(done.into_iter().map(Template::destroy)).await;
    }
}

/// A forked sandbox on its way to ready: the supervisor's ends of its pipes and status socket.
pub(in crate::sandbox) struct Pending {
    status: StdUnixStream,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    result: OwnedFd,
    lease: IdLease,
    template: Arc<()>,
}

impl Pending {
    /// Moves the sandbox's keeper into `cgroup` (a fresh slot of its own) before it makes the
    /// sandbox, and lets it go on: the sandbox's jail, which says on its result pipe when it is
    /// ready (`run::supervisor::ready_jail` waits for that, as for any ready jail).
    pub(in crate::sandbox) async fn into_cgroup(self, cgroup: RunCgroup) -> Result<Jail, SandboxError> {
        let spawn = SandboxError::Spawn;
        self.status.set_nonblocking(true).map_err(spawn)?;
        let mut status = UnixStream::from_std(self.status).map_err(spawn)?;
        let pid = loop {
            status.readable().await.map_err(spawn)?;
            match status.try_io(Interest::READABLE, || keeper_pid(status.as_raw_fd())) {
                Ok(pid) => break pid,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(SandboxError::Template(format!("the keeper did not say its pid: {err}"))),
            }
        };
        for file in cgroup.procs_files() {
            std::fs::write(&file, pid.to_string())
                .map_err(|source| SandboxError::Cgroup { run_id: format!("forked sandbox {pid}"), source })?;
        }
        status.write_all(b"G").await.map_err(spawn)?;
        let (log, _) = cloexec_pipe()?;
        Ok(Jail {
            keeper: Keeper::Forked(ForkedKeeper { status, said: Vec::new(), eof: false, _template: self.template }),
            stdin: pipe::Sender::from_owned_fd(self.stdin).map_err(spawn)?,
            stdout: pipe::Receiver::from_owned_fd(self.stdout).map_err(spawn)?,
            stderr: pipe::Receiver::from_owned_fd(self.stderr).map_err(spawn)?,
            result: pipe::Receiver::from_owned_fd(self.result).map_err(spawn)?,
            log: pipe::Receiver::from_owned_fd(log).map_err(spawn)?,
            cgroup: Some(cgroup),
            terminate_on_drop: TerminateOnDrop { pid: None, gvisor: None },
            lease: Some(self.lease),
        })
    }
}

/// Reads the keeper's one byte and its pid from the credentials the kernel attached (in this
/// process's pid namespace: the host pid).
fn keeper_pid(fd: std::os::fd::RawFd) -> std::io::Result<i32> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let message = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)?;
    if message.bytes == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmCredentials(credentials) = cmsg {
            return Ok(credentials.pid());
        }
    }
    Err(std::io::Error::other("no credentials came with it"))
}

/// The keeper of a forked sandbox, seen from the supervisor: its status socket, on which it
/// writes how the sandbox's first process ended (`exited N` or `signaled N`) and which closes
/// when it exits.
pub struct ForkedKeeper {
    status: UnixStream,
    said: Vec<u8>,
    eof: bool,
    /// Keeps its template from being ended while this sandbox lives.
    _template: Arc<()>,
}

/// More than a status line is never kept.
const STATUS_BYTES: usize = 64;

impl ForkedKeeper {
    /// Waits until the keeper has exited. Cancel-safe.
    pub(in crate::sandbox) async fn wait(&mut self) {
        let mut buf = [0u8; STATUS_BYTES];
        while !self.eof {
            match self.status.read(&mut buf).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => self.keep(&buf[..n]),
            }
        }
    }

    /// Whether the sandbox has ended (its keeper said so, or exited), without waiting.
    pub(in crate::sandbox) fn ended(&mut self) -> bool {
        let mut buf = [0u8; STATUS_BYTES];
        while !self.eof {
            match self.status.try_read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.keep(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.eof = true,
            }
        }
        self.eof || !self.said.is_empty()
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = STATUS_BYTES.saturating_sub(self.said.len());
        self.said.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Whether the keeper ended without saying how its sandbox ended (it was killed).
    pub(in crate::sandbox) fn lost(&self) -> bool {
        self.eof && self.status().is_none()
    }

    /// How the sandbox's first process ended, as its keeper said.
    pub(in crate::sandbox) fn status(&self) -> Option<ChildStatus> {
        parse_status(&self.said)
    }
}

/// A keeper's status line: `exited N` or `signaled N`.
pub fn parse_status(said: &[u8]) -> Option<ChildStatus> {
    let text = std::str::from_utf8(said).ok()?;
    let line = text.lines().next()?;
    let (word, number) = line.split_once(' ')?;
    let number = number.trim().parse().ok()?;
    match word {
        "exited" => Some(ChildStatus::Exited(number)),
        "signaled" => Some(ChildStatus::Signaled(number)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_ending_in_the_last_fifth_of_its_forks_or_of_its_time() {
        let life = Life { max_forks: 1000, max_age: Duration::from_secs(300) };
        let s = Duration::from_secs;
        assert!(!life.ending(0, s(0)));
        assert!(!life.ending(799, s(239)));
        assert!(life.ending(800, s(0)), "four fifths of its forks");
        assert!(life.ending(0, s(240)), "four fifths of its time");
        assert!(life.ending(u64::MAX, s(0)));
        let one = Life { max_forks: 1, max_age: Duration::from_secs(1) };
        assert!(!one.ending(0, Duration::ZERO));
        assert!(one.ending(1, Duration::ZERO));
    }

    #[test]
    fn a_keeper_says_how_the_sandbox_ended() {
        assert_eq!(parse_status(b"exited 0\n"), Some(ChildStatus::Exited(0)));
        assert_eq!(parse_status(b"exited 1\n"), Some(ChildStatus::Exited(1)));
        assert_eq!(parse_status(b"signaled 9\n"), Some(ChildStatus::Signaled(9)));
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(b"exited"), None);
        assert_eq!(parse_status(b"stopped 3\n"), None);
    }
}
