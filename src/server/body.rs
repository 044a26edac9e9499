//! Reading a POST /execute body: strict JSON, the not-quite-JSON `{"script": "…"}` of the Python
//! Code Execution Service's documented examples, or a raw script sent as text/x-python. Pure functions of the content type and the bytes.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::distinct_keys::{self, JsonError};
use crate::sandbox::files::{InputError, InputFiles};
use crate::sandbox::RequestedLimits;

/// What a caller asked to run: the JSON body of POST /execute and POST /executions.
// Its schema is the one the OpenAPI document gives; `FIELDS` are the names the body is read by.
#[derive(Debug, PartialEq, JsonSchema)]
#[schemars(rename = "ExecuteRequest")]
pub struct ScriptRequest {
    /// Python source defining main().
    pub script: String,
    // The limits' own schema describes them.
    #[schemars(default, with = "LimitsInBody")]
    pub limits: RequestedLimits,
    /// Files the script finds read-only in its working directory, by plain file name (no '/',
    /// not '.' or '..', at most 255 bytes): text, or {"base64": ...}. At most
    /// --max-input-files files of --max-input-files-bytes in all (local executor).
    // Read as sent; `InputFiles::check` holds them to the server's caps once the limits are
    // resolved.
    #[schemars(default)]
    pub files: InputFiles,
    /// Things the caller should know about how the body was read.
    #[schemars(skip)]
    pub warnings: Vec<String>,
}

/// The names of a JSON body's fields, in `ScriptRequest`'s order; any other field is ignored.
pub const FIELDS: [&str; 3] = ["script", "limits", "files"];

/// The schema of a body's `limits`: `RequestedLimits`' own, under the snake_case names the HTTP
/// API documents (the type's are Kubernetes' camelCase; it reads both).
pub struct LimitsInBody;

impl JsonSchema for LimitsInBody {
    fn schema_name() -> Cow<'static, str> {
        "Limits".into()
    }

    // Written out where it is used: the request's `limits` is the whole schema, not a reference.
    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = RequestedLimits::json_schema(generator);
        schema.insert(
            "description".into(),
            "Each limit may be lowered below the server's default, or raised up to its maximum; above it, 400".into(),
        );
        if let Some(properties) = schema.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
            *properties =
                std::mem::take(properties).into_iter().map(|(name, value)| (snake_case(&name), value)).collect();
        }
        schema
    }
}

fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// Why a body could not be read; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    UnsupportedType(String),
    #[error("{0}")]
    Invalid(String),
    #[error("\"limits\" is invalid: {0}")]
    InvalidLimits(#[source] serde_json::Error),
    #[error("{0}")]
    InvalidFiles(#[from] InputError),
}

const HOW_TO: &str = "send {\"script\": \"def main(): ...\"} with Content-Type: application/json, \
or the script itself with Content-Type: text/x-python";

/// Which reader a content type selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    Python,
}

/// The reader for a Content-Type, or why there is none: decided before the body is read.
pub fn kind_of(content_type: Option<&str>) -> Result<Kind, BodyError> {
    let essence =
        content_type.map(|value| value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).unwrap_or_default();
    match essence.as_str() {
        "application/json" => Ok(Kind::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(Kind::Json),
        "text/x-python" | "text/x-script.python" | "application/x-python" | "text/plain" => Ok(Kind::Python),
        "" => Err(BodyError::UnsupportedType(format!("Content-Type is missing: {HOW_TO}"))),
        other => Err(BodyError::UnsupportedType(format!("Content-Type {other} is not supported: {HOW_TO}"))),
    }
}

/// Reads a body. `tolerant` accepts the documented examples' unescaped `{"script": "…"}` bodies.
pub fn parse(content_type: Option<&str>, body: &[u8], tolerant: bool) -> Result<ScriptRequest, BodyError> {
    read(kind_of(content_type)?, body, tolerant)
}

/// Reads a body of a known kind.
pub fn read(kind: Kind, body: &[u8], tolerant: bool) -> Result<ScriptRequest, BodyError> {
    match kind {
        Kind::Python => {
            let script = std::str::from_utf8(body).map_err(|e| {
                BodyError::Invalid(format!("The script is not valid UTF-8 (at byte {})", e.valid_up_to()))
            })?;
            Ok(ScriptRequest::plain(script.to_string(), vec![]))
        }
        Kind::Json => parse_json(body, tolerant),
    }
}

fn parse_json(body: &[u8], tolerant: bool) -> Result<ScriptRequest, BodyError> {
    let strict_error = match distinct_keys::from_slice(body) {
        Ok(value) => return from_value(value),
        // Valid JSON that says two things is never guessed at.
        Err(JsonError::DuplicateKey(err)) => {
            return Err(BodyError::Invalid(format!("The request body is ambiguous ({err}): send each key once")))
        }
        Err(JsonError::Syntax(err)) => err,
    };
    if tolerant {
        if let Some(script) = std::str::from_utf8(body).ok().and_then(lenient_script) {
            let warning = format!(
                "The request body is not valid JSON ({strict_error}); it was read as {{\"script\": \"…\"}} \
                 with everything between the first and last quote taken as the script. Escape quotes \
                 inside the script as \\\" or send it with Content-Type: text/x-python."
            );
            return Ok(ScriptRequest::plain(script, vec![warning]));
        }
    }
    Err(BodyError::Invalid(format!("The request body is not valid JSON ({strict_error}): {HOW_TO}")))
}

fn from_value(value: serde_json::Value) -> Result<ScriptRequest, BodyError> {
    let serde_json::Value::Object(mut fields) = value else {
        return Err(BodyError::Invalid(format!("The request body must be a JSON object: {HOW_TO}")));
    };
    let [script, limits, files] = FIELDS.map(|name| fields.remove(name));
    let limits = match limits {
        None | Some(serde_json::Value::Null) => RequestedLimits::default(),
        Some(limits) => serde_json::from_value(limits).map_err(BodyError::InvalidLimits)?,
    };
    let files = match files {
        None | Some(serde_json::Value::Null) => InputFiles::default(),
        Some(files) => InputFiles::from_json(files)?,
    };
    let script = match script {
        None => return Err(BodyError::Invalid(format!("The request body has no \"script\" field: {HOW_TO}"))),
        Some(serde_json::Value::String(script)) => script,
        Some(other) => {
            return Err(BodyError::Invalid(format!(
                "\"script\" must be a string holding Python source, not {}",
                json_type(&other)
            )))
        }
    };
    Ok(ScriptRequest { script, limits, files, warnings: vec![] })
}

impl ScriptRequest {
    /// A script alone: default limits, no files.
    fn plain(script: String, warnings: Vec<String>) -> Self {
        ScriptRequest { script, limits: RequestedLimits::default(), files: InputFiles::default(), warnings }
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The script of a body shaped exactly `{"script": "…"}` that strict JSON refused: everything
/// between the opening `"script": "` and the final `"}`, JSON escapes decoded, any other
/// character kept as it is.
pub fn lenient_script(body: &str) -> Option<String> {
    let rest = body.trim().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"script\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let rest = rest.trim_end().strip_suffix('}')?.trim_end();
    let inner = rest.strip_suffix('"')?;
    Some(decode_escapes(inner))
}

fn decode_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('n') => push_escaped(&mut out, &mut chars, '\n'),
            Some('t') => push_escaped(&mut out, &mut chars, '\t'),
            Some('r') => push_escaped(&mut out, &mut chars, '\r'),
            Some('b') => push_escaped(&mut out, &mut chars, '\u{8}'),
            Some('f') => push_escaped(&mut out, &mut chars, '\u{c}'),
            Some('"') => push_escaped(&mut out, &mut chars, '"'),
            Some('\\') => push_escaped(&mut out, &mut chars, '\\'),
            Some('/') => push_escaped(&mut out, &mut chars, '/'),
            Some('u') => {
                let lookahead: String = chars.clone().skip(1).take(4).collect();
                match u16::from_str_radix(&lookahead, 16) {
                    Ok(unit) if lookahead.len() == 4 => {
                        chars.nth(4);
                        push_utf16(&mut out, &mut chars, unit);
                    }
                    _ => out.push('\\'),
                }
            }
            _ => out.push('\\'),
        }
    }
    out
}

fn push_escaped(out: &mut String, chars: &mut std::iter::Peekable<std::str::Chars>, decoded: char) {
    chars.next();
    out.push(decoded);
}

/// Decodes a \uXXXX unit, joining a surrogate pair written as two escapes.
fn push_utf16(out: &mut String, chars: &mut std::iter::Peekable<std::str::Chars>, unit: u16) {
    if (0xD800..0xDC00).contains(&unit) {
        let lookahead: String = chars.clone().take(6).collect();
        if let Some(hex) = lookahead.strip_prefix("\\u") {
            if let Ok(low) = u16::from_str_radix(hex, 16) {
                if (0xDC00..0xE000).contains(&low) {
                    if let Some(c) = char::decode_utf16([unit, low]).next().and_then(Result::ok) {
                        chars.nth(5);
                        out.push(c);
                        return;
                    }
                }
            }
        }
    }
    out.push(char::from_u32(u32::from(unit)).unwrap_or('\u{fffd}'));
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    /// The names `from_value` reads are exactly the fields the request's schema declares, and
    /// a body with every one of them is read whole.
    #[test]
    fn the_fields_read_are_the_fields_the_request_type_declares() {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<ScriptRequest>();
        let declared: std::collections::BTreeSet<&str> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(declared, FIELDS.into());
        let body =
            br#"{"script": "def main(): return {}", "limits": {"memory_mb": 64}, "files": {"a": "x"}, "other": 1}"#;
        let request = parse(JSON, body, false).expect("valid");
        let files = InputFiles::from_json(serde_json::json!({"a": "x"})).expect("files");
        let limits = RequestedLimits { memory_mb: Some(64), ..Default::default() };
        let expected = ScriptRequest { script: "def main(): return {}".into(), limits, files, warnings: vec![] };
        assert_eq!(request, expected);
    }

    #[test]
    fn strict_json_is_read_with_limits() {
        let body = br#"{"script": "def main():\n    return {}", "limits": {"timeout_seconds": 2}}"#;
        let request = parse(JSON, body, true).expect("valid");
        assert_eq!(request.script, "def main():\n    return {}");
        assert_eq!(request.limits.timeout_seconds, Some(2.0));
        assert!(request.warnings.is_empty());
    }

    #[test]
    fn the_documented_bodies_with_unescaped_quotes_are_read_with_a_warning() {
        // What curl sends for the documented "Return success message" example.
        let body = br#"{"script": "def main():\n  return {"status": "success", "message": "Hello from main!"}"}"#;
        let request = parse(JSON, body, true).expect("tolerated");
        assert_eq!(
            request.script,
            "def main():\n  return {\"status\": \"success\", \"message\": \"Hello from main!\"}"
        );
        assert_eq!(request.warnings.len(), 1);
        // And the one with escaped quotes inside print().
        let body = br#"{"script": "def main():\n  print(\"This should not be in output\")\n  return {"result": 123}"}"#;
        let request = parse(JSON, body, true).expect("tolerated");
        assert_eq!(
            request.script,
            "def main():\n  print(\"This should not be in output\")\n  return {\"result\": 123}"
        );
    }

    #[test]
    fn files_are_read_beside_the_script_and_bad_ones_named() {
        let body = br#"{"script": "def main(): return {}", "files": {"a.csv": "x\n", "b": {"base64": "AA=="}}}"#;
        let request = parse(JSON, body, true).expect("valid");
        assert_eq!(request.files.len(), 2);
        let body = br#"{"script": "def main(): return {}", "files": {"../a": "x"}}"#;
        let err = parse(JSON, body, true).expect_err("a path");
        assert!(matches!(&err, BodyError::InvalidFiles(_)), "{err}");
        assert!(err.to_string().contains("never a path"), "{err}");
        let body = br#"{"script": "def main(): return {}", "files": {"a": "x", "a": "y"}}"#;
        assert!(parse(JSON, body, true).expect_err("twice").to_string().contains("appears twice"));
    }

    #[test]
    fn tolerance_can_be_turned_off() {
        let body = br#"{"script": "def main():\n  return {"a": 1}"}"#;
        let err = parse(JSON, body, false).expect_err("strict");
        assert!(matches!(err, BodyError::Invalid(m) if m.starts_with("The request body is not valid JSON")));
    }

    #[test]
    fn bodies_of_another_shape_are_not_guessed_at() {
        assert!(lenient_script(r#"{"code": "x"}"#).is_none());
        assert!(lenient_script(r#"{"script": "x", "other": 1"#).is_none());
        assert!(parse(JSON, b"not json at all", true).is_err());
    }

    #[test]
    fn escapes_are_decoded_and_other_backslashes_kept() {
        assert_eq!(decode_escapes(r#"a\nb\t\"c\"\\d\/e\u00e9\q"#), "a\nb\t\"c\"\\d/e\u{e9}\\q");
        assert_eq!(decode_escapes(r"\ud83d\ude00"), "\u{1f600}");
        assert_eq!(decode_escapes(r"\u12"), "\\u12");
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        let err = parse(JSON, br#"{"script": 42}"#, true).expect_err("number");
        assert_eq!(err.to_string(), "\"script\" must be a string holding Python source, not a number");
        let err = parse(JSON, br#"{"code": "x"}"#, true).expect_err("missing");
        assert!(err.to_string().starts_with("The request body has no \"script\" field"));
        let err = parse(JSON, br#"["x"]"#, true).expect_err("array");
        assert!(err.to_string().starts_with("The request body must be a JSON object"));
    }

    #[test]
    fn repeated_keys_are_refused_even_when_tolerant() {
        for body in [
            &br#"{"script": "def main(): return {}", "script": "x = 1"}"#[..],
            br#"{"script": "def main(): return {}", "limits": {"timeout_seconds": 1, "timeout_seconds": 60}}"#,
        ] {
            let err = parse(JSON, body, true).expect_err("duplicate");
            assert!(
                matches!(&err, BodyError::Invalid(m) if m.starts_with("The request body is ambiguous") && m.contains("appears twice")),
                "{err}"
            );
        }
    }

    #[test]
    fn raw_python_needs_no_escaping() {
        let request =
            parse(Some("text/x-python; charset=utf-8"), b"def main():\n    return {\"a\": 1}\n", true).expect("raw");
        assert_eq!(request.script, "def main():\n    return {\"a\": 1}\n");
    }

    #[test]
    fn other_content_types_are_refused() {
        assert!(matches!(parse(None, b"{}", true), Err(BodyError::UnsupportedType(_))));
        let form = Some("application/x-www-form-urlencoded");
        assert!(matches!(parse(form, b"script=x", true), Err(BodyError::UnsupportedType(_))));
    }
}
