//! The OpenAPI description served at GET /openapi.json (and written to docs/openapi.json by
//! `pyexec docs openapi`). The operations are a table here; every schema in it is generated
//! from the type the handlers read or write.

use std::sync::LazyLock;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use super::body::ScriptRequest;
use super::error::ErrorBody;
use super::executions::{ExecutionPath, Page, PageQuery, View, WaitQuery};
use super::response::{ExecuteResponse, ResponseBody};

/// The document, generated once: it depends on nothing but the code.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(generate);
    &DOCUMENT
}

fn generate() -> Value {
    let mut schemas = Components::default();
    let mut document = operations(&mut schemas);
    document["components"]["schemas"] = Value::Object(schemas.into_schemas());
    document
}

/// The document but its schemas: the operations, which refer to the schemas `schemas` collects.
fn operations(schemas: &mut Components) -> Value {
    let request = schemas.read::<ScriptRequest>();
    let answer = schemas.written::<ResponseBody>();
    let run = schemas.written::<ExecuteResponse>();
    let execution = schemas.written::<View>();
    let page = schemas.written::<Page>();
    let error = schemas.written::<ErrorBody>();
    let text = schemas.read::<String>();
    let mut script = text.clone();
    script["description"] = json!("The script itself");
    let id = parameters::<ExecutionPath>("path");
    let id_and_wait = [id.clone(), parameters::<WaitQuery>("query")].concat();
    let json = |schema: &Value| json!({"application/json": {"schema": schema}});
    let refusal = |description: &str| json!({"description": description, "content": json(&error)});
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
                            "application/json": {"schema": request},
                            "text/x-python": {"schema": script}
                        }
                    },
                    "responses": {
                        "200": {"description": "The script ran; `error` is set when it failed at run time", "content": json(&run)},
                        "400": {"description": "No main(), a syntax error, a non-dict or unconvertible result (with the run's fields), or an invalid body",
                                "content": json(&answer)},
                        "401": refusal("No or a wrong bearer token (with --api-token-file)"),
                        "403": refusal("An Origin not in --allowed-origins"),
                        "413": refusal("Body or script too large"),
                        "415": refusal("Unsupported content type"),
                        "421": refusal("A Host that is not a loopback name while listening on loopback"),
                        "429": refusal("Too many executions queued, or so many waiting that this one would not start within its timeout (--overload-wait-factor); see Retry-After"),
                        "500": refusal("The sandbox itself failed"),
                        "504": refusal("The cluster did not finish the execution in time (kubernetes executor)")
                    }
                }
            },
            "/executions": {
                "post": {
                    "summary": "Submit a script to run in the background; answers at once with its id (kubernetes executor: a PythonExecution, named by its id)",
                    "requestBody": {"required": true, "content": json(&request)},
                    "responses": {
                        "202": {"description": "Accepted; Location is /executions/{id}", "content": json(&execution)},
                        "400": refusal("An invalid body or limits past the maximum"),
                        "429": refusal("--executions-max-unfinished executions are unfinished, or so many wait for a sandbox that this one would not start within its timeout (--overload-wait-factor); see Retry-After")
                    }
                },
                "get": {
                    "summary": "Executions, newest first, a page at a time",
                    "parameters": parameters::<PageQuery>("query"),
                    "responses": {
                        "200": {"description": "A page", "content": json(&page)},
                        "400": refusal("An invalid limit or cursor")
                    }
                }
            },
            "/executions/{id}": {
                "get": {
                    "summary": "An execution; once finished, with the answer POST /execute would have given",
                    "parameters": id_and_wait,
                    "responses": {
                        "200": {"description": "The execution", "content": json(&execution)},
                        "404": refusal("No such execution (finished ones are removed after --executions-keep-seconds)")
                    }
                },
                "delete": {
                    "summary": "Cancel an unfinished execution: its sandbox is killed and its slot freed (kubernetes executor: its PythonExecution is deleted)",
                    "parameters": id,
                    "responses": {
                        "200": {"description": "Cancelled", "content": json(&execution)},
                        "404": refusal("No such execution"),
                        "409": refusal("It had already finished")
                    }
                }
            },
            "/executions/{id}/events": {
                "get": {
                    "summary": "Server-Sent Events: `state` changes, `stdout` and `stderr` chunks ({\"text\": ...}) as they are written, then `result` (the finished execution)",
                    "parameters": id,
                    "responses": {
                        "200": {"description": "The event stream", "content": {"text/event-stream": {"schema": text}}},
                        "404": refusal("No such execution")
                    }
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "nsjail and Python work (or the cluster is reachable)", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OpenMetrics text"}}}},
            "/mcp": {"post": {"summary": "The run_python tool over MCP (streamable HTTP, JSON-RPC 2.0): its input is ExecuteRequest, its structured output ExecuteResponse",
                              "responses": {"200": {"description": "A JSON-RPC response"}, "401": refusal("No or a wrong bearer token (with --api-token-file)")}}}
        },
        // Required only when the service has --api-token-file; /healthz and /readyz never need it.
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    })
}

/// The component schemas, generated from the types as OpenAPI 3.0: a request's as serde reads
/// it (a field with a default is optional), an answer's as serde writes it (a field is required
/// unless it is skipped when empty).
struct Components {
    read: SchemaGenerator,
    written: SchemaGenerator,
}

impl Default for Components {
    fn default() -> Self {
        Components { read: settings().into_generator(), written: settings().for_serialize().into_generator() }
    }
}

/// Schemas as OpenAPI 3.0, with one-line descriptions.
fn settings() -> SchemaSettings {
    SchemaSettings::openapi3().with_transform(RecursiveTransform(one_line_descriptions))
}

/// A description is the doc comment it comes from, its lines joined into one.
fn one_line_descriptions(schema: &mut Schema) {
    if let Some(Value::String(description)) = schema.get_mut("description") {
        *description =
            description.split('\n').map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ");
    }
}

impl Components {
    /// A reference to the schema of a type the API reads.
    fn read<T: JsonSchema>(&mut self) -> Value {
        self.read.subschema_for::<T>().to_value()
    }

    /// A reference to the schema of a type the API writes.
    fn written<T: JsonSchema>(&mut self) -> Value {
        self.written.subschema_for::<T>().to_value()
    }

    /// Every schema referred to, by name, in the order of their names. (A type both read and
    /// written is described the same both ways: a test holds them to it.)
    fn into_schemas(mut self) -> Map<String, Value> {
        let mut schemas: Vec<(String, Value)> =
            self.read.take_definitions(true).into_iter().chain(self.written.take_definitions(true)).collect();
        schemas.sort_by(|(a, _), (b, _)| a.cmp(b));
        schemas.into_iter().collect()
    }
}

/// The operation parameters `T` reads from the path or the query: one per field, its
/// description beside its schema. A parameter is given or absent, never null.
fn parameters<T: JsonSchema>(location: &str) -> Vec<Value> {
    let schema = type_schema::<T>();
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, field)| {
            let mut field = field.clone();
            let description = field.as_object_mut().and_then(|field| {
                field.remove("nullable");
                field.remove("description")
            });
            let mut parameter = json!({"name": name, "in": location});
            if location == "path" || required.contains(&json!(name)) {
                parameter["required"] = json!(true);
            }
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter["schema"] = field;
            parameter
        })
        .collect()
}

/// A type's schema on its own, as OpenAPI 3.0.
fn type_schema<T: JsonSchema>() -> Value {
    let mut schema = settings().into_generator().into_root_schema_for::<T>().to_value();
    if let Some(fields) = schema.as_object_mut() {
        fields.retain(|key, _| !key.starts_with('$') && key != "title");
    }
    schema
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sandbox::files::OutputFile;
    use crate::sandbox::{Envelope, Outcome, RequestedLimits};

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
        let warnings = ["a warning".to_string()];
        let (_, body) = crate::server::response::to_http("id", &envelope, &warnings);
        let body = serde_json::to_value(&body).expect("a JSON body");
        assert_eq!(keys(&body), documented("ExecuteResponse"));
        assert_eq!(keys(&serde_json::to_value(&file).expect("a file")), documented("OutputFile"));
        let refused = Envelope::rejected(Outcome::SandboxFailure, "nsjail is missing");
        let (_, body) = crate::server::response::to_http("id", &refused, &warnings);
        let body = serde_json::to_value(&body).expect("a JSON body");
        assert!(keys(&body).is_subset(&documented("Error")), "{body}");
    }

    #[test]
    fn the_documented_request_fields_are_the_ones_the_body_reads() {
        assert_eq!(documented("ExecuteRequest"), crate::server::body::FIELDS.map(String::from).into());
        let body =
            json!({"script": "def main(): return {}", "limits": {"timeout_seconds": 1}, "files": {"a.txt": "x"}});
        let read = crate::server::body::read(crate::server::body::Kind::Json, body.to_string().as_bytes(), false)
            .expect("every documented field is read");
        assert_eq!((read.limits.timeout_seconds, read.files.is_empty()), (Some(1.0), false));
    }

    #[test]
    fn every_documented_limit_is_one_the_body_reads() {
        let document = document();
        let schema = &document["components"]["schemas"]["ExecuteRequest"]["properties"]["limits"];
        let names: Vec<&String> = schema["properties"].as_object().expect("properties").keys().collect();
        assert!(names.iter().any(|n| *n == "timeout_seconds") && names.iter().any(|n| *n == "memory_mb"), "{names:?}");
        let body: serde_json::Map<String, Value> = names.iter().map(|n| (n.to_string(), json!(1))).collect();
        let requested: RequestedLimits = serde_json::from_value(Value::Object(body)).expect("every name is read");
        assert_eq!(serde_json::to_value(&requested).expect("json").as_object().map(|o| o.len()), Some(names.len()));
        assert_eq!(schema["additionalProperties"], false);
    }

    /// Every `$ref` in the document leads to one of its schemas, and none is left unused.
    #[test]
    fn every_reference_leads_to_a_schema_and_every_schema_is_referred_to() {
        fn references(value: &Value, found: &mut BTreeSet<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(to)) = map.get("$ref") {
                        found.insert(to.trim_start_matches("#/components/schemas/").to_string());
                    }
                    map.values().for_each(|v| references(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| references(v, found)),
                _ => {}
            }
        }
        let document = document();
        let mut found = BTreeSet::new();
        references(document, &mut found);
        assert_eq!(found, keys(&document["components"]["schemas"]));
    }

    #[test]
    fn a_type_both_read_and_written_is_described_the_same_both_ways() {
        let mut schemas = Components::default();
        operations(&mut schemas);
        let written = schemas.written.take_definitions(true);
        for (name, read) in schemas.read.take_definitions(true) {
            assert!(written.get(&name).is_none_or(|written| *written == read), "{name} differs read and written");
        }
    }

    #[test]
    fn the_parameters_are_the_fields_the_routes_read() {
        let document = document();
        let names = |path: &str, method: &str| -> Vec<(String, String)> {
            let parameters = document["paths"][path][method]["parameters"].as_array().expect("parameters");
            parameters
                .iter()
                .map(|p| (p["in"].as_str().unwrap_or("").into(), p["name"].as_str().unwrap_or("").into()))
                .collect()
        };
        let pair = |location: &str, name: &str| (location.to_string(), name.to_string());
        assert_eq!(names("/executions", "get"), [pair("query", "limit"), pair("query", "before")]);
        assert_eq!(names("/executions/{id}", "get"), [pair("path", "id"), pair("query", "wait")]);
        let limit = &document["paths"]["/executions"]["get"]["parameters"][0];
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"], &limit["schema"]["default"]),
            (&json!(1), &json!(500), &json!(50))
        );
        assert_eq!(document["paths"]["/executions/{id}"]["delete"]["parameters"][0]["required"], true);
    }
}
