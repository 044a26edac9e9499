//! Mapping an envelope to the HTTP response of the contract (README.md, "Responses"): a pure
//! function, the one place where outcomes become statuses. The bodies are types, serialised as
//! they are and described by the OpenAPI document (`server::openapi`) from their schemas.

use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

use super::error::ErrorBody;
use crate::sandbox::envelope::ResultJson;
use crate::sandbox::files::OutputFile;
use crate::sandbox::{Envelope, Outcome};

/// What a script's run answers: the run, or why there is none to show.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "ExecuteAnswer")]
pub enum ResponseBody<'a> {
    /// The script ran: 200, or 400 when main() cannot be called or its value cannot be sent.
    Run(ExecuteResponse<'a>),
    /// No run to show: no main() or a syntax error (400), or the sandbox failed (500).
    Refused(ErrorBody),
}

/// One run of a script: what main() returned, what the script printed, how it ended.
// Borrowed from the envelope, so that its output is never copied on the way out.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ExecuteResponse")]
pub struct ExecuteResponse<'a> {
    /// main()'s dict, when it returned one that could be sent; null otherwise.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub result: Option<&'a RawValue>,
    /// What the script printed, cut at the stdout limit.
    pub stdout: &'a str,
    /// What the script wrote to stderr (tracebacks), cut at the stderr limit.
    pub stderr: &'a str,
    /// The script's exit code, or minus the signal that killed it.
    pub returncode: i32,
    /// One line saying what went wrong; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub error: Option<&'a str>,
    /// What the run amounts to, in one word.
    pub outcome: Outcome,
    /// The execution's id, as the service's log names it.
    pub id: &'a str,
    /// Wall-clock time of the run, sandbox set-up included, in milliseconds.
    pub duration_ms: u64,
    /// Whether stdout was cut at its limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at its limit.
    pub stderr_truncated: bool,
    /// Regular files the script left in output/ (and open matplotlib figures as
    /// figure-<n>.png); present only when there are some.
    #[serde(skip_serializing_if = "<[OutputFile]>::is_empty")]
    pub files: &'a [OutputFile],
    /// Present, true, when files of output/ were left out.
    #[serde(skip_serializing_if = "is_false")]
    pub files_truncated: bool,
    /// The names left out (a folder's ends with '/'); present with `files_truncated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub files_omitted: Option<&'a [String]>,
    /// How the request body was read, when the caller should know (it was not valid JSON).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// The message of a sandbox that failed: its details are in the service's log, never sent.
const SANDBOX_FAILED: &str = "The sandbox failed to run the script; the service log has the details";

/// The status and JSON body for a finished execution.
pub fn to_http<'a>(id: &'a str, envelope: &'a Envelope, warnings: &'a [String]) -> (StatusCode, ResponseBody<'a>) {
    let refused = |error: String, id: Option<String>| {
        ResponseBody::Refused(ErrorBody { error, id, warnings: warnings.to_vec(), ..Default::default() })
    };
    match envelope.outcome {
        // The contract gives these two bodies exactly.
        Outcome::NoMain | Outcome::SyntaxError => {
            (StatusCode::BAD_REQUEST, refused(envelope.error.clone().unwrap_or_default(), None))
        }
        Outcome::SandboxFailure => {
            (StatusCode::INTERNAL_SERVER_ERROR, refused(SANDBOX_FAILED.to_string(), Some(id.to_string())))
        }
        Outcome::InvalidMain | Outcome::NotADict | Outcome::Unserializable | Outcome::ResultTooLarge => {
            (StatusCode::BAD_REQUEST, ResponseBody::Run(run(id, envelope, warnings)))
        }
        Outcome::Success
        | Outcome::Exception
        | Outcome::Exited
        | Outcome::Timeout
        | Outcome::MemoryLimit
        | Outcome::Signaled
        | Outcome::NoResult => (StatusCode::OK, ResponseBody::Run(run(id, envelope, warnings))),
    }
}

fn run<'a>(id: &'a str, envelope: &'a Envelope, warnings: &'a [String]) -> ExecuteResponse<'a> {
    ExecuteResponse {
        result: envelope.result.as_ref().map(ResultJson::json),
        stdout: &envelope.stdout,
        stderr: &envelope.stderr,
        returncode: envelope.returncode,
        error: envelope.error.as_deref(),
        outcome: envelope.outcome,
        id,
        duration_ms: envelope.duration_ms,
        stdout_truncated: envelope.stdout_truncated,
        stderr_truncated: envelope.stderr_truncated,
        // Only when the script left files: a response without them is exactly what it always was.
        files: &envelope.files,
        files_truncated: envelope.files_truncated,
        files_omitted: envelope.files_truncated.then_some(envelope.files_omitted.as_slice()),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// The status and the body as a client reads it.
    fn to_http(id: &str, envelope: &Envelope, warnings: &[String]) -> (StatusCode, Value) {
        let (status, body) = super::to_http(id, envelope, warnings);
        (status, serde_json::to_value(&body).expect("a JSON body"))
    }

    fn envelope(outcome: Outcome) -> Envelope {
        Envelope {
            outcome,
            result: None,
            stdout: "out\n".into(),
            stderr: String::new(),
            returncode: 1,
            error: Some("boom".into()),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 12,
            files: Vec::new(),
            files_truncated: false,
            files_omitted: Vec::new(),
        }
    }

    #[test]
    fn success_carries_the_documented_fields() {
        let mut e = envelope(Outcome::Success);
        e.result = Some(serde_json::from_str(r#"{"a": 1}"#).expect("json"));
        e.returncode = 0;
        e.error = None;
        let (status, body) = to_http("x", &e, &[]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["result"], json!({"a": 1}));
        assert_eq!(body["stdout"], "out\n");
        assert_eq!(body["returncode"], 0);
        assert!(body.get("error").is_none());
    }

    #[test]
    fn the_result_is_written_verbatim_first() {
        let mut e = envelope(Outcome::Success);
        let raw = RawValue::from_string(r#"{"z": 1, "a": [1.0, 1e+16]}"#.into()).expect("json");
        e.result = Some(ResultJson::from_raw(&raw).expect("an object"));
        let warnings = ["w".to_string()];
        let (_, body) = super::to_http("x", &e, &warnings);
        let text = serde_json::to_string(&body).expect("json");
        assert!(text.starts_with(r#"{"result":{"z": 1, "a": [1.0, 1e+16]},"stdout":"out\n","#), "{text}");
        assert!(text.ends_with(r#","warnings":["w"]}"#), "{text}");
    }

    #[test]
    fn output_files_and_what_was_left_out_are_added_only_when_there_are_some() {
        let mut e = envelope(Outcome::Success);
        let (_, body) = to_http("x", &e, &[]);
        let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert!(!keys.iter().any(|key| key.starts_with("files")), "{keys:?}");
        e.files = vec![crate::sandbox::files::OutputFile {
            name: "a.png".to_string().try_into().expect("a name"),
            size: 1,
            media_type: "image/png".into(),
            content_base64: "AA==".into(),
        }];
        e.files_truncated = true;
        e.files_omitted = vec!["big.bin".into()];
        let (_, body) = to_http("x", &e, &[]);
        assert_eq!(
            body["files"],
            json!([{"name": "a.png", "size": 1, "media_type": "image/png", "content_base64": "AA=="}])
        );
        assert_eq!((&body["files_truncated"], &body["files_omitted"]), (&json!(true), &json!(["big.bin"])));
    }

    #[test]
    fn no_main_is_exactly_the_contract_body() {
        let mut e = envelope(Outcome::NoMain);
        e.error = Some("Script must contain a 'main()' function.".into());
        let (status, body) = to_http("x", &e, &[]);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"error": "Script must contain a 'main()' function."}));
    }

    #[test]
    fn runtime_failures_are_200_with_a_null_result() {
        for outcome in [Outcome::Exception, Outcome::Timeout, Outcome::MemoryLimit, Outcome::Exited] {
            let (status, body) = to_http("x", &envelope(outcome), &[]);
            assert_eq!(status, StatusCode::OK, "{outcome:?}");
            assert_eq!(body["result"], Value::Null);
            assert_eq!(body["error"], "boom");
        }
    }

    #[test]
    fn a_non_dict_is_400_with_output() {
        let (status, body) = to_http("x", &envelope(Outcome::NotADict), &[]);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["stdout"], "out\n");
    }

    /// The exact text of every shape an answer takes: clients and the contract's examples read
    /// these bytes, so a change to the types behind them must leave them as they are.
    #[test]
    fn every_shape_of_answer_is_written_byte_for_byte() {
        let text = |id: &str, e: &Envelope, warnings: &[String]| {
            let (status, body) = super::to_http(id, e, warnings);
            (status.as_u16(), serde_json::to_string(&body).expect("json"))
        };
        let mut e = envelope(Outcome::Success);
        e.result = Some(serde_json::from_str(r#"{"b": 2, "a": 1}"#).expect("json"));
        (e.returncode, e.error) = (0, None);
        assert_eq!(
            text("x", &e, &[]),
            (200, r#"{"result":{"b": 2, "a": 1},"stdout":"out\n","stderr":"","returncode":0,"outcome":"success","id":"x","duration_ms":12,"stdout_truncated":false,"stderr_truncated":false}"#.to_string())
        );
        let mut e = envelope(Outcome::Exception);
        e.files = vec![crate::sandbox::files::OutputFile {
            name: "a.png".to_string().try_into().expect("a name"),
            size: 1,
            media_type: "image/png".into(),
            content_base64: "AA==".into(),
        }];
        e.stderr_truncated = true;
        assert_eq!(
            text("x", &e, &["w".to_string()]),
            (200, r#"{"result":null,"stdout":"out\n","stderr":"","returncode":1,"error":"boom","outcome":"exception","id":"x","duration_ms":12,"stdout_truncated":false,"stderr_truncated":true,"files":[{"name":"a.png","size":1,"media_type":"image/png","content_base64":"AA=="}],"warnings":["w"]}"#.to_string())
        );
        let mut e = envelope(Outcome::NotADict);
        (e.files_truncated, e.files_omitted) = (true, vec!["big.bin".into(), "dir/".into()]);
        assert_eq!(
            text("x", &e, &[]),
            (400, r#"{"result":null,"stdout":"out\n","stderr":"","returncode":1,"error":"boom","outcome":"not_a_dict","id":"x","duration_ms":12,"stdout_truncated":false,"stderr_truncated":false,"files_truncated":true,"files_omitted":["big.bin","dir/"]}"#.to_string())
        );
        assert_eq!(
            text("x", &envelope(Outcome::SyntaxError), &["w".to_string()]),
            (400, r#"{"error":"boom","warnings":["w"]}"#.to_string())
        );
        assert_eq!(
            text("x", &envelope(Outcome::SandboxFailure), &[]),
            (
                500,
                r#"{"error":"The sandbox failed to run the script; the service log has the details","id":"x"}"#
                    .to_string()
            )
        );
    }

    #[test]
    fn warnings_are_added() {
        let (_, body) = to_http("x", &envelope(Outcome::Exception), &["w".to_string()]);
        assert_eq!(body["warnings"], json!(["w"]));
    }
}
