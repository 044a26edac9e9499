//! Executions through the API on the cluster: each is a PythonExecution the API submitted;
//! submit, long-poll, the event stream, listing, cancel (which deletes it and its pod), and the
//! refusals.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use pyexec::crd::PythonExecution;
use serde_json::{json, Value};

use super::sse::{parse_events, printed};
use super::{api_token, post_script, run_case, Case, FINISH_TIMEOUT, PANDAS_SUM};

/// The API's HTTP client, with the token when the chart has one.
struct Api {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    async fn new(case: &Case) -> Api {
        let client = reqwest::Client::builder().timeout(FINISH_TIMEOUT).build().expect("an HTTP client");
        Api { client, url: case.settings.url.clone(), token: api_token().await }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = self.authorized(request).send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn submit(&self, script: &str) -> String {
        let request = self.client.post(format!("{}/executions", self.url)).json(&json!({ "script": script }));
        let (status, body) = self.send(request).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["state"], "queued", "{body}");
        body["id"].as_str().expect("an id").to_string()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.url))).await
    }

    /// The API's pyexec_executions_unfinished gauge.
    async fn unfinished(&self) -> f64 {
        self.metric("pyexec_executions_unfinished ").await.expect("the gauge")
    }

    /// The value of the API's metric line that starts with `series` (name, labels and a space).
    async fn metric(&self, series: &str) -> Option<f64> {
        let response = self.authorized(self.client.get(format!("{}/metrics", self.url))).send().await;
        let text = response.expect("the API answers").text().await.expect("the metrics");
        let line = text.lines().find(|l| l.starts_with(series));
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    }

    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            let (status, body) = self.get(&format!("/executions/{id}?wait=30")).await;
            assert_eq!(status, 200, "{body}");
            if ["succeeded", "failed", "cancelled"].contains(&body["state"].as_str().unwrap_or_default()) {
                return body;
            }
            assert!(Instant::now() < deadline, "execution {id} did not finish: {body}");
        }
    }
}

async fn delete_execution(case: &Case, name: &str) {
    let _ = case.executions.delete(name, &DeleteParams::background()).await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_submitted_execution_is_a_python_execution_that_answers_what_execute_answers() {
    run_case("exec-submit", |case| async move {
        let api = Api::new(&case).await;
        let id = api.submit(PANDAS_SUM).await;
        let execution: PythonExecution = case.executions.get(&id).await.expect("its PythonExecution");
        assert!(execution.spec.ttl_seconds_after_finished.is_some(), "the cluster removes it after its time");

        let body = api.finished(&id).await;
        let (direct_status, direct) = post_script(&case.settings.url, PANDAS_SUM).await;
        assert_eq!(body["state"], "succeeded", "{body}");
        assert_eq!(body["http_status"], direct_status);
        assert_eq!(body["response"]["result"], direct["result"]);
        assert_eq!(body["response"]["result"], json!({"sum": 6}));

        let (status, page) = api.get("/executions?limit=500").await;
        assert_eq!(status, 200, "{page}");
        let listed = page["executions"].as_array().expect("a page");
        assert!(listed.iter().any(|e| e["id"] == id.as_str()), "listed: {page}");

        let events = api.authorized(api.client.get(format!("{}/executions/{id}/events", api.url)));
        let text = events.send().await.expect("events").text().await.expect("the stream");
        assert!(text.contains("event: result"), "{text}");
        assert!(text.trim_end().ends_with('}'), "the stream ends with the result: {text}");
        delete_execution(&case, &id).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn cancelling_a_running_execution_deletes_it_and_stops_its_pod() {
    run_case("exec-cancel", |case| async move {
        let api = Api::new(&case).await;
        let id = api.submit("import time\ndef main():\n    time.sleep(30)\n    return {}\n").await;
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            let (_, body) = api.get(&format!("/executions/{id}")).await;
            if body["state"] == "running" {
                break;
            }
            assert!(Instant::now() < deadline, "never running: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The API counts it as unfinished (every few seconds, from its watch).
        while api.unfinished().await < 1.0 {
            assert!(Instant::now() < deadline, "pyexec_executions_unfinished never counted it");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let execution: PythonExecution = case.executions.get(&id).await.expect("its PythonExecution");
        let pod = execution.status.and_then(|s| s.pod_name).expect("a running execution names its pod");
        let (status, body) = api.send(api.client.delete(format!("{}/executions/{id}", api.url))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "cancelled", "{body}");

        // Its pod goes with it, long before the script's 30 s.
        let pods: kube::Api<Pod> = kube::Api::namespaced(case.client.clone(), &case.settings.namespace);
        let cancelled = Instant::now();
        while pods.get_opt(&pod).await.expect("pods").is_some() {
            assert!(cancelled.elapsed() < Duration::from_secs(25), "its pod outlived the cancel");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, _) = api.get(&format!("/executions/{id}")).await;
        assert_eq!(status, 404, "a cancelled execution is deleted");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn executions_refuse_bad_ids_bad_bodies_and_missing_tokens() {
    run_case("exec-refuse", |case| async move {
        let api = Api::new(&case).await;
        assert_eq!(api.get("/executions/pyx-nosuch1").await.0, 404);
        assert_eq!(api.get("/executions/Not_A_Name").await.0, 404);
        let bad = api.client.post(format!("{}/executions", api.url)).json(&json!({"scrip": "def main(): pass"}));
        assert_eq!(api.send(bad).await.0, 400);
        if api.token.is_some() {
            let response = api.client.get(format!("{}/executions", api.url)).send().await.expect("the API answers");
            assert_eq!(response.status().as_u16(), 401, "no token, no listing");
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn files_a_script_leaves_and_its_open_figures_come_back_through_the_status() {
    run_case("files-out", |case| async move {
        let api = Api::new(&case).await;
        let script = "import os\nimport matplotlib.pyplot as plt\ndef main():\n    os.makedirs('output', exist_ok=True)\n    open('output/data.bin', 'wb').write(bytes(range(256)))\n    plt.plot([1, 2, 3], [2, 4, 8])\n    return {'ok': True}\n";
        let request = api.client.post(format!("{}/execute", api.url)).json(&json!({ "script": script }));
        let (status, body) = api.send(request).await;
        assert_eq!(status, 200, "{body}");
        let files = body["files"].as_array().expect("files in the answer");
        let content = |name: &str| {
            let file = files.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("{name} in {body}"));
            let encoded = file["content_base64"].as_str().expect("base64 content");
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).expect("valid base64")
        };
        assert_eq!(content("data.bin"), (0..=255u8).collect::<Vec<_>>(), "byte for byte");
        let png = content("figure-1.png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.get(12..16) == Some(b"IHDR"), "a PNG: {:?}", &png[..16.min(png.len())]);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn files_sent_in_reach_the_script_through_the_spec_and_past_its_size_are_refused() {
    run_case("files-in", |case| async move {
        let api = Api::new(&case).await;
        let script = "import pandas as pd\ndef main():\n    df = pd.read_csv('in.csv')\n    raw = open('raw.bin', 'rb').read()\n    try:\n        open('in.csv', 'a').write('x')\n        writable = True\n    except OSError:\n        writable = False\n    return {'sum': int(df['b'].sum()), 'raw': list(raw), 'writable': writable}\n";
        let files = json!({"in.csv": "a,b\n1,2\n3,4\n", "raw.bin": {"base64": "AP8Q"}});
        let request = api.client.post(format!("{}/execute", api.url)).json(&json!({"script": script, "files": files}));
        let (status, body) = api.send(request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], json!({"sum": 6, "raw": [0, 255, 16], "writable": false}), "{body}");

        // An execution carries them in its PythonExecution's spec.
        let request = api.client.post(format!("{}/executions", api.url)).json(&json!({"script": script, "files": files}));
        let (status, submitted) = api.send(request).await;
        assert_eq!(status, 202, "{submitted}");
        let id = submitted["id"].as_str().expect("an id").to_string();
        let stored = case.executions.get(&id).await.expect("its PythonExecution");
        assert_eq!(stored.spec.files.map(Value::Object), Some(files.clone()));
        let finished = api.finished(&id).await;
        assert_eq!(finished["response"]["result"]["sum"], 6, "{finished}");
        delete_execution(&case, &id).await;

        // Past what a PythonExecution stores: a 400 that says so, and nothing is created.
        let big = json!({"big.txt": "x".repeat(pyexec::crd::MAX_SPEC_BYTES)});
        let request = api.client.post(format!("{}/execute", api.url)).json(&json!({"script": script, "files": big}));
        let (status, body) = api.send(request).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(&format!("at most {}", pyexec::crd::MAX_SPEC_BYTES)), "{body}");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn a_python_execution_whose_files_the_api_would_refuse_fails_before_any_pod() {
    run_case("files-refused", |case| async move {
        let name = case.name("bad-name");
        let Value::Object(files) = json!({"../escape.txt": "x"}) else { unreachable!("an object") };
        let spec = pyexec::crd::PythonExecutionSpec {
            script: "def main():\n    return {}\n".into(),
            limits: None,
            files: Some(files),
            ttl_seconds_after_finished: None,
        };
        case.executions
            .create(&kube::api::PostParams::default(), &PythonExecution::new(&name, spec))
            .await
            .expect("the API server stores it");
        let status = super::status_of(&case.wait_finished(&name).await);
        assert_eq!(status.phase, Some(pyexec::crd::Phase::Failed), "{status:?}");
        let finished = status.conditions.iter().find(|c| c.type_ == "Finished").expect("a Finished condition");
        assert_eq!(finished.reason, "FilesRefused", "{finished:?}");
        assert!(status.error.as_deref().unwrap_or_default().contains("never a path"), "{status:?}");
        assert_eq!(status.pod_name, None, "no pod was made");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn the_event_stream_carries_prints_from_the_pod_as_they_happen_then_the_result() {
    run_case("exec-stream", |case| async move {
        let api = Api::new(&case).await;
        let script = "import sys, time\ndef main():\n    print('one')\n    time.sleep(4)\n    print('two', file=sys.stderr)\n    time.sleep(0.5)\n    print('three')\n    return {'done': True}\n";
        let id = api.submit(script).await;
        let events = api.authorized(api.client.get(format!("{}/executions/{id}/events", api.url)));
        let mut response = events.send().await.expect("GET events");
        assert_eq!(response.status(), 200);

        let mut text = String::new();
        while !printed(&parse_events(&text), "stdout").contains("one") {
            let chunk = response.chunk().await.expect("the stream").expect("more events before the first print");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        // The first print came from the pod's log while the script still sleeps.
        let (_, now) = api.get(&format!("/executions/{id}")).await;
        assert_eq!(now["state"], "running", "{now}");

        while let Some(chunk) = response.chunk().await.expect("the stream") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let events = parse_events(&text);
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).filter(|name| *name != "state").collect();
        assert_eq!(names.last(), Some(&"result"), "{text}");
        assert_eq!(printed(&events, "stdout"), "one\nthree\n", "{text}");
        assert_eq!(printed(&events, "stderr"), "two\n", "{text}");
        let (_, result) = events.last().expect("a result").clone();
        assert_eq!(result["response"]["result"], json!({"done": true}), "{text}");
        delete_execution(&case, &id).await;
    })
    .await;
}

/// Executions the shedding case creates before its first request, and at most in all: one more
/// joins with each accepted request (about 3 a second), within what the sandbox namespace's
/// quota and a small node schedule before the pod start timeout.
const INITIAL_BACKLOG: usize = 12;
const MAX_BACKLOG: usize = 30;

#[tokio::test]
#[ignore = "needs a cluster: run make cluster-e2e"]
async fn an_execution_that_would_wait_past_its_timeout_for_a_pod_is_shed_with_429_and_retry_after() {
    run_case("exec-shed", |case| async move {
        let api = Api::new(&case).await;
        let shed_series = "pyexec_rejected_requests_total{reason=\"overloaded\"} ";
        let shed_before = api.metric(shed_series).await.unwrap_or(0.0);
        // A backlog made with the Kubernetes API itself, as kubectl would: more executions than
        // the pools hold, so most wait for pods of their own. It grows while nothing is shed,
        // faster than a node starts pods, so executions keep waiting however fast the node is.
        let sleeper = "import time\ndef main():\n    time.sleep(2)\n    return {'slept': True}\n";
        let mut backlog = Vec::new();
        for i in 0..INITIAL_BACKLOG {
            backlog.push(case.create(&format!("sleeper-{i}"), sleeper, None, None).await);
        }
        // A request whose timeout is far shorter than the wait for a pod is refused at once once
        // the API has watched executions wait for a few seconds.
        let body = json!({ "script": super::HELLO, "limits": { "timeout_seconds": 0.5 } });
        let deadline = Instant::now() + Duration::from_secs(90);
        let (retry_after, refusal) = loop {
            let request = api.client.post(format!("{}/execute", api.url)).json(&body);
            let response = api.authorized(request).send().await.expect("the API answers");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
            let answer: Value = response.json().await.expect("a JSON body");
            if status == 429 {
                break (retry_after, answer);
            }
            assert_eq!(status, 200, "an accepted request is answered: {answer}");
            assert!(Instant::now() < deadline, "never shed while {} executions waited", backlog.len());
            if backlog.len() < MAX_BACKLOG {
                backlog.push(case.create(&format!("sleeper-{}", backlog.len()), sleeper, None, None).await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let error = refusal["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("overloaded: "), "{refusal}");
        let seconds: u64 = retry_after.expect("a Retry-After header").parse().expect("whole seconds");
        assert!(seconds >= 1, "Retry-After {seconds}");
        let shed_after = api.metric(shed_series).await.expect("the shed counter");
        assert!(shed_after > shed_before, "pyexec_rejected_requests_total{{reason=overloaded}} counted it");
        // What was accepted still runs: every execution of the backlog succeeds.
        for name in &backlog {
            let finished = case.wait_finished(name).await;
            assert_eq!(super::status_of(&finished).outcome.as_deref(), Some("success"), "{name}");
        }
    })
    .await;
}
