//! The repository's path on the host stays out of every sandbox: no file a script can read names
//! it, the Python environment included (its files record the path it was made at, so it is made
//! at /opt/pyexec, where the jail mounts it).

use serde_json::{json, Value};

use crate::common::{repo, Server};

/// What a sandbox sees of the installation: the Python environment, the standard library and
/// the time zones.
const SCANNED_ROOTS: [&str; 3] = ["/opt/pyexec", "/usr/lib/python3.11", "/usr/share/zoneinfo"];

/// Reading ~220 MB takes about a second on an idle machine; the server's maxima rather than the
/// defaults' 10 s keep a busy one from failing the scan.
fn scan_limits() -> Value {
    json!({"timeout_seconds": 60, "cpu_seconds": 60})
}

/// A script that reads every file under `roots` and every symlink's target, and returns the
/// paths whose bytes hold `needle`, how many files it read per root, and the paths it could not
/// read (symlinks to what the jail lacks aside); it also imports numpy and pandas, which must
/// still work from the environment.
fn scan_script(needle: &str, roots: &[&str]) -> String {
    let needle = serde_json::to_string(needle).expect("JSON string");
    let roots = serde_json::to_string(roots).expect("JSON list");
    format!(
        r#"import os

NEEDLE = os.fsencode({needle})
ROOTS = {roots}

def main():
    import numpy, pandas
    found, unreadable, read = [], [], {{root: 0 for root in ROOTS}}
    for root in ROOTS:
        for directory, dirs, files in os.walk(root, onerror=lambda err: unreadable.append(err.filename)):
            for name in dirs + files:
                path = os.path.join(directory, name)
                if os.path.islink(path) and NEEDLE in os.fsencode(os.readlink(path)):
                    found.append(path)
            for name in files:
                path = os.path.join(directory, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    # A symlink to what the jail lacks (e.g. /etc/localtime): its target is checked above.
                    if not (os.path.islink(path) and not os.path.exists(path)):
                        unreadable.append(path)
                    continue
                read[root] += 1
                if NEEDLE in data:
                    found.append(path)
    return {{"found": found, "read": read, "unreadable": unreadable,
            "numpy": numpy.__version__, "pandas": pandas.__version__}}
"#
    )
}

/// Every file a script can read under the Python environment, the standard library and the time
/// zones (bytes, .pyc files and pyvenv.cfg included) and every symlink there is free of the
/// repository's absolute path, and numpy and pandas still import from the environment.
#[tokio::test]
async fn no_file_a_sandbox_can_read_names_the_repository_path() {
    let server = Server::start().await;
    let repo = repo().canonicalize().expect("repository path");
    let repo = repo.to_str().expect("UTF-8 repository path");
    let (status, body) = server.execute(&scan_script(repo, &SCANNED_ROOTS), Some(scan_limits())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "success", "{body}");
    let result = &body["result"];
    let found = result["found"].as_array().expect("found list");
    assert!(
        found.is_empty(),
        "{} files in the sandbox name {repo}, e.g. {:?}",
        found.len(),
        &found[..found.len().min(10)]
    );
    // A walk that read nothing would pass vacuously: numpy and pandas alone are thousands of files.
    let read_in_env = result["read"]["/opt/pyexec"].as_u64().unwrap_or_default();
    assert!(read_in_env > 1000, "read only {read_in_env} files under /opt/pyexec: {result}");
    for root in SCANNED_ROOTS {
        assert!(result["read"][root].as_u64().unwrap_or_default() > 0, "read nothing under {root}: {result}");
    }
    assert_eq!(result["unreadable"], json!([]), "files the scan could not read: {result}");
    assert!(result["numpy"].as_str().is_some_and(|v| !v.is_empty()), "{result}");
    assert!(result["pandas"].as_str().is_some_and(|v| !v.is_empty()), "{result}");
    server.assert_healthy_and_clean().await;
}

/// The Python environment's pyvenv.cfg, as a script reads it at /opt/pyexec, names no host path:
/// neither the repository nor the environment's own place on the host.
#[tokio::test]
async fn the_python_environments_pyvenv_cfg_names_no_host_path() {
    let server = Server::start().await;
    let script =
        "def main():\n    with open('/opt/pyexec/pyvenv.cfg') as f:\n        return {'pyvenv_cfg': f.read()}\n";
    let (status, body) = server.execute(script, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "success", "{body}");
    let pyvenv_cfg = body["result"]["pyvenv_cfg"].as_str().expect("pyvenv.cfg text");
    let repo = repo().canonicalize().expect("repository path");
    let repo = repo.to_str().expect("UTF-8 repository path");
    assert!(pyvenv_cfg.contains("home = /usr/bin"), "{pyvenv_cfg}");
    assert!(!pyvenv_cfg.contains(repo), "pyvenv.cfg names {repo}:\n{pyvenv_cfg}");
    assert!(!pyvenv_cfg.contains(".tools/python"), "pyvenv.cfg names the host's .tools/python:\n{pyvenv_cfg}");
    server.assert_healthy_and_clean().await;
}
