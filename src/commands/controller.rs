//! `pyexec controller`: runs PythonExecutions in sandbox pods until SIGTERM or Ctrl-C.

use super::Result;
use crate::controller::{self, ControllerArgs};

pub async fn run(args: ControllerArgs) -> Result<()> {
    Ok(controller::run(args).await?)
}
