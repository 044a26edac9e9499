//! How the job document (`sandbox::Job`: the script and its resolved limits, as JSON) reaches
//! `pyexec sandbox` in the pod: in an environment variable or, when large, in an annotation read
//! as a file.

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar, ObjectFieldSelector, Volume, VolumeMount,
};

use super::{env_var, BuildError};
use crate::sandbox::Job;

/// Job documents up to this size travel in PYEXEC_JOB: Linux refuses to exec with a single
/// environment string above 128 KiB (MAX_ARG_STRLEN).
pub const MAX_ENV_JOB_BYTES: usize = 120 * 1024;
/// Larger ones travel in an annotation, read as a file; a pod's annotations hold 256 KiB in all.
pub const MAX_ANNOTATION_JOB_BYTES: usize = 250 * 1024;
const JOB_DIR: &str = "/etc/pyexec";
const JOB_FILE: &str = "job.json";
/// Annotation carrying a job document too large for an environment variable.
pub const JOB_ANNOTATION: &str = "pyexec.dev/job";

/// What the pod carries for its job document.
pub(super) struct Delivery {
    /// PYEXEC_JOB with the document, or PYEXEC_JOB_FILE naming where it is mounted.
    pub env: EnvVar,
    /// The annotation holding a document too large for the environment.
    pub annotation: Option<(String, String)>,
    /// The volume that turns that annotation into a file, and its mount.
    pub volume: Option<(Volume, VolumeMount)>,
}

/// The job document in the environment when it fits there, else in an annotation read as a file;
/// refused when it fits in neither.
pub(super) fn deliver(job: &Job) -> Result<Delivery, BuildError> {
    // A String and integers always serialise.
    let job = serde_json::to_string(job).unwrap_or_default();
    if job.len() <= MAX_ENV_JOB_BYTES {
        return Ok(Delivery { env: env_var("PYEXEC_JOB", &escape_env_value(&job)), annotation: None, volume: None });
    }
    if job.len() > MAX_ANNOTATION_JOB_BYTES {
        return Err(BuildError::ScriptTooLarge { bytes: job.len(), max: MAX_ANNOTATION_JOB_BYTES });
    }
    let mount =
        VolumeMount { name: "job".into(), mount_path: JOB_DIR.into(), read_only: Some(true), ..Default::default() };
    Ok(Delivery {
        env: env_var("PYEXEC_JOB_FILE", &format!("{JOB_DIR}/{JOB_FILE}")),
        annotation: Some((JOB_ANNOTATION.to_string(), job)),
        volume: Some((job_volume(), mount)),
    })
}

/// An environment value the kubelet passes on unchanged: it expands `$(NAME)` and reduces `$$`
/// to `$` in env values, so every `$` is written `$$`.
pub fn escape_env_value(value: &str) -> String {
    value.replace('$', "$$")
}

fn job_volume() -> Volume {
    Volume {
        name: "job".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: JOB_FILE.into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{JOB_ANNOTATION}']"),
                    api_version: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, env_of};
    use super::*;
    use crate::controller::pod::build_pod;
    use crate::controller::testing::{execution, limits, pod_settings};
    use k8s_openapi::api::core::v1::Pod;

    /// What the kubelet does to an env value (k8s.io/kubernetes third_party/forked/golang/
    /// expansion) when PYEXEC_ISOLATION is defined before it: `$$` becomes `$`, `$(NAME)` of a
    /// defined name becomes its value, anything else stays as it is.
    fn kubelet_expand(value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|r| r.split_once(')')) {
                match name {
                    "PYEXEC_ISOLATION" => out.push_str("gvisor"),
                    other => out.push_str(&format!("$({other})")),
                }
                rest = tail;
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn the_kubelet_model_expands_what_escaping_must_protect() {
        assert_eq!(kubelet_expand("a$(PYEXEC_ISOLATION)b$$c$(UNSET)$"), "agvisorb$c$(UNSET)$");
    }

    fn job_of(pod: &Pod) -> Job {
        let value = kubelet_expand(&env_of(pod)["PYEXEC_JOB"]);
        serde_json::from_str(&value).expect("the env value is a job document")
    }

    #[test]
    fn the_script_and_limits_travel_as_one_job_document() {
        let pod = build("def main(): return {}");
        assert_eq!(job_of(&pod), Job { script: "def main(): return {}".into(), limits: limits() });
        let env = env_of(&pod);
        assert_eq!(env["PYEXEC_TERMINATION_LOG"], "/dev/termination-log");
        assert!(!env.keys().any(|name| name.contains("MEMORY") || name.contains("TIMEOUT")), "no limit by name");
    }

    #[test]
    fn dollars_in_the_script_arrive_byte_for_byte() {
        let script = "def main():\n    return {'a': '$(PYEXEC_ISOLATION)', 'b': '$$', 'c': '$$(X)', 'd': '$'}\n";
        let pod = build(script);
        assert_eq!(job_of(&pod).script, script);
        assert!(env_of(&pod)["PYEXEC_JOB"].contains("$$(PYEXEC_ISOLATION)"), "escaped in the pod spec");
    }

    #[test]
    fn escaping_survives_the_kubelet_for_any_run_of_dollars() {
        for value in ["", "$", "$$", "$$$", "a$(PYEXEC_ISOLATION)c", "$$(PYEXEC_ISOLATION)", "$(", "$)", "x$"] {
            assert_eq!(kubelet_expand(&escape_env_value(value)), value, "{value:?}");
        }
    }

    #[test]
    fn a_job_too_large_for_the_environment_travels_in_an_annotation() {
        let script = format!("def main(): return {{}}\n#{}", "x".repeat(MAX_ENV_JOB_BYTES));
        let pod = build(&script);
        let env = env_of(&pod);
        assert!(!env.contains_key("PYEXEC_JOB"));
        assert_eq!(env["PYEXEC_JOB_FILE"], "/etc/pyexec/job.json");
        let annotation = &pod.metadata.annotations.as_ref().expect("annotations")[JOB_ANNOTATION];
        let job: Job = serde_json::from_str(annotation).expect("a job document");
        assert_eq!(job, Job { script, limits: limits() });
    }

    #[test]
    fn a_script_too_large_for_an_annotation_is_refused() {
        let mut execution = execution("hello");
        execution.spec.script = "x".repeat(MAX_ANNOTATION_JOB_BYTES + 1);
        let err = build_pod(&execution, &pod_settings(), &limits()).expect_err("too large");
        assert!(matches!(err, BuildError::ScriptTooLarge { .. }));
    }
}
