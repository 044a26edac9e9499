//! A run's answer and the end of its sandbox, which may come after it: a successful run is
//! answered once its report and output are read (`Supervisor::finish`), and its jail's end, the
//! kill if it lingers and its cgroup's release follow here, tracked so that shutdown waits.

use std::time::{Duration, Instant};

use crate::sandbox::envelope::Envelope;
use crate::sandbox::jail::cgroup::RunCgroup;
use crate::sandbox::jail::gvisor::GvisorTools;
use crate::sandbox::jail::ids::IdLease;
use crate::sandbox::jail::{Keeper, TerminateOnDrop};

/// How long a jail that answered may take to end by itself (its harness calls `_exit` right
/// after its report) before it is killed.
const EXIT_AFTER_ANSWER: Duration = Duration::from_secs(1);

/// A run's answer, and the removal of its sandbox, which may still be under way.
#[derive(Debug)]
pub struct Finished {
    pub envelope: Envelope,
    pub removal: Removal,
}

impl Finished {
    /// With the envelope's duration counted from `started`.
    pub(in crate::sandbox) fn timed(self, started: Instant) -> Finished {
        let envelope = Envelope { duration_ms: started.elapsed().as_millis() as u64, ..self.envelope };
        Finished { envelope, ..self }
    }
}

/// What is left of a sandbox's removal after its answer: its jail reaped and its cgroup emptied
/// and given back. The supervisor's `shutdown` waits for every one of them.
#[derive(Debug)]
pub struct Removal(pub(in crate::sandbox) Option<tokio::task::JoinHandle<()>>);

impl Removal {
    /// Resolves once the sandbox is gone.
    pub async fn wait(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }

    /// The end of a jail that answered: it ends by itself within `EXIT_AFTER_ANSWER` (its
    /// harness is exiting), or before `deadline`, or it is killed like a run past its deadline.
    pub(in crate::sandbox) async fn ended(
        mut keeper: Keeper,
        mut terminate_on_drop: TerminateOnDrop,
        cgroup: Option<RunCgroup>,
        lease: Option<IdLease>,
        deadline: Instant,
        gvisor: Option<GvisorTools>,
    ) {
        let patience = deadline.min(Instant::now() + EXIT_AFTER_ANSWER);
        if tokio::time::timeout_at(patience.into(), keeper.wait()).await.is_err() {
            keeper.end(cgroup.as_ref(), gvisor.as_ref()).await;
        }
        keeper.wait().await;
        terminate_on_drop.pid = None;
        if let Some(group) = cgroup {
            group.release().await;
        }
        drop(lease);
    }
}
