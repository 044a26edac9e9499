//! Finding the sandbox's installation (nsjail, its configuration, the Python environment, the
//! gVisor tools) and preparing the harness, once at start-up.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::nsjail::{self, Harness};
use crate::sandbox::SandboxError;

/// The harness as byte code of the sandbox's own interpreter, compiled once (outside the jail,
/// by the trusted interpreter, on trusted source); its source if that fails.
pub(in crate::sandbox) fn compile_harness(interpreter: &std::path::Path) -> Harness {
    use std::io::Write;
    let program =
        "import sys,marshal;sys.stdout.write(marshal.dumps(compile(sys.stdin.read(),'harness','exec')).hex())";
    let compiled = std::process::Command::new(interpreter)
        .args(["-I", "-S", "-B", "-c", program])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(nsjail::HARNESS.as_bytes())?;
            }
            child.wait_with_output()
        });
    match compiled {
        Ok(output) if output.status.success() && !output.stdout.is_empty() => {
            Harness::Compiled(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(output) => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&output.stderr), "compiling the harness failed; using its source");
            Harness::Source
        }
        Err(err) => {
            tracing::warn!(error = %err, "compiling the harness failed; using its source");
            Harness::Source
        }
    }
}

pub(in crate::sandbox) fn existing(path: &Path, what: &'static str) -> Result<PathBuf, SandboxError> {
    std::fs::canonicalize(path).map_err(|_| SandboxError::Missing { what, path: path.to_path_buf() })
}

/// A program path as given, or looked up on PATH when it is a bare name.
pub(in crate::sandbox) fn resolve_program(program: &Path, what: &'static str) -> Result<PathBuf, SandboxError> {
    if program.components().count() > 1 {
        return existing(program, what);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| SandboxError::Missing { what, path: program.to_path_buf() })
}
