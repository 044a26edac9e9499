//! Mapping an envelope to the HTTP response of the contract (README.md, "Responses"): a pure
//! function, the one place where outcomes become statuses.

use axum::http::StatusCode;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::sandbox::envelope::ResultJson;
use crate::sandbox::{Envelope, Outcome};

/// A response body: its fields, with main()'s result written verbatim at the `result` key, so
/// that a large result is never copied into a tree of values.
pub struct ResponseBody<'a> {
    fields: Value,
    result: Option<&'a RawValue>,
}

impl ResponseBody<'_> {
    pub fn as_object_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.fields.as_object_mut()
    }
}

impl Serialize for ResponseBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (Some(fields), Some(result)) = (self.fields.as_object(), self.result) else {
            return self.fields.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            if key == "result" {
                map.serialize_entry(key, result)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// The status and JSON body for a finished execution.
pub fn to_http<'a>(id: &str, envelope: &'a Envelope, warnings: &[String]) -> (StatusCode, ResponseBody<'a>) {
    let (status, mut body) = match envelope.outcome {
        // The contract gives these two bodies exactly.
        Outcome::NoMain | Outcome::SyntaxError => {
            (StatusCode::BAD_REQUEST, json!({ "error": envelope.error.clone().unwrap_or_default() }))
        }
        Outcome::SandboxFailure => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": "The sandbox failed to run the script; the service log has the details",
                "id": id,
            }),
        ),
        Outcome::InvalidMain | Outcome::NotADict | Outcome::Unserializable | Outcome::ResultTooLarge => {
            (StatusCode::BAD_REQUEST, full_body(id, envelope))
        }
        Outcome::Success
        | Outcome::Exception
        | Outcome::Exited
        | Outcome::Timeout
        | Outcome::MemoryLimit
        | Outcome::Signaled
        | Outcome::NoResult => (StatusCode::OK, full_body(id, envelope)),
    };
    if !warnings.is_empty() {
        if let Some(map) = body.as_object_mut() {
            map.insert("warnings".into(), json!(warnings));
        }
    }
    (status, ResponseBody { fields: body, result: envelope.result.as_ref().map(ResultJson::json) })
}

fn full_body(id: &str, envelope: &Envelope) -> Value {
    let mut body = Map::new();
    // A placeholder that keeps the key's place: `ResponseBody` writes main()'s result there.
    body.insert("result".into(), Value::Null);
    body.insert("stdout".into(), json!(envelope.stdout));
    body.insert("stderr".into(), json!(envelope.stderr));
    body.insert("returncode".into(), json!(envelope.returncode));
    if let Some(error) = &envelope.error {
        body.insert("error".into(), json!(error));
    }
    body.insert("outcome".into(), json!(envelope.outcome.as_str()));
    body.insert("id".into(), json!(id));
    body.insert("duration_ms".into(), json!(envelope.duration_ms));
    body.insert("stdout_truncated".into(), json!(envelope.stdout_truncated));
    body.insert("stderr_truncated".into(), json!(envelope.stderr_truncated));
    // Only when the script left files: a response without them is exactly what it always was.
    if !envelope.files.is_empty() {
        body.insert("files".into(), json!(envelope.files));
    }
    if envelope.files_truncated {
        body.insert("files_truncated".into(), json!(true));
        body.insert("files_omitted".into(), json!(envelope.files_omitted));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
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
        let (_, body) = super::to_http("x", &e, &["w".to_string()]);
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
        assert_eq!(text("x", &envelope(Outcome::SyntaxError), &["w".to_string()]), (400, r#"{"error":"boom","warnings":["w"]}"#.to_string()));
        assert_eq!(
            text("x", &envelope(Outcome::SandboxFailure), &[]),
            (500, r#"{"error":"The sandbox failed to run the script; the service log has the details","id":"x"}"#.to_string())
        );
    }

    #[test]
    fn warnings_are_added() {
        let (_, body) = to_http("x", &envelope(Outcome::Exception), &["w".to_string()]);
        assert_eq!(body["warnings"], json!(["w"]));
    }
}
