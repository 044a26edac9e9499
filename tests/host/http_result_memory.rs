//! The server's memory for the largest result a request may ask for: main()'s result crosses the
//! server as text (read from the result channel, checked, written into the response), never as a
//! tree of values many times its size.

mod common;

use common::Server;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// The largest result a request may ask for: the default `--max-result-bytes`.
const MAX_RESULT_BYTES: u64 = 64 << 20;
/// Zeros in main()'s list: `{"a":[0,0,...]}` is then just under the limit with the report
/// around it, and each zero is one of the smallest values JSON has.
const ZEROS: usize = 33_000_000;
/// The bound on the server's peak memory growth, in multiples of the result's size: the report
/// as read from the result channel, the result's checked copy, and the response body being
/// written (the report is freed before the body is built).
const GROWTH_PER_RESULT_BYTE: u64 = 3;
/// What the server's peak may move by whatever the result's size: the allocator's arenas and the
/// runtime's buffers (the three copies alone came to 3.0016x a 66 MB result once).
const FIXED_SLACK_BYTES: u64 = 8 << 20;

/// The peak resident memory of a process so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[derive(Deserialize)]
struct Answer<'a> {
    outcome: &'a str,
    #[serde(borrow)]
    result: &'a RawValue,
}

#[tokio::test]
async fn a_maximal_result_costs_the_server_a_small_multiple_of_its_size() {
    let server = Server::start().await;
    let pid = server.pid().expect("the server runs");
    // A first run sets up what every run shares (the harness, the cgroups, the runtime's pools).
    let (status, body) = server.execute("def main():\n    return {'warm': [0] * 1000}\n", None).await;
    assert_eq!(status, 200, "{body}");
    let before = peak_rss(pid);

    let script = format!("def main():\n    return {{'a': [0] * {ZEROS}}}\n");
    let limits = json!({
        "result_bytes": MAX_RESULT_BYTES,
        "memory_mb": 4096,
        "timeout_seconds": 60,
        "cpu_seconds": 60,
    });
    let response = server
        .client()
        .post(server.url("/execute"))
        .json(&json!({ "script": script, "limits": limits }))
        .send()
        .await
        .expect("POST /execute");
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.expect("the response body");
    let after = peak_rss(pid);

    let answer: Answer = serde_json::from_slice(&bytes).expect("a JSON response");
    assert_eq!(answer.outcome, "success");
    let result = answer.result.get();
    let expected = format!("{{\"a\":[{}0]}}", "0,".repeat(ZEROS - 1));
    assert!(result == expected, "the result is not main()'s list of {ZEROS} zeros");
    let result_bytes = result.len() as u64;
    let growth = after.saturating_sub(before);
    eprintln!(
        "result {result_bytes} bytes; server peak RSS {before} -> {after} bytes, growth {growth} ({:.2}x the result)",
        growth as f64 / result_bytes as f64
    );
    assert!(
        growth <= GROWTH_PER_RESULT_BYTE * result_bytes + FIXED_SLACK_BYTES,
        "the server's peak memory grew by {growth} bytes for a result of {result_bytes} bytes"
    );
    server.assert_healthy_and_clean().await;
}
