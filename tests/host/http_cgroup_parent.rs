//! Servers that share one `--cgroup-parent` (two `make run`s, a test beside a running service):
//! each keeps its runs in its own cgroups, and a server removes the empty cgroups that servers
//! which are gone left behind. Real servers over HTTP, real nsjail, real cgroups.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

const HELLO: &str = "def main():\n    return {\"message\": \"Hello World\"}\n";
/// Runs long enough for another server's whole run to start and end meanwhile.
const SLEEPER: &str = "import time\n\ndef main():\n    time.sleep(2)\n    return {\"slept\": True}\n";

/// The hierarchies a server makes its run cgroups in: the v1 controllers, or the v2 root.
fn hierarchies() -> Vec<PathBuf> {
    let v1: Vec<PathBuf> = ["memory", "pids", "cpu"]
        .iter()
        .map(|controller| Path::new("/sys/fs/cgroup").join(controller))
        .filter(|dir| dir.join("cgroup.procs").exists())
        .collect();
    if v1.is_empty() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        v1
    }
}

#[tokio::test]
async fn two_servers_under_one_cgroup_parent_never_share_a_run_cgroup() {
    let parent = format!("pyexec-test-{}-shared", std::process::id());
    let pool_off = ["--pool-max", "0"];
    let mut first = Server::start_under(&parent, &pool_off).await;
    // The first server's run leaves it an idle cgroup, which it takes again for its next run.
    let (status, body) = first.execute(HELLO, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"message": "Hello World"})), "{body}");

    let mut second = Server::start_under(&parent, &pool_off).await;
    let sleeping = {
        let client = second.client().clone();
        let url = second.url("/execute");
        tokio::spawn(async move {
            let response = client.post(url).json(&json!({"script": SLEEPER})).send().await.expect("POST");
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.expect("JSON"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // The servers share the parent: the first one's view of it shows the second one's run.
    while first.occupied_cgroups().is_empty() {
        assert!(Instant::now() < deadline, "the second server's run never entered a cgroup");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Meanwhile the first server runs (and, after the run, empties) its own cgroup. Were it
    // the second server's, that would kill the sleeping run.
    let (status, body) = first.execute(HELLO, None).await;
    assert_eq!((status, &body["result"]), (200, &json!({"message": "Hello World"})), "{body}");

    let (status, body) = sleeping.await.expect("the sleeping request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "success", "the second server's run was not touched: {body}");
    assert_eq!(body["result"], json!({"slept": true}), "{body}");

    let names: Vec<String> = first
        .run_cgroups()
        .iter()
        .filter_map(|dir| Path::new(dir).file_name().map(|name| name.to_string_lossy().into_owned()))
        .collect();
    for server in [&first, &second] {
        let pid = server.pid().expect("running");
        assert!(names.iter().any(|name| name.starts_with(&format!("slot-{pid}-"))), "{pid}: {names:?}");
    }
    second.assert_healthy_and_clean().await;
    first.assert_healthy_and_clean().await;
    // The first server made the parent, so it removes it: after the second one has gone.
    second.stop();
    first.stop();
    assert!(first.run_cgroups().is_empty(), "left: {:?}", first.run_cgroups());
}

#[tokio::test]
async fn a_server_removes_the_empty_cgroups_of_servers_that_are_gone() {
    let parent = format!("pyexec-test-{}-orphans", std::process::id());
    // A pid that no process has now: one that has just exited and been reaped.
    let gone = std::process::Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id();
    let mut gone = gone;
    gone.wait().expect("wait");
    let orphan = format!("slot-{gone_pid}-0");
    let unrelated = "not-a-slot";
    for hierarchy in hierarchies() {
        for name in [orphan.as_str(), unrelated] {
            std::fs::create_dir_all(hierarchy.join(&parent).join(name)).expect("create a cgroup");
        }
    }

    let mut server = Server::start_under(&parent, &["--pool-max", "0"]).await;
    for hierarchy in hierarchies() {
        assert!(!hierarchy.join(&parent).join(&orphan).exists(), "{orphan} is left in {}", hierarchy.display());
        assert!(hierarchy.join(&parent).join(unrelated).exists(), "{unrelated} is not a slot; it stays");
    }
    let (status, body) = server.execute(HELLO, None).await;
    assert_eq!(status, 200, "{body}");
    server.stop();

    // The parent existed before the server, so the test removes it.
    for hierarchy in hierarchies() {
        std::fs::remove_dir(hierarchy.join(&parent).join(unrelated)).expect("remove the unrelated cgroup");
        std::fs::remove_dir(hierarchy.join(&parent)).expect("the parent is empty once the server has gone");
    }
}
