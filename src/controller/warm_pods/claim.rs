//! The warm pool's decisions, as pure functions: which pods are pool pods and in which state,
//! whether an execution's limits fit a pool pod, which pods to retire, how many to create, and
//! the patch that claims a pod for one execution.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use super::super::pod::{
    execution_label, LABEL_EXECUTION, LABEL_POOL_KIND, LABEL_STATE, STATE_CLAIMED, STATE_READY, STATE_WARMING,
};
use super::super::pod_state::{self, PodView};
use crate::crd::PythonExecution;
use crate::sandbox::warm::pool::Kind;
use crate::sandbox::Limits;

/// Whether a job with `job` limits can run in a pod sized for `pool` limits: nothing it asks
/// for may be larger (the pod's memory and storage were computed from the pool's limits), and its
/// /tmp must be the one the pod's ready sandbox was started with. (Any allowed timeout fits: a
/// pool pod's deadline leaves the maximum timeout after its idle lifetime.)
pub fn job_fits(pool: &Limits, job: &Limits) -> bool {
    job.memory_mb <= pool.memory_mb
        && job.tmp_mb == pool.tmp_mb
        && job.stdout_bytes <= pool.stdout_bytes
        && job.stderr_bytes <= pool.stderr_bytes
        && job.result_bytes <= pool.result_bytes
        && job.output_files_bytes <= pool.output_files_bytes
        && job.file_size_mb <= pool.file_size_mb
}

/// What the pool does with one of its pods at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum PoolPod {
    /// Created, its container not running yet.
    Starting,
    /// Its container runs: attach to it (or it is attached already).
    Running,
    /// Ended, failed, or older than the idle lifetime: delete it.
    Retire(&'static str),
    /// Being deleted, or no longer the pool's (claimed).
    Gone,
}

/// Whether `pod` is an unclaimed pool pod: labelled warming or ready, owned by nothing.
pub fn is_pool_pod(pod: &Pod) -> bool {
    let state = pod.labels().get(LABEL_STATE).map(String::as_str);
    matches!(state, Some(STATE_WARMING | STATE_READY)) && pod.owner_references().is_empty()
}

/// A pool pod's kind, from its label; `preloaded` without one (the one kind there once was).
pub fn kind_of(pod: &Pod) -> Kind {
    match pod.labels().get(LABEL_POOL_KIND).map(String::as_str) {
        Some("plain") => Kind::Plain,
        _ => Kind::Preloaded,
    }
}

/// The pool's view of one of its pods.
pub fn classify(pod: &Pod, idle: Duration, now: Timestamp) -> PoolPod {
    if !is_pool_pod(pod) || pod.meta().deletion_timestamp.is_some() {
        return PoolPod::Gone;
    }
    if age(pod, now) > idle {
        return PoolPod::Retire("idle lifetime passed");
    }
    match pod_state::view_pod(pod) {
        PodView::Starting { .. } => PoolPod::Starting,
        PodView::Running => PoolPod::Running,
        PodView::CannotStart { .. } => PoolPod::Retire("cannot start"),
        PodView::Ended { .. } | PodView::NoJob => PoolPod::Retire("ended"),
        PodView::Terminating => PoolPod::Gone,
    }
}

/// How long ago the pod was created (zero when unknown).
pub fn age(pod: &Pod, now: Timestamp) -> Duration {
    pod.creation_timestamp()
        .and_then(|created| Duration::try_from(now.duration_since(created.0)).ok())
        .unwrap_or(Duration::ZERO)
}

/// How many pods to create so that `alive` (starting, running or just created) reach `size`.
pub fn to_create(size: usize, alive: usize) -> usize {
    size.saturating_sub(alive)
}

/// The merge patch that claims `pod` for `execution`: its state label, the execution's label
/// and the execution as its controller owner, applied only if the pod is still at
/// `resource_version` (so two claims of one pod cannot both succeed).
pub fn claim_patch(execution: &PythonExecution, resource_version: &str) -> Option<Value> {
    let mut owner = execution.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(false);
    let name = execution.meta().name.as_deref()?;
    Some(json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": { LABEL_STATE: STATE_CLAIMED, LABEL_EXECUTION: execution_label(name) },
            "ownerReferences": [owner],
        }
    }))
}

/// The merge patch that marks a pool pod whose sandbox said it is ready, if unchanged since
/// `resource_version` (never over a claim).
pub fn ready_patch(resource_version: &str) -> Value {
    json!({ "metadata": { "resourceVersion": resource_version, "labels": { LABEL_STATE: STATE_READY } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::pod::build_pool_pod;
    use crate::controller::testing::{execution, limits, pod_settings, running_status};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn pool_pod(age_seconds: i64) -> Pod {
        let mut pod = build_pool_pod("ns", &pod_settings(), &limits(), &["pandas".into()], Duration::from_secs(600));
        pod.metadata.name = Some("pyexec-warm-abc".into());
        pod.metadata.creation_timestamp = Some(Time(Timestamp::now() - SignedDuration::from_secs(age_seconds)));
        pod.status = Some(running_status());
        pod
    }

    #[test]
    fn the_default_limits_fit_a_pool_pod_and_larger_ones_do_not() {
        let pool = limits();
        assert!(job_fits(&pool, &pool));
        assert!(!job_fits(&pool, &Limits { memory_mb: pool.memory_mb + 1, ..pool.clone() }));
        assert!(!job_fits(&pool, &Limits { tmp_mb: pool.tmp_mb / 2, ..pool.clone() }));
        assert!(!job_fits(&pool, &Limits { result_bytes: pool.result_bytes + 1, ..pool.clone() }));
        assert!(!job_fits(&pool, &Limits { output_files_bytes: pool.output_files_bytes + 1, ..pool.clone() }));
        assert!(job_fits(&pool, &Limits { memory_mb: pool.memory_mb / 2, max_pids: 1, ..pool.clone() }));
    }

    #[test]
    fn a_running_pool_pod_is_attached_to_and_an_old_one_retired() {
        let now = Timestamp::now();
        assert_eq!(classify(&pool_pod(5), Duration::from_secs(600), now), PoolPod::Running);
        assert_eq!(classify(&pool_pod(700), Duration::from_secs(600), now), PoolPod::Retire("idle lifetime passed"));
        let mut ended = pool_pod(5);
        ended.status = Some(crate::controller::testing::ended_status("Failed", 3));
        assert_eq!(classify(&ended, Duration::from_secs(600), now), PoolPod::Retire("ended"));
    }

    #[test]
    fn a_claimed_or_owned_pod_is_not_the_pools() {
        let now = Timestamp::now();
        let mut claimed = pool_pod(5);
        claimed.labels_mut().insert(LABEL_STATE.into(), STATE_CLAIMED.into());
        assert_eq!(classify(&claimed, Duration::from_secs(600), now), PoolPod::Gone);
        let mut owned = pool_pod(5);
        let owner = execution("hello").controller_owner_ref(&()).expect("owner");
        owned.metadata.owner_references = Some(vec![owner]);
        assert!(!is_pool_pod(&owned));
    }

    #[test]
    fn the_claim_is_conditional_and_names_the_execution_as_owner() {
        let patch = claim_patch(&execution("hello"), "42").expect("a patch");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["metadata"]["labels"][LABEL_STATE], STATE_CLAIMED);
        assert_eq!(patch["metadata"]["labels"][LABEL_EXECUTION], "hello");
        let owner = &patch["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("PythonExecution"), Some("uid-hello")));
        assert_eq!(owner["controller"], true);
    }

    #[test]
    fn the_pool_creates_only_what_is_missing() {
        assert_eq!(to_create(2, 0), 2);
        assert_eq!(to_create(2, 3), 0);
        assert_eq!(to_create(0, 0), 0);
    }
}
