//! The `run_python` tool's declaration. Its schemas are the HTTP API's own, read from the
//! OpenAPI document (`server::openapi`): the input is /execute's request body, the output its
//! 200 body, so the two descriptions cannot drift apart.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Map, Value};

use super::answer;
use crate::server::openapi;

pub const TOOL_NAME: &str = "run_python";

const DESCRIPTION: &str = "Runs a Python script in a sandbox (no network, a read-only file system, \
time and memory limits) and returns what its main() returned. The script must define main() \
taking no arguments and returning a dict of JSON-compatible values; pandas and numpy are \
installed and their values are converted (a DataFrame becomes a list of row objects). The output \
has main()'s dict as `result`, the script's `stdout` and `stderr`, its `returncode`, and \
`outcome` (success, exception, timeout, memory_limit, ...); a failed run sets `error` to one \
line saying why and is marked as an error. `limits` may lower the server's defaults \
(timeout_seconds, memory_mb, ...) or raise them up to its maxima.";

/// The fields every answer of a run has.
const REQUIRED_OUTPUT: [&str; 5] = ["result", "stdout", "stderr", "returncode", "outcome"];

pub fn run_python_tool() -> Tool {
    let document = openapi::document();
    let components = &document["components"]["schemas"];
    let input = inline_refs(components["ExecuteRequest"].clone(), components);
    let mut output = inline_refs(components["ExecuteResponse"].clone(), components);
    output["required"] = json!(REQUIRED_OUTPUT);
    // A figure's bytes leave the structured content for an image block (`answer`): the other
    // fields of each file stay required.
    if let Some(required) = output["properties"]["files"]["items"]["required"].as_array_mut() {
        required.retain(|field| field != answer::FILE_BYTES_KEY);
    }
    Tool::new(TOOL_NAME, DESCRIPTION, Arc::new(json_schema(input)))
        .with_title("Run Python")
        .with_raw_output_schema(Arc::new(json_schema(output)))
        .with_annotations(ToolAnnotations::new().read_only(true).destructive(false).open_world(false))
}

/// Replaces each `{"$ref": "#/components/schemas/X"}` with the schema X itself, and merges an
/// `allOf` of one schema (how OpenAPI 3.0 describes a reference in place) into its parent.
fn inline_refs(schema: Value, components: &Value) -> Value {
    match schema {
        Value::Object(map) => match map.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.trim_start_matches("#/components/schemas/");
                inline_refs(components[name].clone(), components)
            }
            None => {
                let mut map: Map<String, Value> =
                    map.into_iter().map(|(k, v)| (k, inline_refs(v, components))).collect();
                if let Some(Value::Array(mut one)) = map.remove("allOf") {
                    match (one.len(), one.pop()) {
                        // The parent's own fields (its description) win.
                        (1, Some(Value::Object(inner))) => {
                            let own = std::mem::replace(&mut map, inner);
                            map.extend(own);
                        }
                        (_, last) => {
                            one.extend(last);
                            map.insert("allOf".into(), Value::Array(one));
                        }
                    }
                }
                Value::Object(map)
            }
        },
        Value::Array(items) => Value::Array(items.into_iter().map(|v| inline_refs(v, components)).collect()),
        other => other,
    }
}

/// The OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a `null` in `type`.
fn json_schema(schema: Value) -> JsonObject {
    fn convert(value: Value) -> Value {
        match value {
            Value::Object(mut map) => {
                if map.remove("nullable") == Some(Value::Bool(true)) {
                    if let Some(Value::String(kind)) = map.remove("type") {
                        map.insert("type".into(), json!([kind, "null"]));
                    }
                }
                Value::Object(map.into_iter().map(|(k, v)| (k, convert(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
            other => other,
        }
    }
    match convert(schema) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_the_execute_body_with_its_limits_inlined() {
        let tool = run_python_tool();
        let input = Value::Object((*tool.input_schema).clone());
        assert_eq!(input["required"], json!(["script"]));
        assert_eq!(input["properties"]["script"]["type"], "string");
        assert_eq!(input["properties"]["limits"]["properties"]["timeout_seconds"]["type"], json!(["number", "null"]));
        assert!(!input.to_string().contains("$ref"), "{input}");
    }

    #[test]
    fn the_output_is_the_200_body_in_json_schema() {
        let tool = run_python_tool();
        let output = Value::Object((*tool.output_schema.expect("an output schema")).clone());
        assert_eq!(output["type"], "object");
        assert_eq!(output["required"], json!(REQUIRED_OUTPUT));
        assert_eq!(output["properties"]["result"]["type"], json!(["object", "null"]));
        let outcomes = output["properties"]["outcome"]["oneOf"].as_array().expect("the outcomes");
        assert!(outcomes.iter().any(|o| o["enum"] == json!(["success"])), "{outcomes:?}");
        assert!(!output.to_string().contains("allOf"), "{output}");
        assert!(!output.to_string().contains("nullable"), "{output}");
        let file = &output["properties"]["files"]["items"];
        assert_eq!(file["required"], json!(["name", "size", "media_type"]), "a figure's bytes are an image block");
    }
}
