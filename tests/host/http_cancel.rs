//! A client that disconnects cancels its execution: over real HTTP, with real nsjail.

mod common;

use std::time::{Duration, Instant};

use common::{Pool, Server};
use serde_json::json;

/// How long the abandoned script would run if nothing cancelled it.
const SLEEP_SECONDS: u64 = 30;

pool_case!(a_client_that_gives_up_kills_its_sandbox_and_frees_its_slot);
async fn a_client_that_gives_up_kills_its_sandbox_and_frees_its_slot(pool: Pool) {
    let server = Server::start_in(pool, &["--max-concurrency", "1", "--timeout-seconds", "60"]).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("client");
    let started = Instant::now();
    let script = format!("import time\ndef main():\n    time.sleep({SLEEP_SECONDS})\n    return {{}}");
    let gave_up = impatient.post(server.url("/execute")).json(&json!({ "script": script })).send().await;
    assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "the client should time out: {gave_up:?}");

    // The run is cancelled: the gauge returns to 0 and nothing of the run is left.
    server.wait_for_in_flight(0).await;
    let cancelled_after = started.elapsed();
    assert_eq!(server.child_processes(), Vec::<u32>::new(), "nsjail or its shell outlived the cancelled run");
    assert_eq!(server.occupied_cgroups(), Vec::<String>::new(), "processes left in the run's cgroups");
    assert_eq!(server.metric("pyexec_cancelled_executions_total").await, Some(1.0));

    // The only slot is free: the next request runs at once.
    let next = Instant::now();
    let (status, body) = server.execute("def main():\n    return {'next': True}", None).await;
    let next_took = next.elapsed();
    assert_eq!((status, &body["result"]), (200, &json!({"next": true})), "{body}");
    eprintln!("cancelled {cancelled_after:?} after the request started; the next request took {next_took:?}");
    assert!(cancelled_after < Duration::from_secs(10), "cancelling took {cancelled_after:?}");
    assert!(next_took < Duration::from_secs(5), "the next request waited {next_took:?}");
    // The cancelled run is not counted as a finished execution.
    assert_eq!(server.metric("pyexec_executions_total{outcome=\"timeout\"}").await, Some(0.0));
    server.assert_healthy_and_clean().await;
}
