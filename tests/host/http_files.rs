//! Files in and files out over real HTTP with real nsjail: a request's `files` are in the
//! script's working directory, read-only; what the script leaves in `output/` (and the
//! matplotlib figures it left open) comes back in the response, within its cap, never through a
//! symbolic link; and no execution sees another's files. Each case runs on a server without a
//! pool (cold) and on one whose scripts run in ready sandboxes (warm, checked by the hit counter).

mod common;

use base64::Engine;
use common::Server;
use serde_json::{json, Value};

const HITS: &str = "pyexec_pool_hits_total";

/// A server whose every run is cold, and one whose runs are warm.
struct Both {
    cold: Server,
    warm: Server,
}

impl Both {
    async fn start() -> Both {
        let (cold, warm) = tokio::join!(
            Server::start_with(&["--pool-max", "0"]),
            Server::start_with(&["--pool-min", "1", "--pool-max", "1"])
        );
        Both { cold, warm }
    }

    /// Runs `body` on both servers, the warm one in a ready sandbox; returns (path, status, answer).
    async fn run(&self, body: &Value) -> Vec<(&'static str, u16, Value)> {
        let (status, answer) = self.cold.execute_body(body).await;
        let cold = ("cold", status, answer);
        self.warm.wait_for_each_kind(1).await;
        let before = self.warm.metric(HITS).await.expect("hit counter");
        let (status, answer) = self.warm.execute_body(body).await;
        assert_eq!(self.warm.metric(HITS).await, Some(before + 1.0), "not run warm: {answer}");
        vec![cold, ("warm", status, answer)]
    }

    async fn assert_healthy_and_clean(&self) {
        self.cold.assert_healthy_and_clean().await;
        self.warm.assert_healthy_and_clean().await;
    }
}

fn decode(text: &Value) -> Vec<u8> {
    let text = text.as_str().expect("base64 text");
    base64::engine::general_purpose::STANDARD.decode(text).expect("valid base64")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The output files of an answer, by name.
fn files(answer: &Value) -> Vec<(String, Vec<u8>, Value)> {
    answer["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| (f["name"].as_str().unwrap_or("").to_string(), decode(&f["content_base64"]), f.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn input_files_are_read_only_in_the_working_directory_text_and_bytes_exactly() {
    let both = Both::start().await;
    let script = r#"
import os

def main():
    import pandas as pd
    df = pd.read_csv("data.csv")
    try:
        open("data.csv", "a").write("9,9\n")
        write = "written"
    except OSError as exc:
        write = type(exc).__name__
    return {
        "cwd": os.getcwd(),
        "sum": int(df["b"].sum()),
        "write": write,
        "text": open("notes.txt", encoding="utf-8", newline="").read(),
        "bytes": list(open("blob.bin", "rb").read()),
        "modes": sorted(oct(os.stat(name).st_mode & 0o777) for name in ("data.csv", "notes.txt", "blob.bin")),
    }
"#;
    let blob: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let body = json!({
        "script": script,
        "files": {
            "data.csv": "a,b\n1,2\n3,4\n",
            "notes.txt": "é\u{1F600}\nline\r\n\u{0}end",
            "blob.bin": {"base64": b64(&blob)},
        },
    });
    for (path, status, answer) in both.run(&body).await {
        assert_eq!(status, 200, "{path}: {answer}");
        let result = &answer["result"];
        assert_eq!(result["cwd"], "/tmp", "{path}");
        assert_eq!(result["sum"], 6, "{path}: pandas read the CSV");
        assert_eq!(result["write"], "PermissionError", "{path}: input files are read-only");
        assert_eq!(result["text"], "é\u{1F600}\nline\r\n\u{0}end", "{path}");
        assert_eq!(result["bytes"], json!(blob), "{path}: base64 content arrives byte for byte");
        assert_eq!(result["modes"], json!(["0o444", "0o444", "0o444"]), "{path}");
        assert!(answer.get("files").is_none(), "{path}: input files do not come back: {answer}");
    }
    both.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_file_written_out_comes_back_byte_for_byte_and_the_cap_names_what_it_left_out() {
    let both = Both::start().await;
    let script = r#"
import os

def main():
    os.makedirs("output")
    open("output/all-bytes.bin", "wb").write(bytes(range(256)) * 3)
    open("output/b-large.bin", "wb").write(b"x" * 5000)
    open("output/c.csv", "w").write("a,b\n1,2\n")
    return {}
"#;
    let body = json!({"script": script, "limits": {"output_files_bytes": 4000}});
    let expected: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    for (path, status, answer) in both.run(&body).await {
        assert_eq!(status, 200, "{path}: {answer}");
        let files = files(&answer);
        let names: Vec<&str> = files.iter().map(|(name, _, _)| name.as_str()).collect();
        assert_eq!(names, ["all-bytes.bin", "c.csv"], "{path}: {answer}");
        assert_eq!(files[0].1, expected, "{path}: binary content byte for byte");
        assert_eq!(files[0].2["size"], 768, "{path}");
        assert_eq!(files[0].2["media_type"], "application/octet-stream", "{path}");
        assert_eq!(
            (files[1].1.as_slice(), &files[1].2["media_type"]),
            (&b"a,b\n1,2\n"[..], &json!("text/csv")),
            "{path}"
        );
        assert_eq!(answer["files_truncated"], true, "{path}");
        assert_eq!(answer["files_omitted"], json!(["b-large.bin"]), "{path}");
    }
    both.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn links_folders_and_special_files_in_the_output_folder_leak_nothing() {
    let both = Both::start().await;
    let script = r#"
import os

def main():
    os.makedirs("output/sub")
    open("output/sub/inner.txt", "w").write("inner")
    os.symlink("/etc/passwd", "output/passwd")
    os.symlink("/opt/pyexec/pyvenv.cfg", "output/venv.cfg")
    os.mkfifo("output/fifo")
    open("output/ok.txt", "w").write("ok")
    return {}
"#;
    for (path, status, answer) in both.run(&json!({"script": script})).await {
        assert_eq!(status, 200, "{path}: {answer}");
        let names: Vec<String> = files(&answer).into_iter().map(|(name, _, _)| name).collect();
        assert_eq!(names, ["ok.txt"], "{path}: {answer}");
        assert_eq!(answer["files_omitted"], json!(["fifo", "passwd", "sub/", "venv.cfg"]), "{path}");
        assert!(!answer.to_string().contains("root:"), "{path}");
    }
    // The output folder itself as a link is not followed either.
    let linked = "import os\ndef main():\n    os.symlink('/opt/pyexec', 'output')\n    return {}\n";
    for (path, status, answer) in both.run(&json!({"script": linked})).await {
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(answer.get("files").is_none(), "{path}: {answer}");
        assert_eq!(answer["files_omitted"], json!(["output"]), "{path}");
    }
    both.assert_healthy_and_clean().await;
}

/// The width and height of a PNG, from its signature and first chunk (IHDR).
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "the PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk is IHDR");
    let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

#[tokio::test]
async fn open_figures_come_back_as_png_files() {
    let both = Both::start().await;
    let pyplot = r#"
import matplotlib.pyplot as plt

def main():
    plt.plot([1, 2, 3], [4, 1, 9])
    plt.figure(figsize=(3, 2), dpi=100)
    plt.bar(["a", "b"], [1, 2])
    return {"backend": plt.get_backend()}
"#;
    for (path, status, answer) in both.run(&json!({"script": pyplot})).await {
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["result"]["backend"].as_str().map(str::to_lowercase).as_deref(), Some("agg"), "{path}");
        let files = files(&answer);
        let names: Vec<&str> = files.iter().map(|(name, _, _)| name.as_str()).collect();
        assert_eq!(names, ["figure-1.png", "figure-2.png"], "{path}: {answer}");
        assert_eq!(files[0].2["media_type"], "image/png", "{path}");
        assert_eq!(png_size(&files[0].1), (640, 480), "{path}: matplotlib's default size");
        assert_eq!(png_size(&files[1].1), (300, 200), "{path}");
        assert_eq!(answer["stderr"], "", "{path}: no warning about fonts or caches");
    }
    // pandas' own plotting, as the README shows it.
    let pandas = r#"
import pandas as pd

def main():
    df = pd.DataFrame({"x": [1, 2, 3], "y": [2, 4, 8]})
    df.plot(x="x", y="y")
    return {"rows": len(df)}
"#;
    for (path, status, answer) in both.run(&json!({"script": pandas})).await {
        assert_eq!(status, 200, "{path}: {answer}");
        let files = files(&answer);
        assert_eq!(files.len(), 1, "{path}: {answer}");
        assert_eq!(png_size(&files[0].1), (640, 480), "{path}");
    }
    both.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn an_execution_never_sees_the_files_of_one_before_it() {
    let both = Both::start().await;
    let first = json!({
        "script": "import os\ndef main():\n    os.makedirs('output')\n    open('output/left.txt', 'w').write('x')\n    open('scratch.txt', 'w').write('x')\n    return {}\n",
        "files": {"secret.csv": "a\n1\n"},
    });
    let second = json!({
        "script": "import os\ndef main():\n    return {'tmp': sorted(os.listdir('/tmp')), 'cwd': sorted(os.listdir('.'))}\n",
    });
    for server in [&both.cold, &both.warm] {
        for _ in 0..2 {
            let (status, answer) = server.execute_body(&first).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(files(&answer).len(), 1, "{answer}");
            // The pool is refilled between runs: the next one runs in a sandbox of its own.
            let (status, answer) = server.execute_body(&second).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["result"]["tmp"], json!([]), "{answer}");
            assert_eq!(answer["result"]["cwd"], json!([]), "{answer}");
            assert!(answer.get("files").is_none() && answer.get("files_truncated").is_none(), "{answer}");
        }
    }
    assert!(both.warm.metric(HITS).await.unwrap_or(0.0) >= 1.0, "the warm server ran some of them warm");
    both.assert_healthy_and_clean().await;
}

#[tokio::test]
async fn a_response_without_files_has_exactly_the_keys_it_always_had() {
    let both = Both::start().await;
    let body = json!({"script": "def main():\n    return {'a': 1}\n"});
    for (path, status, answer) in both.run(&body).await {
        assert_eq!(status, 200, "{path}: {answer}");
        let keys: Vec<&str> = answer.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "result",
                "stdout",
                "stderr",
                "returncode",
                "outcome",
                "id",
                "duration_ms",
                "stdout_truncated",
                "stderr_truncated"
            ],
            "{path}"
        );
    }
}

#[tokio::test]
async fn every_refused_file_is_a_400_saying_what_is_wrong() {
    let server =
        Server::start_with(&["--pool-max", "0", "--max-input-files", "2", "--max-input-files-bytes", "1000"]).await;
    let script = "def main():\n    return {}\n";
    let long = "x".repeat(256);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"a/b.csv": "x"}), "never a path"),
        (json!({"../x": "x"}), "never a path"),
        (json!({"..": "x"}), "name folders"),
        (json!({".": "x"}), "name folders"),
        (json!({"": "x"}), "must not be empty"),
        (json!({"a\u{0}b": "x"}), "NUL"),
        (json!({long.as_str(): "x"}), "longer than 255 bytes"),
        (json!({"output": "x"}), "the folder the script's files come back from"),
        (json!({"a": "x", "b": "x", "c": "x"}), "3 files sent; this server takes at most 2"),
        (json!({"a": "x".repeat(600), "b": {"base64": b64(&[0u8; 600])}}), "1200 bytes sent in all"),
        (json!({"a": {"base64": "not base64!"}}), "is not valid base64"),
        (json!({"a": {"base64": "AAEC\nAAEC"}}), "is not valid base64"),
        (json!({"a": 7}), "must be a string (its text) or {\"base64\""),
        (json!({"a": {"base64": "AA==", "name": "b"}}), "must be a string"),
        (json!(["a"]), "must be an object mapping file names"),
    ];
    for (files, expected) in cases {
        let (status, answer) = server.execute_body(&json!({"script": script, "files": files})).await;
        assert_eq!(status, 400, "{files}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{files}: {error:?} should say {expected:?}");
    }
    // A file larger than the run's file-size limit, which the request itself lowered.
    let body = json!({"script": script, "files": {"a": "x".repeat(900)}, "limits": {"file_size_mb": 1, "tmp_mb": 1}});
    let (status, _) = server.execute_body(&body).await;
    assert_eq!(status, 200, "900 bytes fit a 1 MiB file");
    server.assert_healthy_and_clean().await;
}
