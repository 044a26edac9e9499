//! From /execute's answer to the tool's result: a pure function, the one place where the HTTP
//! contract becomes MCP. A run (a 200, or a 400 that carries the run's fields) is structured
//! content, marked as an error unless `main()` returned a dict; a refusal (no `main()`, a syntax
//! error, a missing token, a busy service) is an error whose text is the service's message.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;

/// Files of this type are returned as image content (figures).
const FIGURE_TYPE: &str = "image/png";
/// Where a file's bytes are in a response's `files`, base64-encoded.
pub const FILE_BYTES_KEY: &str = "content_base64";

/// What POST /execute answered, wherever it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Value,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after_seconds: Option<u64>,
}

pub fn tool_result(answer: HttpAnswer) -> CallToolResult {
    let HttpAnswer { status, mut body, retry_after_seconds } = answer;
    let outcome = body.get("outcome").and_then(Value::as_str).map(str::to_owned);
    match outcome {
        Some(outcome) if status == 200 || status == 400 => {
            let figures = take_figures(&mut body);
            let mut result = if status == 200 && outcome == "success" {
                CallToolResult::structured(body)
            } else {
                CallToolResult::structured_error(body)
            };
            result.content.extend(figures);
            result
        }
        _ => CallToolResult::error(vec![ContentBlock::text(refusal(status, &body, retry_after_seconds))]),
    }
}

/// A refusal's text: a 400's message as the service wrote it (it is about the script or the
/// arguments), any other status named before it.
fn refusal(status: u16, body: &Value, retry_after_seconds: Option<u64>) -> String {
    let message = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
    let mut text = match status {
        400 => message.to_string(),
        _ => format!("The pyexec service answered HTTP {status}: {message}"),
    };
    if let Some(seconds) = retry_after_seconds {
        text.push_str(&format!(" (retry after {seconds} s)"));
    }
    text
}

/// The run's figures (files of type image/png) as image content. Their bytes leave the
/// structured content, which keeps each file's name, size and type.
fn take_figures(body: &mut Value) -> Vec<ContentBlock> {
    let Some(files) = body.get_mut("files").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    files
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .filter(|file| file.get("media_type").and_then(Value::as_str) == Some(FIGURE_TYPE))
        .filter_map(|file| match file.remove(FILE_BYTES_KEY) {
            Some(Value::String(data)) => Some(ContentBlock::image(data, FIGURE_TYPE)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(status: u16, body: Value) -> HttpAnswer {
        HttpAnswer { status, body, retry_after_seconds: None }
    }

    fn run(outcome: &str) -> Value {
        json!({"result": null, "stdout": "", "stderr": "Traceback ...", "returncode": 1, "outcome": outcome,
               "error": "ZeroDivisionError: division by zero"})
    }

    fn texts(result: &CallToolResult) -> Vec<String> {
        result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
    }

    #[test]
    fn a_successful_run_is_structured_content_and_its_json_text() {
        let body = json!({"result": {"sum": 6}, "stdout": "", "stderr": "", "returncode": 0, "outcome": "success"});
        let result = tool_result(answer(200, body.clone()));
        assert_eq!(result.is_error, Some(false));
        assert_eq!(result.structured_content, Some(body.clone()));
        assert_eq!(texts(&result), [body.to_string()]);
    }

    #[test]
    fn a_run_that_failed_is_an_error_that_keeps_its_fields() {
        for (status, outcome) in [(200, "exception"), (200, "timeout"), (400, "not_a_dict")] {
            let result = tool_result(answer(status, run(outcome)));
            assert_eq!(result.is_error, Some(true), "{outcome}");
            assert_eq!(result.structured_content, Some(run(outcome)));
        }
    }

    #[test]
    fn no_main_is_an_error_with_the_contract_s_message() {
        let result = tool_result(answer(400, json!({"error": "Script must contain a 'main()' function."})));
        assert_eq!((result.is_error, result.structured_content.clone()), (Some(true), None));
        assert_eq!(texts(&result), ["Script must contain a 'main()' function."]);
    }

    #[test]
    fn a_refusal_names_its_status_and_when_to_retry() {
        let busy = HttpAnswer { retry_after_seconds: Some(1), ..answer(429, json!({"error": "too many"})) };
        assert_eq!(texts(&tool_result(busy)), ["The pyexec service answered HTTP 429: too many (retry after 1 s)"]);
        let unauthorized = tool_result(answer(401, json!({"error": "This API needs a bearer token"})));
        assert_eq!(unauthorized.is_error, Some(true));
        assert_eq!(texts(&unauthorized), ["The pyexec service answered HTTP 401: This API needs a bearer token"]);
    }

    #[test]
    fn png_files_are_image_content_without_their_bytes_in_the_structure() {
        let mut body = run("success");
        body["files"] = json!([
            {"name": "plot.png", "size": 3, "media_type": "image/png", "content_base64": "iVBO"},
            {"name": "data.csv", "size": 4, "media_type": "text/csv", "content_base64": "YSxi"}
        ]);
        let result = tool_result(answer(200, body));
        let images: Vec<_> = result
            .content
            .iter()
            .filter_map(ContentBlock::as_image)
            .map(|image| (image.data.clone(), image.mime_type.clone()))
            .collect();
        assert_eq!(images, [("iVBO".to_string(), "image/png".to_string())]);
        let files = &result.structured_content.expect("structured")["files"];
        assert_eq!(files[0], json!({"name": "plot.png", "size": 3, "media_type": "image/png"}));
        assert_eq!(files[1]["content_base64"], "YSxi");
    }
}
