//! The OpenAPI description served at GET /openapi.json.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::sandbox::files::OutputFile;
use crate::sandbox::RequestedLimits;

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pyexec",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runs untrusted Python scripts in a sandbox and returns what main() returned."
        },
        "paths": {
            "/execute": {
                "post": {
                    "summary": "Run a script and return main()'s dict",
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ExecuteRequest"}},
                            "text/x-python": {"schema": {"type": "string", "description": "The script itself"}}
                        }
                    },
                    "responses": {
                        "200": {"description": "The script ran; `error` is set when it failed at run time",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteResponse"}}}},
                        "400": {"description": "No main(), a syntax error, a non-dict or unconvertible result, or an invalid body",
                                "content": {"application/json": {"schema": error}}},
                        "401": {"description": "No or a wrong bearer token (with --api-token-file)", "content": {"application/json": {"schema": error}}},
                        "403": {"description": "An Origin not in --allowed-origins", "content": {"application/json": {"schema": error}}},
                        "413": {"description": "Body or script too large", "content": {"application/json": {"schema": error}}},
                        "415": {"description": "Unsupported content type", "content": {"application/json": {"schema": error}}},
                        "421": {"description": "A Host that is not a loopback name while listening on loopback", "content": {"application/json": {"schema": error}}},
                        "429": {"description": "Too many executions queued, or so many waiting that this one would not start within its timeout (--overload-wait-factor); see Retry-After", "content": {"application/json": {"schema": error}}},
                        "500": {"description": "The sandbox itself failed", "content": {"application/json": {"schema": error}}},
                        "504": {"description": "The cluster did not finish the execution in time (kubernetes executor)", "content": {"application/json": {"schema": error}}}
                    }
                }
            },
            "/executions": {
                "post": {
                    "summary": "Submit a script to run in the background; answers at once with its id (kubernetes executor: a PythonExecution, named by its id)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteRequest"}}}},
                    "responses": {
                        "202": {"description": "Accepted; Location is /executions/{id}",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Execution"}}}},
                        "400": {"description": "An invalid body or limits past the maximum", "content": {"application/json": {"schema": error}}},
                        "429": {"description": "--executions-max-unfinished executions are unfinished, or so many wait for a sandbox that this one would not start within its timeout (--overload-wait-factor); see Retry-After", "content": {"application/json": {"schema": error}}}
                    }
                },
                "get": {
                    "summary": "Executions, newest first, a page at a time",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                        {"name": "before", "in": "query", "description": "The `next` of the previous page", "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "A page", "content": {"application/json": {"schema": {
                            "type": "object",
                            "properties": {
                                "executions": {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
                                "next": {"type": "string", "nullable": true}
                            }
                        }}}}
                    }
                }
            },
            "/executions/{id}": {
                "get": {
                    "summary": "An execution; once finished, with the answer POST /execute would have given",
                    "parameters": [
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "wait", "in": "query", "description": "Seconds to hold the request until it finishes (at most --executions-max-wait-seconds)", "schema": {"type": "number"}}
                    ],
                    "responses": {
                        "200": {"description": "The execution", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Execution"}}}},
                        "404": {"description": "No such execution (finished ones are removed after --executions-keep-seconds)", "content": {"application/json": {"schema": error}}}
                    }
                },
                "delete": {
                    "summary": "Cancel an unfinished execution: its sandbox is killed and its slot freed (kubernetes executor: its PythonExecution is deleted)",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "Cancelled", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Execution"}}}},
                        "404": {"description": "No such execution", "content": {"application/json": {"schema": error}}},
                        "409": {"description": "It had already finished", "content": {"application/json": {"schema": error}}}
                    }
                }
            },
            "/executions/{id}/events": {
                "get": {
                    "summary": "Server-Sent Events: `state` changes, `stdout` and `stderr` chunks ({\"text\": ...}) as they are written, then `result` (the finished execution)",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                        "404": {"description": "No such execution", "content": {"application/json": {"schema": error}}}
                    }
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "nsjail and Python work (or the cluster is reachable)", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OpenMetrics text"}}}},
            "/mcp": {"post": {"summary": "The run_python tool over MCP (streamable HTTP, JSON-RPC 2.0): its input is ExecuteRequest, its structured output ExecuteResponse",
                              "responses": {"200": {"description": "A JSON-RPC response"}, "401": {"description": "No or a wrong bearer token (with --api-token-file)", "content": {"application/json": {"schema": error}}}}}}
        },
        // Required only when the service has --api-token-file; /healthz and /readyz never need it.
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ExecuteRequest": {
                    "type": "object",
                    "required": ["script"],
                    "properties": {
                        "script": {"type": "string", "description": "Python source defining main()"},
                        "limits": {"$ref": "#/components/schemas/Limits"},
                        "files": {
                            "type": "object",
                            "description": "Files the script finds read-only in its working directory, by plain file name (no '/', not '.' or '..', at most 255 bytes): text, or {\"base64\": ...}. At most --max-input-files files of --max-input-files-bytes in all (local executor)",
                            "additionalProperties": {"oneOf": [
                                {"type": "string"},
                                {"type": "object", "required": ["base64"], "additionalProperties": false,
                                 "properties": {"base64": {"type": "string", "format": "byte"}}}
                            ]}
                        }
                    }
                },
                "Limits": limits_schema(),
                "ExecuteResponse": {
                    "type": "object",
                    "properties": {
                        "result": {"type": "object", "nullable": true},
                        "stdout": {"type": "string"},
                        "stderr": {"type": "string"},
                        "returncode": {"type": "integer"},
                        "error": {"type": "string"},
                        "outcome": {"type": "string", "enum": crate::sandbox::Outcome::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>()},
                        "id": {"type": "string"},
                        "duration_ms": {"type": "integer"},
                        "stdout_truncated": {"type": "boolean"},
                        "stderr_truncated": {"type": "boolean"},
                        "files": {"type": "array", "description": "Regular files the script left in output/ (and open matplotlib figures as figure-<n>.png); present only when there are some",
                                  "items": {"$ref": "#/components/schemas/OutputFile"}},
                        "files_truncated": {"type": "boolean", "description": "Present, true, when files of output/ were left out"},
                        "files_omitted": {"type": "array", "items": {"type": "string"}, "description": "The names left out (a folder's ends with '/')"},
                        "warnings": {"type": "array", "items": {"type": "string"}}
                    }
                },
                "Execution": {
                    "type": "object",
                    "required": ["id", "state", "created_at"],
                    "properties": {
                        "id": {"type": "string"},
                        "state": {"type": "string", "enum": crate::executions::State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()},
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "finished_at": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string", "description": "Why it ended without an answer (cancelled, or the service stopped)"},
                        "location": {"type": "string", "description": "Where to find it (in POST's answer)"},
                        "http_status": {"type": "integer", "description": "The status POST /execute would have answered"},
                        "response": {"$ref": "#/components/schemas/ExecuteResponse"}
                    }
                },
                "OutputFile": type_schema::<OutputFile>(),
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
            }
        }
    })
}

/// A component's schema generated from the type that reads or writes it, as OpenAPI 3.0.
fn type_schema<T: schemars::JsonSchema>() -> Value {
    let schema = SchemaSettings::openapi3().into_generator().into_root_schema_for::<T>();
    let mut schema = serde_json::to_value(schema).unwrap_or_default();
    if let Some(fields) = schema.as_object_mut() {
        fields.retain(|key, _| !key.starts_with('$') && key != "title");
    }
    schema
}

/// The request's `limits`, generated from the type that reads them, under the snake_case names
/// the HTTP API documents (the type's own are Kubernetes' camelCase; it reads both).
fn limits_schema() -> Value {
    let mut schema = type_schema::<RequestedLimits>();
    if let Some(fields) = schema.as_object_mut() {
        fields.insert(
            "description".into(),
            json!("Each limit may be lowered below the server's default, or raised up to its maximum; above it, 400"),
        );
    }
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        *properties = std::mem::take(properties).into_iter().map(|(name, value)| (snake_case(&name), value)).collect();
    }
    schema
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sandbox::{Envelope, Outcome};

    fn documented(component: &str) -> BTreeSet<String> {
        let schemas = &document()["components"]["schemas"];
        schemas[component]["properties"].as_object().expect("properties").keys().cloned().collect()
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().expect("an object").keys().cloned().collect()
    }

    #[test]
    fn every_field_an_answer_can_have_is_documented_and_nothing_else() {
        let file: OutputFile = serde_json::from_value(json!(
            {"name": "a.csv", "size": 1, "media_type": "text/csv", "content_base64": "YQ=="}
        ))
        .expect("an output file");
        let mut envelope = Envelope::rejected(Outcome::Exception, "boom");
        envelope.files = vec![file.clone()];
        envelope.files_truncated = true;
        envelope.files_omitted = vec!["big.bin".into()];
        let (_, body) = crate::server::response::to_http("id", &envelope, &["a warning".into()]);
        let body = serde_json::to_value(&body).expect("a JSON body");
        assert_eq!(keys(&body), documented("ExecuteResponse"));
        assert_eq!(keys(&serde_json::to_value(&file).expect("a file")), documented("OutputFile"));
    }

    #[test]
    fn the_documented_request_fields_are_the_ones_the_body_reads() {
        assert_eq!(documented("ExecuteRequest"), ["files", "limits", "script"].map(String::from).into());
        let body =
            json!({"script": "def main(): return {}", "limits": {"timeout_seconds": 1}, "files": {"a.txt": "x"}});
        let read = crate::server::body::read(crate::server::body::Kind::Json, body.to_string().as_bytes(), false)
            .expect("every documented field is read");
        assert_eq!((read.limits.timeout_seconds, read.files.is_empty()), (Some(1.0), false));
    }

    #[test]
    fn every_documented_limit_is_one_the_body_reads() {
        let schema = limits_schema();
        let names: Vec<&String> = schema["properties"].as_object().expect("properties").keys().collect();
        assert!(names.iter().any(|n| *n == "timeout_seconds") && names.iter().any(|n| *n == "memory_mb"), "{names:?}");
        let body: serde_json::Map<String, Value> = names.iter().map(|n| (n.to_string(), json!(1))).collect();
        let requested: RequestedLimits = serde_json::from_value(Value::Object(body)).expect("every name is read");
        assert_eq!(serde_json::to_value(&requested).expect("json").as_object().map(|o| o.len()), Some(names.len()));
        assert_eq!(schema["additionalProperties"], false);
    }
}
