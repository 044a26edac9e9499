//! Sandbox pods, built by pure functions of the settings and the limits: the pod created for one
//! execution (the cold path) and the pool pod started ahead (the warm path) share one container,
//! which runs `pyexec sandbox --job-on-stdin` and waits for its one job on stdin. How the job is
//! written is in `job_document`, the container's security profiles in `security`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodDNSConfig, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

mod job_document;
mod security;

pub use job_document::{job_document, JobTooLarge, MAX_JOB_BYTES};
pub use security::{sandbox_isolation, security_context};

use super::args::PodSettings;
use super::pod_limits::log_limit_bytes;
use crate::crd::PythonExecution;
use crate::sandbox::warm::pool::Kind;
use crate::sandbox::Limits;
use security::isolation_name;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_EXECUTION: &str = "pyexec.dev/execution";
/// Where a sandbox pod is in its life: `warming` (a pool pod starting), `ready` (a pool pod whose
/// sandbox waits for a job), `claimed` (an execution's).
pub const LABEL_STATE: &str = "pyexec.dev/state";
pub const STATE_WARMING: &str = "warming";
pub const STATE_READY: &str = "ready";
pub const STATE_CLAIMED: &str = "claimed";
/// A pool pod's kind: `plain` (its sandbox imported nothing) or `preloaded` (it imported the
/// preload modules). Pool pods without it are `preloaded`, the one kind there once was.
pub const LABEL_POOL_KIND: &str = "pyexec.dev/pool-kind";
/// Pool pods are named by the API server from this prefix.
pub const POOL_POD_PREFIX: &str = "pyexec-warm-";
pub const APP_NAME: &str = "pyexec";
pub const COMPONENT_SANDBOX: &str = "sandbox";
/// Selects every sandbox pod, and only those.
pub const SANDBOX_SELECTOR: &str = "app.kubernetes.io/name=pyexec,app.kubernetes.io/component=sandbox";
pub const CONTAINER_NAME: &str = "sandbox";
const POD_NAME_SUFFIX: &str = "-sandbox";

/// Where Kubernetes reads the termination message from (the container's one-line summary).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Seconds a pod may live past the script's timeout: container start, nsjail set-up, the envelope.
pub const DEADLINE_MARGIN_SECONDS: i64 = 60;
/// Memory for the supervisor, nsjail and Python's start-up besides the script's own limit.
pub const SUPERVISOR_MEMORY_MB: u64 = 128;
/// Size of the container's scratch /tmp (the supervisor's; the script's /tmp is inside the jail).
const SCRATCH_TMP_MB: u64 = 16;
/// Ephemeral storage for the writable layer besides the scratch /tmp and the log.
const EPHEMERAL_MARGIN_MB: u64 = 64;
/// Seconds between SIGTERM and SIGKILL: a sandbox holds nothing worth saving.
const TERMINATION_GRACE_SECONDS: i64 = 2;
/// Longest pod name and label value Kubernetes accepts for these uses.
const MAX_NAME_LEN: usize = 63;
const MIB: u64 = 1024 * 1024;

/// Why no pod could be built for an execution.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("the execution has no {0}")]
    MissingField(&'static str),
}

/// The sandbox pod's name: the execution's name with `-sandbox`, shortened with a hash when
/// that exceeds 63 characters. Deterministic, so a restarted controller finds the pod it made.
pub fn pod_name(execution_name: &str) -> String {
    format!("{}{POD_NAME_SUFFIX}", shorten(execution_name, MAX_NAME_LEN - POD_NAME_SUFFIX.len()))
}

/// The name of the pod created for an execution after `replaced` earlier pods ended without its
/// job: the first is `pod_name`, later ones add `-N`.
pub fn pod_name_for(execution_name: &str, replaced: u32) -> String {
    if replaced == 0 {
        return pod_name(execution_name);
    }
    let suffix = format!("{POD_NAME_SUFFIX}-{replaced}");
    format!("{}{suffix}", shorten(execution_name, MAX_NAME_LEN - suffix.len()))
}

/// The execution's name as a label value (at most 63 characters).
pub fn execution_label(execution_name: &str) -> String {
    shorten(execution_name, MAX_NAME_LEN)
}

fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    let keep: String = name.chars().take(max - hash.len() - 1).collect();
    format!("{}-{hash}", keep.trim_end_matches(['-', '.']))
}

/// FNV-1a: a hash that stays the same across Rust releases, unlike std's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The labels of an execution's own pod.
pub fn pod_labels(execution_name: &str) -> BTreeMap<String, String> {
    let mut labels = sandbox_labels(STATE_CLAIMED);
    labels.insert(LABEL_EXECUTION.to_string(), execution_label(execution_name));
    labels
}

/// The labels every sandbox pod carries, in `state`.
fn sandbox_labels(state: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_SANDBOX.to_string()),
        (LABEL_STATE.to_string(), state.to_string()),
    ])
}

/// The pod created for `execution` alone, sized for `limits`: the cold path. Its sandbox imports
/// nothing ahead (its job is already waiting), and it lives for the job's timeout plus a margin.
/// After pods that ended without the job (`status.podsReplaced`), it gets a name of its own.
pub fn build_pod(execution: &PythonExecution, settings: &PodSettings, limits: &Limits) -> Result<Pod, BuildError> {
    let name = execution.meta().name.clone().ok_or(BuildError::MissingField("name"))?;
    let namespace = execution.namespace().ok_or(BuildError::MissingField("namespace"))?;
    let mut owner = execution.controller_owner_ref(&()).ok_or(BuildError::MissingField("uid"))?;
    // Blocking the owner's deletion would need update rights on pythonexecutions/finalizers.
    owner.block_owner_deletion = Some(false);
    let metadata = ObjectMeta {
        name: Some(pod_name_for(&name, execution.status.as_ref().and_then(|s| s.pods_replaced).unwrap_or(0))),
        namespace: Some(namespace),
        labels: Some(pod_labels(&name)),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    Ok(sandbox_pod(metadata, settings, limits, &[], active_deadline_seconds(limits)))
}

/// A pool pod for `namespace`, sized for `limits` (the defaults), that imports `preload` and then
/// waits: it may wait `idle` and then still run a job of the longest allowed `max_timeout`.
/// Labelled `plain` when it imports nothing, `preloaded` otherwise (`LABEL_POOL_KIND`).
pub fn build_pool_pod(
    namespace: &str,
    settings: &PodSettings,
    limits: &Limits,
    preload: &[String],
    idle_and_max_timeout: Duration,
) -> Pod {
    let mut labels = sandbox_labels(STATE_WARMING);
    let kind = if preload.is_empty() { Kind::Plain } else { Kind::Preloaded };
    labels.insert(LABEL_POOL_KIND.to_string(), kind.as_str().to_string());
    let metadata = ObjectMeta {
        generate_name: Some(POOL_POD_PREFIX.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels),
        owner_references: None::<Vec<OwnerReference>>,
        ..Default::default()
    };
    let deadline = i64::try_from(idle_and_max_timeout.as_secs()).unwrap_or(i64::MAX / 2) + DEADLINE_MARGIN_SECONDS;
    sandbox_pod(metadata, settings, limits, preload, deadline)
}

/// The one shape of a sandbox pod.
fn sandbox_pod(
    metadata: ObjectMeta,
    settings: &PodSettings,
    limits: &Limits,
    preload: &[String],
    active_deadline_seconds: i64,
) -> Pod {
    let isolation = sandbox_isolation(settings);
    let env = vec![
        env_var("PYEXEC_TERMINATION_LOG", TERMINATION_LOG),
        env_var("PYEXEC_ISOLATION", isolation_name(isolation)),
        env_var("PYEXEC_JOB_ON_STDIN", "true"),
        env_var("PYEXEC_PRELOAD_MODULES", &preload.join(",")),
    ];
    let volumes = vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(format!("{SCRATCH_TMP_MB}Mi"))),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mounts = vec![VolumeMount { name: "scratch".into(), mount_path: "/tmp".into(), ..Default::default() }];
    let memory = Quantity(format!("{}Mi", pod_memory_mb(limits)));
    let storage = Quantity(format!("{}Mi", pod_ephemeral_storage_mb(limits)));
    let cpu = |millicores: u64| Quantity(format!("{}m", millicores.max(1)));
    let requests = BTreeMap::from([
        ("cpu".to_string(), cpu(settings.pod_cpu_request_millicores.min(settings.pod_cpu_millicores))),
        ("memory".to_string(), memory.clone()),
        ("ephemeral-storage".to_string(), storage.clone()),
    ]);
    let resource_limits = BTreeMap::from([
        ("cpu".to_string(), cpu(settings.pod_cpu_millicores)),
        ("memory".to_string(), memory),
        ("ephemeral-storage".to_string(), storage),
    ]);
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(settings.sandbox_image.clone()),
        image_pull_policy: Some(settings.sandbox_image_pull_policy.clone()),
        command: Some(vec!["pyexec".into(), "sandbox".into()]),
        env: Some(env),
        // The job arrives on stdin through one attach; its end closes stdin for good.
        stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(resource_limits),
            ..Default::default()
        }),
        security_context: Some(security_context(settings.sandbox_security, isolation)),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("File".into()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(active_deadline_seconds),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            // No network in the sandbox, so no name to resolve: the pod gets a resolver file that
            // names the loopback and nothing of the cluster's DNS (its service address and search
            // domains) or the node's, and the kubelet has no cluster DNS to miss for it (on
            // clusters without one it would record a MissingClusterDNS event at every sync).
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig { nameservers: Some(vec!["127.0.0.1".into()]), ..Default::default() }),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            runtime_class_name: (!settings.runtime_class.is_empty()).then(|| settings.runtime_class.clone()),
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

pub(super) fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

/// Memory of the pod: the script's limit, its in-memory /tmp, the supervisor, and the output the
/// supervisor holds twice (captured, then as JSON), output files included. Above the script's
/// limit, so the script meets its own limit (a clean memory_limit outcome) before the pod is
/// OOM-killed.
pub fn pod_memory_mb(limits: &Limits) -> u64 {
    let files = crate::sandbox::files::output::report_bytes(limits.output_files_bytes);
    let output = 2 * (limits.stdout_bytes + limits.stderr_bytes + limits.result_bytes + files);
    limits.memory_mb + limits.tmp_mb + SUPERVISOR_MEMORY_MB + output.div_ceil(MIB)
}

/// Ephemeral storage of the pod: the scratch /tmp, the log (the envelope) and the writable layer.
pub fn pod_ephemeral_storage_mb(limits: &Limits) -> u64 {
    SCRATCH_TMP_MB + EPHEMERAL_MARGIN_MB + log_limit_bytes(limits).div_ceil(MIB)
}

/// The pod's activeDeadlineSeconds: the script's timeout, rounded up, plus the margin.
pub fn active_deadline_seconds(limits: &Limits) -> i64 {
    i64::try_from(limits.timeout_ms.div_ceil(1000)).unwrap_or(i64::MAX / 2) + DEADLINE_MARGIN_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{execution, limits, pod_settings};

    pub(super) fn env_of(pod: &Pod) -> BTreeMap<String, String> {
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        container.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
    }

    pub(super) fn build(script: &str) -> Pod {
        let mut execution = execution("hello");
        execution.spec.script = script.into();
        build_pod(&execution, &pod_settings(), &limits()).expect("buildable")
    }

    #[test]
    fn the_pod_name_is_the_execution_name_with_a_suffix() {
        assert_eq!(pod_name("hello"), "hello-sandbox");
    }

    #[test]
    fn a_long_name_is_shortened_to_63_characters_deterministically() {
        let long = "x".repeat(100);
        let name = pod_name(&long);
        assert_eq!(name.len(), 63);
        assert_eq!(name, pod_name(&long));
        assert_ne!(name, pod_name(&"x".repeat(101)), "different names get different pods");
        assert!(name.ends_with("-sandbox"));
        assert_eq!(execution_label(&long).len(), 63);
    }

    #[test]
    fn a_replacement_pod_gets_its_own_name() {
        assert_eq!(pod_name_for("hello", 0), "hello-sandbox");
        assert_eq!(pod_name_for("hello", 2), "hello-sandbox-2");
        assert_eq!(pod_name_for(&"x".repeat(100), 3).len(), 63);
        let mut execution = execution("hello");
        execution.status = Some(crate::crd::PythonExecutionStatus { pods_replaced: Some(2), ..Default::default() });
        let pod = build_pod(&execution, &pod_settings(), &limits()).expect("buildable");
        assert_eq!(pod.metadata.name.as_deref(), Some("hello-sandbox-2"), "derived from the status");
    }

    #[test]
    fn shortening_never_leaves_a_dot_before_the_hash() {
        let name = format!("{}.{}", "a".repeat(45), "b".repeat(30));
        assert!(!pod_name(&name).contains(".-"));
    }

    #[test]
    fn the_pod_is_owned_by_its_execution_and_labelled() {
        let pod = build("def main(): return {}");
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "PythonExecution");
        assert_eq!(owner.name, "hello");
        assert_eq!(owner.uid, "uid-hello");
        assert_eq!(owner.controller, Some(true));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_NAME], "pyexec");
        assert_eq!(labels[LABEL_COMPONENT], "sandbox");
        assert_eq!(labels[LABEL_EXECUTION], "hello");
        assert_eq!(labels[LABEL_STATE], STATE_CLAIMED);
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn every_sandbox_pod_waits_for_its_job_on_stdin_and_carries_none() {
        let cold = build("def main(): return {'secret': '$$'}");
        let warm = build_pool_pod("default", &pod_settings(), &limits(), &["pandas".into()], Duration::from_secs(660));
        for pod in [&cold, &warm] {
            let container = &pod.spec.as_ref().expect("spec").containers[0];
            assert_eq!((container.stdin, container.stdin_once, container.tty), (Some(true), Some(true), Some(false)));
            let env = env_of(pod);
            assert_eq!(env["PYEXEC_JOB_ON_STDIN"], "true");
            assert!(
                !env.values().any(|value| value.contains("secret") || value.contains("main")),
                "no script in {env:?}"
            );
            assert!(pod.metadata.annotations.is_none());
        }
        assert_eq!(env_of(&cold)["PYEXEC_PRELOAD_MODULES"], "", "the cold pod's job is already waiting");
        assert_eq!(env_of(&warm)["PYEXEC_PRELOAD_MODULES"], "pandas");
    }

    #[test]
    fn a_pool_pod_is_labelled_with_its_kind_and_the_pool_reads_it_back() {
        let lifetime = Duration::from_secs(660);
        let plain = build_pool_pod("default", &pod_settings(), &limits(), &[], lifetime);
        let preloaded = build_pool_pod("default", &pod_settings(), &limits(), &["pandas".into()], lifetime);
        assert_eq!(plain.labels()[LABEL_POOL_KIND], "plain");
        assert_eq!(preloaded.labels()[LABEL_POOL_KIND], "preloaded");
        assert_eq!(env_of(&plain)["PYEXEC_PRELOAD_MODULES"], "", "a plain pod imports nothing ahead");
        use crate::controller::warm_pods::claim::kind_of;
        assert_eq!(kind_of(&plain), Kind::Plain);
        assert_eq!(kind_of(&preloaded), Kind::Preloaded);
        let mut older = preloaded.clone();
        older.labels_mut().remove(LABEL_POOL_KIND);
        assert_eq!(kind_of(&older), Kind::Preloaded, "a pod from before the label is a preloaded one");
    }

    #[test]
    fn a_pool_pod_is_unowned_warming_and_lives_for_its_idle_time_and_a_job() {
        let pod = build_pool_pod("sandboxes", &pod_settings(), &limits(), &[], Duration::from_secs(660));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some(POOL_POD_PREFIX));
        assert_eq!(pod.metadata.name, None);
        assert_eq!(pod.metadata.namespace.as_deref(), Some("sandboxes"));
        assert_eq!(pod.metadata.owner_references, None);
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_STATE], STATE_WARMING);
        assert!(!labels.contains_key(LABEL_EXECUTION));
        assert_eq!(pod.spec.expect("spec").active_deadline_seconds, Some(660 + DEADLINE_MARGIN_SECONDS));
    }

    #[test]
    fn the_pod_runs_once_without_token_links_or_host_namespaces() {
        let pod = build("def main(): return {}");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.host_network, Some(false));
        assert_eq!(spec.dns_policy.as_deref(), Some("None"));
        let dns = spec.dns_config.clone().expect("a resolver of its own");
        assert_eq!(dns.nameservers, Some(vec!["127.0.0.1".to_string()]));
        assert_eq!((dns.searches, dns.options), (None, None));
        assert_eq!(spec.host_pid, Some(false));
        assert_eq!(spec.host_ipc, Some(false));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.active_deadline_seconds, Some(10 + DEADLINE_MARGIN_SECONDS));
        let container = &spec.containers[0];
        assert_eq!(container.command, Some(vec!["pyexec".to_string(), "sandbox".to_string()]));
        assert_eq!(container.termination_message_policy.as_deref(), Some("File"));
    }

    #[test]
    fn an_empty_runtime_class_is_left_out() {
        let settings = PodSettings { runtime_class: String::new(), without_gvisor: true, ..pod_settings() };
        let pod = build_pod(&execution("hello"), &settings, &limits()).expect("buildable");
        assert_eq!(pod.spec.expect("spec").runtime_class_name, None);
    }

    #[test]
    fn memory_requests_equal_limits_with_room_for_the_supervisor() {
        let pod = build("def main(): return {}");
        let resources = pod.spec.expect("spec").containers[0].resources.clone().expect("resources");
        let (requests, limits) = (resources.requests.expect("requests"), resources.limits.expect("limits"));
        assert_eq!(requests["memory"], limits["memory"]);
        assert_eq!(requests["ephemeral-storage"], limits["ephemeral-storage"]);
        assert_eq!(limits["cpu"].0, "1000m");
        assert_eq!(requests["cpu"].0, "200m");
        // Stdout, stderr and result (1 + 1 + 4 MiB) and 8 MiB of output files, held twice.
        let output = 2 * ((6 << 20) + crate::sandbox::files::output::report_bytes(8 << 20));
        let memory_mb = 512 + 64 + SUPERVISOR_MEMORY_MB + output.div_ceil(1 << 20);
        assert_eq!(limits["memory"].0, format!("{memory_mb}Mi"));
        assert!(limits.contains_key("ephemeral-storage"));
    }
}
