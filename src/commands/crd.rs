//! `pyexec crd`: prints the PythonExecution CustomResourceDefinition (`crds/` holds its output).

use std::io::Write;

use crate::crd::crd_yaml;

/// Why the CRD could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum CrdCommandError {
    #[error(transparent)]
    Generate(#[from] crate::crd::CrdError),
    #[error("writing the CRD to stdout: {0}")]
    Write(#[from] std::io::Error),
}

pub fn run() -> Result<(), CrdCommandError> {
    let yaml = crd_yaml()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(yaml.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
