//! `pyexec crd`: prints the PythonExecution CustomResourceDefinition (`crds/` holds its output).

use std::io::Write;

use super::{Error, Result};
use crate::crd::crd_yaml;

pub fn run() -> Result<()> {
    let yaml = crd_yaml()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(yaml.as_bytes()).and_then(|()| stdout.flush()).map_err(Error::WriteCrd)
}
