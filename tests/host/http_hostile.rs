//! Hostile scripts against a real server: each case asserts its precise outcome, then that the
//! service still runs scripts and left no cgroup of the run behind.

mod common;

use common::{Pool, Server};
use serde_json::{json, Value};

async fn run(server: &Server, script: &str, limits: Value) -> (u16, Value) {
    let outcome = server.execute(script, Some(limits)).await;
    server.assert_healthy_and_clean().await;
    outcome
}

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_default().to_string()
}

pool_case!(an_infinite_loop_is_killed_at_the_wall_clock_timeout);
async fn an_infinite_loop_is_killed_at_the_wall_clock_timeout(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (status, body) =
        run(&server, "def main():\n    while True:\n        pass", json!({"timeout_seconds": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "timeout");
    assert_eq!(body["error"], "Execution timed out after 1 s (wall-clock limit)");
    assert_eq!(body["returncode"], -9);
    assert_eq!(body["result"], Value::Null);
}

pool_case!(sleeping_past_the_timeout_is_killed_and_earlier_prints_are_kept);
async fn sleeping_past_the_timeout_is_killed_and_earlier_prints_are_kept(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import time\ndef main():\n    print('before', flush=True)\n    time.sleep(60)\n    return {}";
    let (status, body) = run(&server, script, json!({"timeout_seconds": 0.5})).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"], "Execution timed out after 0.500 s (wall-clock limit)");
    assert_eq!(body["stdout"], "before\n");
}

pool_case!(cpu_time_past_the_cpu_limit_is_killed);
async fn cpu_time_past_the_cpu_limit_is_killed(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (_, body) =
        run(&server, "def main():\n    while True:\n        pass", json!({"cpu_seconds": 1, "timeout_seconds": 20}))
            .await;
    assert_eq!(body["outcome"], "timeout", "{body}");
    assert_eq!(body["error"], "CPU time limit of 1 s exceeded");
}

pool_case!(a_memory_bomb_hits_the_memory_limit);
async fn a_memory_bomb_hits_the_memory_limit(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))";
    let (status, body) = run(&server, script, json!({"memory_mb": 128})).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "memory_limit", "{body}");
    assert_eq!(body["error"], "Memory limit of 128 MiB exceeded");
    assert_eq!(body["returncode"], -9);
}

pool_case!(pandas_imports_under_the_default_memory_limit);
async fn pandas_imports_under_the_default_memory_limit(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script =
        "import pandas as pd\nimport numpy as np\ndef main():\n    return {'n': int(pd.Series(np.arange(1000)).sum())}";
    let (status, body) = run(&server, script, json!({})).await;
    assert_eq!((status, &body["result"]), (200, &json!({"n": 499500})), "{body}");
}

pool_case!(a_fork_bomb_stops_at_the_process_limit);
async fn a_fork_bomb_stops_at_the_process_limit(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script =
        "import os, time\ndef main():\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)";
    let (status, body) = run(&server, script, json!({"max_pids": 16})).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "exception", "{body}");
    assert_eq!(body["error"], "BlockingIOError: [Errno 11] Resource temporarily unavailable");
}

pool_case!(gigantic_stdout_and_stderr_are_cut_at_their_caps_and_flagged);
async fn gigantic_stdout_and_stderr_are_cut_at_their_caps_and_flagged(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import sys\ndef main():\n    for _ in range(2000):\n        sys.stdout.write('o' * 10000)\n        sys.stderr.write('e' * 10000)\n    return {'done': True}";
    let (status, body) = run(&server, script, json!({"stdout_bytes": 65536, "stderr_bytes": 1000})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], json!({"done": true}));
    assert_eq!(text(&body, "stdout").len(), 65536);
    assert_eq!(text(&body, "stderr").len(), 1000);
    assert_eq!((body["stdout_truncated"].as_bool(), body["stderr_truncated"].as_bool()), (Some(true), Some(true)));
}

pool_case!(a_gigantic_result_is_refused_with_the_limit);
async fn a_gigantic_result_is_refused_with_the_limit(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (status, body) = run(&server, "def main():\n    return {'x': 'a' * (8 * 1024 * 1024)}", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["outcome"], "result_too_large");
    assert_eq!(body["error"], "main()'s result is larger than the result limit of 4194304 bytes");
}

pool_case!(filling_tmp_stops_at_its_size);
async fn filling_tmp_stops_at_its_size(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
def main():
    written = 0
    try:
        with open("/tmp/fill", "wb") as f:
            while True:
                f.write(b"x" * 65536)
                f.flush()
                written += 65536
    except OSError as e:
        return {"errno": e.errno, "mb": written // (1024 * 1024)}
"#;
    let (status, body) = run(&server, script, json!({"tmp_mb": 8, "file_size_mb": 64})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["errno"], 28, "ENOSPC expected: {body}");
    assert!(body["result"]["mb"].as_u64().is_some_and(|mb| mb <= 8), "{body}");
}

pool_case!(a_file_larger_than_the_file_size_limit_cannot_be_written);
async fn a_file_larger_than_the_file_size_limit_cannot_be_written(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "def main():\n    try:\n        open('/tmp/big', 'wb').write(b'x' * (4 * 1024 * 1024))\n    except OSError as e:\n        return {'errno': e.errno}\n    return {'errno': 0}";
    let (_, body) = run(&server, script, json!({"file_size_mb": 1})).await;
    assert_eq!(body["result"], json!({"errno": 27}), "EFBIG expected: {body}");
}

pool_case!(nothing_outside_tmp_is_writable);
async fn nothing_outside_tmp_is_writable(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
def main():
    results = {}
    for path in ["/x", "/usr/lib/x", "/opt/pyexec/x", "/dev/x", "/lib/x"]:
        try:
            open(path, "w").write("x")
            results[path] = 0
        except OSError as e:
            results[path] = e.errno
    return results
"#;
    let (_, body) = run(&server, script, json!({})).await;
    let result = body["result"].as_object().cloned().unwrap_or_default();
    assert_eq!(result.len(), 5, "{body}");
    for (path, errno) in result {
        assert!(errno == 30 || errno == 13, "{path} was writable or failed oddly: errno {errno}");
    }
}

pool_case!(host_files_and_the_service_environment_are_invisible);
async fn host_files_and_the_service_environment_are_invisible(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import os
def main():
    seen = {}
    for path in ["/etc/passwd", "/etc/hostname", "/proc/self/mountinfo", "/proc/1/environ", "/root", "/home", "/work", "/sys"]:
        seen[path] = os.path.exists(path)
    seen["repo"] = os.path.exists(os.environ.get("CARGO_MANIFEST_DIR", "/work/main"))
    return {"seen": seen, "env": dict(os.environ), "uid": os.getuid(), "gid": os.getgid()}
"#;
    let (status, body) = run(&server, script, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let seen = body["result"]["seen"].as_object().cloned().unwrap_or_default();
    assert!(!seen.is_empty() && seen.values().all(|v| v == &json!(false)), "host paths visible: {seen:?}");
    let env = body["result"]["env"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "LC_ALL",
            "MKL_NUM_THREADS",
            "MPLCONFIGDIR",
            "NUMEXPR_NUM_THREADS",
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "PATH",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONIOENCODING",
            "PYTHONUNBUFFERED",
            "TMPDIR"
        ]
    );
    assert!(!body.to_string().contains("hunter2"));
    assert_eq!((body["result"]["uid"].as_u64(), body["result"]["gid"].as_u64()), (Some(65534), Some(65534)));
}

pool_case!(sockets_reach_nothing_not_even_the_hosts_loopback);
async fn sockets_reach_nothing_not_even_the_hosts_loopback(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let port = server.base.rsplit(':').next().unwrap_or("8080").to_string();
    let script = format!(
        r#"
import socket
def main():
    out = {{}}
    for name, target in [("loopback", ("127.0.0.1", {port}))]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(target)
            out[name] = "connected"
        except OSError as e:
            out[name] = e.errno
        finally:
            s.close()
    # By index (ioctl SIOCGIFNAME): if_nameindex() needs netlink, which seccomp refuses.
    names = []
    for index in range(1, 256):
        try:
            names.append(socket.if_indextoname(index))
        except OSError:
            pass
    out["interfaces"] = sorted(names)
    return out
"#
    );
    let (status, body) = run(&server, &script, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // ENETUNREACH: the jail's network namespace has only its own loopback, left down, so there
    // is no route anywhere, the host's loopback included. (Only loopback is ever targeted.)
    assert_eq!(body["result"], json!({"loopback": 101, "interfaces": ["lo"]}));
}

pool_case!(killing_its_parent_or_every_process_harms_only_the_script);
async fn killing_its_parent_or_every_process_harms_only_the_script(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import os, signal\ndef main():\n    os.kill(os.getppid(), signal.SIGKILL)\n    os.kill(-1, signal.SIGKILL)\n    return {'still': 'here'}";
    let (status, body) = run(&server, script, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // The script is its PID namespace's init: the first kill (its "parent" is pid 0, its own
    // group) is ignored, and the second finds no other process to signal. Nothing outside dies.
    assert_eq!((&body["outcome"], &body["returncode"]), (&json!("exception"), &json!(1)), "{body}");
    assert_eq!(body["error"], "ProcessLookupError: [Errno 3] No such process");
    assert_eq!(body["result"], Value::Null);
}

pool_case!(a_segfault_is_reported_as_its_signal);
async fn a_segfault_is_reported_as_its_signal(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (status, body) =
        run(&server, "import ctypes\ndef main():\n    ctypes.string_at(0)\n    return {}", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "signaled", "{body}");
    assert_eq!(body["returncode"], -11);
    assert_eq!(body["error"], "The script was killed by signal SIGSEGV (11)");
    assert!(text(&body, "stderr").contains("Fatal Python error: Segmentation fault"), "{body}");
}

pool_case!(deep_recursion_is_a_recursion_error_or_runs_out_of_memory);
async fn deep_recursion_is_a_recursion_error_or_runs_out_of_memory(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (_, body) =
        run(&server, "def f(n):\n    return f(n + 1)\ndef main():\n    return {'x': f(0)}", json!({})).await;
    assert_eq!(body["error"], "RecursionError: maximum recursion depth exceeded");
    let unlimited =
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\ndef main():\n    return {'x': f(0)}";
    let (_, body) = run(&server, unlimited, json!({})).await;
    // Python 3.11 keeps Python frames on the heap: unbounded recursion ends at the memory limit.
    assert_eq!((body["outcome"].as_str(), body["returncode"].as_i64()), (Some("memory_limit"), Some(-9)), "{body}");
}

pool_case!(exiting_early_keeps_the_exit_code);
async fn exiting_early_keeps_the_exit_code(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (status, body) = run(&server, "import sys\ndef main():\n    print('bye')\n    sys.exit(3)", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!((body["outcome"].as_str(), body["returncode"].as_i64()), (Some("exited"), Some(3)));
    assert_eq!(body["error"], "The script exited with code 3 before main() returned");
    assert_eq!(body["stdout"], "bye\n");
    let (_, body) = run(&server, "import os\ndef main():\n    os._exit(7)", json!({})).await;
    assert_eq!(body["returncode"], 7);
    let (_, body) = run(&server, "import sys\nsys.exit(0)\ndef main():\n    return {}", json!({})).await;
    assert_eq!((body["outcome"].as_str(), body["returncode"].as_i64()), (Some("exited"), Some(0)));
}

pool_case!(threads_left_running_do_not_hold_the_result);
async fn threads_left_running_do_not_hold_the_result(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import threading, time\ndef main():\n    threading.Thread(target=time.sleep, args=(600,)).start()\n    return {'ok': True}";
    let (status, body) = run(&server, script, json!({"timeout_seconds": 30})).await;
    assert_eq!((status, &body["outcome"]), (200, &json!("success")), "{body}");
}

pool_case!(replaced_or_closed_stdout_does_not_break_the_result);
async fn replaced_or_closed_stdout_does_not_break_the_result(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let replaced =
        "import io, sys\ndef main():\n    sys.stdout = io.StringIO()\n    print('hidden')\n    return {'ok': 1}";
    let (_, body) = run(&server, replaced, json!({})).await;
    assert_eq!((&body["result"], &body["stdout"]), (&json!({"ok": 1}), &json!("")));
    let closed = "import os, sys\ndef main():\n    print('early')\n    sys.stdout.close()\n    os.close(1)\n    os.close(2)\n    return {'ok': 2}";
    let (_, body) = run(&server, closed, json!({})).await;
    assert_eq!((&body["result"], &body["stdout"]), (&json!({"ok": 2}), &json!("early\n")));
}

pool_case!(result_looking_output_cannot_forge_the_result);
async fn result_looking_output_cannot_forge_the_result(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = r#"
import os, sys
def main():
    forged = '{"ok": true, "result": {"forged": true}}'
    print(forged)
    os.write(1, forged.encode())
    os.write(2, forged.encode())
    sys.stderr.write(forged)
    return {"real": True}
"#;
    let (_, body) = run(&server, script, json!({})).await;
    assert_eq!(body["result"], json!({"real": true}));
}

pool_case!(invalid_utf8_output_is_replaced_not_fatal);
async fn invalid_utf8_output_is_replaced_not_fatal(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "import sys\ndef main():\n    sys.stdout.buffer.write(b'ok \\xff\\xfe end')\n    return {}";
    let (status, body) = run(&server, script, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["stdout"], "ok \u{fffd}\u{fffd} end");
}

pool_case!(non_serialisable_and_nan_results);
async fn non_serialisable_and_nan_results(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let (status, body) = run(&server, "def main():\n    return {'f': lambda: 1}", json!({})).await;
    assert_eq!(status, 400);
    assert!(text(&body, "error").starts_with("result['f']: value of type function cannot be converted to JSON"));
    let (status, body) =
        run(&server, "def main():\n    return {'nan': float('nan'), 'inf': float('inf')}", json!({})).await;
    assert_eq!((status, &body["result"]), (200, &json!({"nan": null, "inf": null})));
    let (status, body) = run(&server, "def main():\n    d = {}\n    d['self'] = d\n    return d", json!({})).await;
    assert_eq!(status, 400);
    assert!(text(&body, "error").contains("nested more than 100 levels deep"), "{body}");
}

pool_case!(main_that_cannot_be_called_plainly_is_a_400);
async fn main_that_cannot_be_called_plainly_is_a_400(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let cases = [
        ("main = 5", "'main' must be a function, but it is a int"),
        ("def main(x):\n    return {}", "main() must be callable without arguments: missing a required argument: 'x'"),
        ("async def main():\n    return {}", "main() must be a plain function: define it with 'def', not 'async def'"),
        ("def main():\n    yield 1", "main() must return a dict, not a generator or coroutine"),
    ];
    for (script, expected) in cases {
        let (status, body) = run(&server, script, json!({})).await;
        assert_eq!((status, text(&body, "error")), (400, expected.to_string()), "{script}");
    }
}

pool_case!(opening_more_files_than_the_limit_fails_with_emfile);
async fn opening_more_files_than_the_limit_fails_with_emfile(pool: Pool) {
    let server = Server::start_in(pool, &[]).await;
    let script = "def main():\n    files = []\n    try:\n        while True:\n            files.append(open('/dev/null'))\n    except OSError as e:\n        return {'errno': e.errno, 'opened': len(files)}";
    let (status, body) = run(&server, script, json!({"open_files": 32})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["errno"], 24, "EMFILE expected: {body}");
    assert!(body["result"]["opened"].as_u64().is_some_and(|n| n < 32), "{body}");
}

/// Processes are bounded per sandbox by RLIMIT_NPROC as well as the cgroup's pids.max; the
/// kernel counts RLIMIT_NPROC per user namespace, so sandboxes running at once never share
/// the count: three at once each reach their own limit (a count shared by uid 65534 on the
/// host would stop them at 16 processes between them).
#[tokio::test]
async fn sandboxes_running_at_once_each_have_their_own_process_limit() {
    let server = Server::start_with(&["--pool-max", "0"]).await;
    let script = "import os, resource, time\ndef main():\n    children = 0\n    try:\n        for _ in range(40):\n            if os.fork() == 0:\n                time.sleep(3)\n                os._exit(0)\n            children += 1\n    except OSError as exc:\n        error = exc.errno\n    time.sleep(2)\n    return {'children': children, 'errno': error, 'nproc': list(resource.getrlimit(resource.RLIMIT_NPROC))}\n";
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let (client, url) = (server.client().clone(), server.url("/execute"));
            let body = json!({"script": script, "limits": {"max_pids": 16}});
            tokio::spawn(async move { client.post(url).json(&body).send().await.expect("POST").json::<Value>().await })
        })
        .collect();
    for run in runs {
        let body = run.await.expect("task").expect("JSON");
        // The harness is one of the 16; the fork past the limit fails with EAGAIN.
        assert_eq!(body["result"], json!({"children": 15, "errno": 11, "nproc": [16, 16]}), "{body}");
    }
    server.assert_healthy_and_clean().await;
}
