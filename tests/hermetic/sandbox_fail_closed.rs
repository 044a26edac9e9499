//! `pyexec sandbox --isolation gvisor` fails closed: on a host kernel (this machine, or a pod
//! whose runtime class is not gVisor's) it refuses to run the script and says why in a
//! sandbox_failure envelope. hack/gvisor/sandbox-in-gvisor.sh runs the same command inside runsc,
//! where it runs scripts.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_gvisor_profile_refuses_to_run_on_a_host_kernel() {
    let proc_version = std::fs::read_to_string("/proc/version").expect("/proc/version");
    assert!(!proc_version.contains("-gvisor"), "this test runs on a host kernel, not under gVisor");
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["sandbox", "--isolation", "gvisor", "--script", "def main():\n    return {'ran': True}\n"])
        .env("PYEXEC_LOG", "error")
        .output()
        .expect("pyexec runs");
    assert!(output.status.success(), "the envelope is the answer: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let envelope: Value = serde_json::from_str(stdout.trim()).expect("one JSON envelope");
    assert_eq!(envelope["outcome"], "sandbox_failure", "{envelope}");
    assert_eq!(envelope["result"], Value::Null, "the script did not run");
    let error = envelope["error"].as_str().expect("an error");
    assert!(error.contains("not gVisor's kernel"), "{error}");
}
