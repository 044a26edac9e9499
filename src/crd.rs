//! The `PythonExecution` custom resource: the Rust types are the source of truth, `pyexec crd`
//! prints the CustomResourceDefinition generated from them, and `crds/` holds that output.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sandbox::files::OutputFile;
use crate::sandbox::{Envelope, Outcome, RequestedLimits};

/// Largest script a PythonExecution holds, in characters: the object, its status included, must
/// fit in etcd's request limit (`pod_limits::OBJECT_BUDGET_BYTES`).
pub const MAX_SCRIPT_CHARS: usize = 240 * 1024;

/// Most bytes a PythonExecution's spec may take as JSON (the script, its limits and its input
/// files, base64 at 4/3 of the bytes it holds): what the object may take less at least a third
/// of a MiB for the status, which holds the output.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// A Python script to run once in a sandbox pod; the controller writes what `main()` returned,
/// with the script's output, into the status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pyexec.dev",
    version = "v1alpha1",
    kind = "PythonExecution",
    namespaced,
    status = "PythonExecutionStatus",
    shortname = "pyx",
    derive = "PartialEq",
    doc = "A Python script run once in a sandbox pod; the status holds what main() returned.",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "ReturnCode", "type": "integer", "jsonPath": ".status.returncode",
        "description": "Exit code of the script (minus the signal that killed it)"}"#,
    printcolumn = r#"{"name": "Duration-ms", "type": "integer", "jsonPath": ".status.durationMs",
        "description": "Wall-clock time of the sandbox run, in milliseconds"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Outcome", "type": "string", "jsonPath": ".status.outcome", "priority": 1}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable; create a new PythonExecution instead"))]
#[serde(rename_all = "camelCase")]
pub struct PythonExecutionSpec {
    /// The Python script. It must define main() returning a dict.
    #[schemars(length(max = 245760))]
    pub script: String,
    /// Limits for this run, the HTTP API's `limits`: each one left out takes the controller's
    /// default; one above the controller's maximum is refused, not lowered: the execution fails
    /// with reason LimitsRefused and a message naming the limit, as the HTTP API answers 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RequestedLimits>,
    /// Files the script finds read-only in its working directory, by name: each one text, or
    /// `{"base64": "…"}` for bytes, as the HTTP API's `files`. The controller refuses names and
    /// contents the HTTP API would refuse (reason FilesRefused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "file_map")]
    pub files: Option<Map<String, Value>>,
    /// Seconds after the execution finishes before the controller deletes it; absent keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Where an execution is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted; the sandbox pod is being created, scheduled or started.
    Pending,
    /// The sandbox pod runs the script.
    Running,
    /// main() returned a dict; `result` holds it.
    Succeeded,
    /// The script failed (`outcome` and `error` say how) or its pod could not run it.
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// What the controller observed; the result fields are the HTTP response's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PythonExecutionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// main()'s dict, when it returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub result: Option<Map<String, Value>>,
    /// What the script printed, cut at the stdout limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// What the script wrote to stderr (tracebacks), cut at the stderr limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Exit code of the script, or minus the signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returncode: Option<i32>,
    /// One line saying what went wrong; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run's outcome in one word (success, exception, timeout, no_main, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Whether stdout was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_truncated: Option<bool>,
    /// Whether stderr was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_truncated: Option<bool>,
    /// Wall-clock time of the sandbox run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The files the script left in its output folder, as many as the status holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<OutputFile>>,
    /// Whether output files were left out (past the output-files limit, not regular files, or
    /// beyond what the status holds); `filesOmitted` names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_truncated: Option<bool>,
    /// The names of the output files left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<Vec<String>>,
    /// The sandbox pod: created for this execution, or claimed from the warm pool. Replaced only
    /// when that pod proves it ended before any job reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Whether the job was handed to the pod: `Awaiting` until the controller writes it,
    /// `Started` from just before (it is never written to a second pod after that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Pods this execution was given that ended before its job reached them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_replaced: Option<u32>,
    /// When the controller created the sandbox pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the execution finished; the TTL counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `Running` and `Finished`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How far the job got on its way to the pod named in the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Delivery {
    /// The pod waits; the job has not been written.
    Awaiting,
    /// The controller began writing the job: it may have reached the pod.
    Started,
}

/// main()'s dict is any JSON object: the API server must keep its fields as they are.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Input files: an object of names to a string or `{"base64": …}`; the controller reads them with
/// the HTTP API's rules (a structural schema cannot say "string or object").
fn file_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 1024,
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
    })
}

impl PythonExecutionSpec {
    /// The bytes the spec takes as JSON, to hold it to MAX_SPEC_BYTES.
    pub fn json_bytes(&self) -> usize {
        // Strings, integers and JSON values always serialise.
        serde_json::to_vec(self).map_or(usize::MAX, |bytes| bytes.len())
    }
}

impl PythonExecution {
    /// The phase, Pending when the controller has not written a status yet.
    pub fn phase(&self) -> Phase {
        self.status.as_ref().and_then(|s| s.phase).unwrap_or(Phase::Pending)
    }

    pub fn is_finished(&self) -> bool {
        self.phase().is_finished()
    }
}

impl PythonExecutionStatus {
    /// The envelope of a finished execution: the same record the local placement produces, so
    /// the HTTP layer answers identically. None while the execution runs.
    pub fn envelope(&self) -> Option<Envelope> {
        if !self.phase?.is_finished() {
            return None;
        }
        let outcome = self
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_value::<Outcome>(Value::String(o.to_string())).ok())
            .unwrap_or(Outcome::SandboxFailure);
        Some(Envelope {
            outcome,
            result: self.result.as_ref().and_then(crate::sandbox::envelope::ResultJson::from_map),
            stdout: self.stdout.clone().unwrap_or_default(),
            stderr: self.stderr.clone().unwrap_or_default(),
            returncode: self.returncode.unwrap_or(1),
            error: self.error.clone(),
            stdout_truncated: self.stdout_truncated.unwrap_or(false),
            stderr_truncated: self.stderr_truncated.unwrap_or(false),
            duration_ms: self.duration_ms.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0),
            files: self.files.clone().unwrap_or_default(),
            files_truncated: self.files_truncated.unwrap_or(false),
            files_omitted: self.files_omitted.clone().unwrap_or_default(),
        })
    }
}

/// Why the CRD could not be printed.
#[derive(Debug, thiserror::Error)]
#[error("serialising the CustomResourceDefinition as YAML")]
pub struct CrdError(#[source] serde_saphyr::SerializeError);

/// The CustomResourceDefinition as YAML, exactly as `crds/pythonexecution.yaml` holds it.
pub fn crd_yaml() -> Result<String, CrdError> {
    let yaml = serde_saphyr::to_string(&PythonExecution::crd()).map_err(CrdError)?;
    Ok(format!("# Generated by `pyexec crd` from src/crd.rs; do not edit.\n{yaml}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd_json() -> Value {
        serde_json::to_value(PythonExecution::crd()).expect("the CRD serialises")
    }

    #[test]
    fn the_crd_is_namespaced_v1alpha1_with_short_name_pyx() {
        let crd = crd_json();
        assert_eq!(crd["metadata"]["name"], "pythonexecutions.pyexec.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["pyx"]));
        assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
        assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}));
    }

    #[test]
    fn the_spec_is_immutable_and_the_script_bounded() {
        let crd = crd_json();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-validations"][0]["rule"], "self == oldSelf");
        assert_eq!(spec["properties"]["script"]["maxLength"], json!(MAX_SCRIPT_CHARS));
    }

    #[test]
    fn the_result_keeps_unknown_fields() {
        let crd = crd_json();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert_eq!(status["properties"]["result"]["x-kubernetes-preserve-unknown-fields"], true);
    }

    #[test]
    fn printer_columns_show_phase_return_code_duration_and_age() {
        let crd = crd_json();
        let names: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Phase", "ReturnCode", "Duration-ms", "Age", "Outcome"]);
    }

    #[test]
    fn a_running_status_has_no_envelope() {
        let status = PythonExecutionStatus { phase: Some(Phase::Running), ..Default::default() };
        assert_eq!(status.envelope(), None);
    }

    #[test]
    fn a_finished_status_maps_back_to_the_envelope_it_came_from() {
        let status = PythonExecutionStatus {
            phase: Some(Phase::Failed),
            stdout: Some("hi\n".into()),
            stderr: Some("Traceback ...".into()),
            returncode: Some(1),
            error: Some("ValueError: x".into()),
            outcome: Some("exception".into()),
            stdout_truncated: Some(true),
            duration_ms: Some(42),
            ..Default::default()
        };
        let envelope = status.envelope().expect("finished");
        assert_eq!(envelope.outcome, Outcome::Exception);
        assert_eq!(envelope.stdout, "hi\n");
        assert_eq!(envelope.returncode, 1);
        assert!(envelope.stdout_truncated);
        assert!(!envelope.stderr_truncated);
        assert_eq!(envelope.duration_ms, 42);
    }

    #[test]
    fn an_unknown_outcome_reads_as_a_sandbox_failure() {
        let status =
            PythonExecutionStatus { phase: Some(Phase::Failed), outcome: Some("novel".into()), ..Default::default() };
        assert_eq!(status.envelope().expect("finished").outcome, Outcome::SandboxFailure);
    }
}
