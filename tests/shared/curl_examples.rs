//! The curl examples of the Python Code Execution Service's documentation, verbatim, and how to
//! run one against a running service; shared by the host and container suites (each includes
//! this file as a module).
#![allow(dead_code)]

use serde_json::{json, Value};

/// The pandas example (its documented answer: `{"sum": 6}`).
pub const PANDAS: &str = r#"curl -X POST https://python-executor-abcxyz123.run.app/execute \
  -H "Content-Type: application/json" \
  -d '{"script": "def main():\n    import pandas as pd\n    import numpy as np\n    data = {\"A\": [1, 2, 3], \"B\": [4, 5, 6]}\n    df = pd.DataFrame(data)\n    return {\"sum\": int(np.sum(df[\"A\"]))}"}'"#;

/// "Return success message" (its body is not valid JSON as printed).
pub const SUCCESS: &str = r#"curl -X POST https://kavish-cloudrun-project-94871636326.europe-west1.run.app/execute -H "Content-Type: application/json" -d "{\"script\": \"def main():\n  return {\"status\": \"success\", \"message\": \"Hello from main!\"}\"}""#;

/// "Print in script, but still returns main()".
pub const PRINTS: &str = r#"curl -X POST https://kavish-cloudrun-project-94871636326.europe-west1.run.app/execute -H "Content-Type: application/json" -d "{\"script\": \"def main():\n  print(\\\"This should not be in output\\\")\n  return {\"result\": 123}\"}""#;

/// "Loop and return dictionary".
pub const LOOP: &str = r#"curl -X POST https://kavish-cloudrun-project-94871636326.europe-west1.run.app/execute -H "Content-Type: application/json" -d "{\"script\": \"def main():\n  data = {\"count\": 5}\n  for i in range(data[\"count\"]):\n    pass\n  return data\"}""#;

/// "File system access (may vary)": as printed, its quoting leaves `os.listdir(\/\)` in the
/// script, a SyntaxError.
pub const LIST_ROOT: &str = r#"curl -X POST https://kavish-cloudrun-project-94871636326.europe-west1.run.app/execute -H "Content-Type: application/json" -d "{\"script\": \"def main():\n  import os\n  return os.listdir(\\"/\\")\"}""#;

/// Runs one of the documented curl commands exactly as printed, with only the host replaced by
/// `base` (e.g. `http://127.0.0.1:8080`).
pub fn run_curl(base: &str, command: &str) -> Value {
    let command = command
        .replace("https://python-executor-abcxyz123.run.app", base)
        .replace("https://kavish-cloudrun-project-94871636326.europe-west1.run.app", base);
    let output = std::process::Command::new("bash").arg("-c").arg(format!("{command} -s")).output().expect("run curl");
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

/// The documented fields of a response, without the extras pyexec adds.
pub fn documented_fields(body: &Value) -> Value {
    json!({
        "result": body["result"],
        "returncode": body["returncode"],
        "stderr": body["stderr"],
        "stdout": body["stdout"],
    })
}

/// Runs every documented example against `base` and checks each answer.
pub fn assert_the_documented_examples_answer(base: &str) {
    let sum = run_curl(base, PANDAS);
    assert_eq!(documented_fields(&sum), json!({"result": {"sum": 6}, "returncode": 0, "stderr": "", "stdout": ""}));

    let success = run_curl(base, SUCCESS);
    assert_eq!(
        documented_fields(&success),
        json!({"result": {"status": "success", "message": "Hello from main!"}, "returncode": 0, "stderr": "", "stdout": ""})
    );
    assert_eq!(success["warnings"].as_array().map(Vec::len), Some(1), "the body was not valid JSON: {success}");

    let printed = run_curl(base, PRINTS);
    assert_eq!(
        documented_fields(&printed),
        json!({"result": {"result": 123}, "returncode": 0, "stderr": "", "stdout": "This should not be in output\n"})
    );

    let looped = run_curl(base, LOOP);
    assert_eq!(
        documented_fields(&looped),
        json!({"result": {"count": 5}, "returncode": 0, "stderr": "", "stdout": ""})
    );

    let listing = run_curl(base, LIST_ROOT);
    let error = listing["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("SyntaxError: "), "{listing}");
}
