//! The HTTP contract (README.md, "Responses"), over real HTTP against a real server with real
//! nsjail and Python: every row of the contract table, and the curl examples of the Python Code
//! Execution Service's documentation verbatim.

mod common;
#[path = "../shared/curl_examples.rs"]
mod curl_examples;

use common::Server;
use curl_examples::documented_fields;
use serde_json::{json, Value};

const NO_MAIN: &str = "Script must contain a 'main()' function.";

#[tokio::test]
async fn the_documented_hello_world_returns_the_dict() {
    let server = Server::start().await;
    let (status, body) = server.execute("def main():\n    return {'message': 'Hello World'}", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        documented_fields(&body),
        json!({"result": {"message": "Hello World"}, "returncode": 0, "stderr": "", "stdout": ""})
    );
    assert!(body.get("error").is_none());
}

#[tokio::test]
async fn the_documented_curl_examples_work_verbatim() {
    let server = Server::start().await;
    curl_examples::assert_the_documented_examples_answer(&server.base);
}

#[tokio::test]
async fn the_sandbox_root_shows_only_system_directories() {
    let server = Server::start().await;
    let script = "import os\ndef main():\n    return {'root': sorted(os.listdir('/')), 'tmp': os.listdir('/tmp')}";
    let (status, body) = server.execute(script, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!({"root": ["dev", "lib", "lib64", "opt", "tmp", "usr"], "tmp": []}));
}

#[tokio::test]
async fn prints_go_to_stdout_and_the_result_stays_mains() {
    let server = Server::start().await;
    let script =
        "import sys\ndef main():\n    print('to out')\n    print('to err', file=sys.stderr)\n    return {'x': 1}";
    let (status, body) = server.execute(script, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        documented_fields(&body),
        json!({"result": {"x": 1}, "returncode": 0, "stderr": "to err\n", "stdout": "to out\n"})
    );
}

#[tokio::test]
async fn scripts_without_main_get_the_exact_contract_error() {
    let server = Server::start().await;
    for script in
        ["", "   \n", "def not_main():\n  return {\"msg\": \"no main function\"}", "x = 1\n# main is only mentioned\n"]
    {
        let (status, body) = server.execute(script, None).await;
        assert_eq!((status, body), (400, json!({"error": NO_MAIN})), "script {script:?}");
    }
}

#[tokio::test]
async fn syntax_errors_name_line_and_column() {
    let server = Server::start().await;
    let (status, body) = server.execute("def main(:\n  return {\"msg\": \"syntax error\"}", None).await;
    assert_eq!((status, body), (400, json!({"error": "SyntaxError: invalid syntax (line 1, column 10)"})));
    let (status, body) = server.execute("def main():\n  return {\n", None).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "SyntaxError: '{' was never closed (line 2, column 10)"}));
}

#[tokio::test]
async fn a_non_dict_result_is_a_400_naming_the_type() {
    let server = Server::start().await;
    let (status, body) = server.execute("def main():\n  print('hi')\n  return 42", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "main() must return a dict, but it returned int");
    assert_eq!(body["stdout"], "hi\n");
    let (status, body) = server.execute("import os\ndef main():\n  return os.listdir('/')", None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("main() must return a dict, but it returned list")));
}

#[tokio::test]
async fn an_exception_is_a_200_with_traceback_and_one_line_error() {
    let server = Server::start().await;
    let (status, body) = server.execute("def main():\n    return {'x': 1 / 0}", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], Value::Null);
    assert_eq!(body["returncode"], 1);
    assert_eq!(body["error"], "ZeroDivisionError: division by zero");
    let stderr = body["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.starts_with("Traceback (most recent call last):\n  File \"script.py\", line 2, in main"),
        "{stderr}"
    );
    assert!(!stderr.contains("harness"), "harness frames leak into the traceback: {stderr}");
}

#[tokio::test]
async fn results_are_converted_the_way_a_pandas_user_expects() {
    let server = Server::start().await;
    let script = r#"
import datetime, decimal, uuid
import numpy as np
import pandas as pd
def main():
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, None]})
    return {
        "np_int": np.int64(7), "np_float": np.float32(0.5), "np_bool": np.bool_(True),
        "array": np.arange(3), "matrix": np.eye(2, dtype=int),
        "series": pd.Series([1, 2]), "frame": df,
        "timestamp": pd.Timestamp("2024-01-02 03:04:05"), "nat": pd.NaT, "na": pd.NA,
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5), "date": datetime.date(2024, 1, 2),
        "timedelta": datetime.timedelta(minutes=1), "decimal": decimal.Decimal("1.25"),
        "decimal_int": decimal.Decimal("3"), "tuple": (1, "a"), "set": {3, 1, 2},
        "nan": float("nan"), "inf": np.inf, "ninf": -float("inf"),
        "uuid": uuid.UUID(int=1), "nested": {1: "int key", None: "none key"},
    }
"#;
    let (status, body) = server.execute(script, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        json!({
            "np_int": 7, "np_float": 0.5, "np_bool": true,
            "array": [0, 1, 2], "matrix": [[1, 0], [0, 1]],
            "series": [1, 2], "frame": [{"a": 1, "b": 0.5}, {"a": 2, "b": null}],
            "timestamp": "2024-01-02T03:04:05", "nat": null, "na": null,
            "datetime": "2024-01-02T03:04:05", "date": "2024-01-02",
            "timedelta": 60.0, "decimal": 1.25, "decimal_int": 3, "tuple": [1, "a"], "set": [1, 2, 3],
            "nan": null, "inf": null, "ninf": null,
            "uuid": "00000000-0000-0000-0000-000000000001", "nested": {"1": "int key", "null": "none key"},
        })
    );
}

#[tokio::test]
async fn unconvertible_values_are_a_400_with_key_path_and_type() {
    let server = Server::start().await;
    let (status, body) = server.execute("def main():\n    return {'a': [1, {'b': object()}]}", None).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("result['a'][1]['b']: value of type object cannot be converted to JSON"), "{error}");
}

#[tokio::test]
async fn raw_python_bodies_need_no_escaping() {
    let server = Server::start().await;
    let script = "def main():\n    return {\"quote\": \"it's \\\"quoted\\\"\"}\n";
    let response = server.post_raw(Some("text/x-python"), script.as_bytes().to_vec()).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["result"], json!({"quote": "it's \"quoted\""}));
}

#[tokio::test]
async fn invalid_bodies_get_a_400_that_says_how_to_send_a_script() {
    let server = Server::start().await;
    let cases: [(&[u8], &str); 5] = [
        (b"this is not json", "The request body is not valid JSON"),
        (br#"{"script": 42}"#, "\"script\" must be a string holding Python source, not a number"),
        (br#"{"script": null}"#, "\"script\" must be a string holding Python source, not null"),
        (br#"{"code": "def main(): return {}"}"#, "The request body has no \"script\" field"),
        (br#"["def main(): return {}"]"#, "The request body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let response = server.post_raw(Some("application/json"), body.to_vec()).await;
        assert_eq!(response.status().as_u16(), 400);
        let json: Value = response.json().await.expect("json");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(expected), "{error}");
        assert_eq!(json.as_object().map(|o| o.len()), Some(1), "only the error field: {json}");
    }
    let response = server.post_raw(Some("text/x-python"), b"def main():\n  return {'a': '\xff'}".to_vec()).await;
    assert_eq!(response.status().as_u16(), 400);
    let json: Value = response.json().await.expect("json");
    assert_eq!(json, json!({"error": "The script is not valid UTF-8 (at byte 28)"}));
}

#[tokio::test]
async fn wrong_or_missing_content_types_get_415() {
    let server = Server::start().await;
    for content_type in [None, Some("application/x-www-form-urlencoded"), Some("image/png")] {
        let response = server.post_raw(content_type, br#"{"script": "def main(): return {}"}"#.to_vec()).await;
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let json: Value = response.json().await.expect("json");
        assert!(json["error"].as_str().unwrap_or_default().contains("text/x-python"), "{json}");
    }
}

#[tokio::test]
async fn oversized_bodies_and_scripts_get_413() {
    let server = Server::start_with(&["--max-request-bytes", "100000", "--max-script-bytes", "50000"]).await;
    // Declared too large: refused from the Content-Length alone, before any of the body is read.
    let head = "POST /execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n";
    let (status, body) = server.raw_request(head, b"");
    assert_eq!((status, body.as_str()), (413, r#"{"error":"The request body is larger than 100000 bytes"}"#));
    // Streamed without a length: refused once the limit is crossed.
    let chunk = format!("{:x}\r\n{}\r\n", 60_000, "#".repeat(60_000));
    let head = "POST /execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let (status, body) = server.raw_request(head, chunk.repeat(2).as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("The request body is larger than 100000 bytes"), "{body}");
    let long_script = format!("def main():\n    return {{}}\n#{}", "x".repeat(60_000));
    let (status, body) = server.execute(&long_script, None).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap_or_default().contains("the limit is 50000 bytes"), "{body}");
}

#[tokio::test]
async fn strict_json_turns_the_tolerant_reading_off() {
    let server = Server::start_with(&["--strict-json"]).await;
    let body = br#"{"script": "def main():\n  return {"a": 1}"}"#.to_vec();
    let response = server.post_raw(Some("application/json"), body).await;
    assert_eq!(response.status().as_u16(), 400);
    let json: Value = response.json().await.expect("json");
    let error = "The request body is not valid JSON (expected `,` or `}` at line 1 column 37): send \
                 {\"script\": \"def main(): ...\"} with Content-Type: application/json, or the script itself \
                 with Content-Type: text/x-python";
    assert_eq!(json, json!({ "error": error }), "refused, not read tolerantly");
}

#[tokio::test]
async fn requested_limits_above_the_maximum_are_refused() {
    let server = Server::start_with(&["--timeout-seconds", "2", "--max-timeout-seconds", "5"]).await;
    let (status, body) = server.execute("def main():\n    return {}", Some(json!({"timeout_seconds": 30}))).await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "limits.timeout_seconds may be at most 5 on this server, got 30"}))
    );
    let (status, body) = server.execute("def main():\n    return {}", Some(json!({"bogus": 1}))).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_are_served() {
    let server = Server::start().await;
    let client = server.client();
    assert_eq!(client.get(server.url("/healthz")).send().await.expect("healthz").status().as_u16(), 200);
    assert_eq!(client.get(server.url("/readyz")).send().await.expect("readyz").status().as_u16(), 200);
    let _ = server.execute("def main():\n    return {}", None).await;
    let metrics = client.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("pyexec_executions_total{outcome=\"success\"} "), "{metrics}");
    assert!(metrics.contains("pyexec_execution_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("pyexec_queue_depth "), "{metrics}");
    assert!(metrics.contains("pyexec_in_flight "), "{metrics}");
    let openapi: Value =
        client.get(server.url("/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert!(openapi["paths"]["/execute"]["post"].is_object());
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).expect("docs");
    let checked_in: Value = serde_json::from_str(&checked_in).expect("docs/openapi.json is JSON");
    assert!(openapi == checked_in, "GET /openapi.json is not docs/openapi.json: run make docs");
    let missing = client.get(server.url("/nope")).send().await.expect("404");
    assert_eq!(missing.status().as_u16(), 404);
    let wrong_method = client.get(server.url("/execute")).send().await.expect("405");
    assert_eq!(wrong_method.status().as_u16(), 405);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_execution_finish_then_exits_zero() {
    let mut server = Server::start().await;
    let client = server.client().clone();
    let url = server.url("/execute");
    let running = tokio::spawn(async move {
        let body = json!({"script": "import time\ndef main():\n    time.sleep(1)\n    return {'done': True}"});
        let response = client.post(url).json(&body).send().await.expect("POST");
        response.json::<Value>().await.expect("json")
    });
    // Wait until the execution is running before asking the server to stop.
    server.wait_for_in_flight(1).await;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (status, server.run_cgroups())
    });
    let body = running.await.expect("request");
    assert_eq!(body["result"], json!({"done": true}));
    let (status, cgroups_left) = stopping.await.expect("stop");
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(cgroups_left.is_empty(), "{cgroups_left:?}");
}

#[tokio::test]
async fn responses_keep_the_documented_field_order_and_mains_key_order() {
    let server = Server::start().await;
    let body = serde_json::json!({"script": "def main():\n    return {'z': 1, 'a': 2, 'm': 3}"});
    let response = server.client().post(server.url("/execute")).json(&body).send().await.expect("POST");
    let text = response.text().await.expect("text");
    assert!(text.starts_with(r#"{"result":{"z":1,"a":2,"m":3},"stdout":"","stderr":"","returncode":0,"#), "{text}");
}
