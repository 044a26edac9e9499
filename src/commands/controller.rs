//! `pyexec controller`: runs PythonExecutions in sandbox pods until SIGTERM or Ctrl-C.

use crate::controller::{self, ControllerArgs};
use crate::Result;

pub async fn run(args: ControllerArgs) -> Result<()> {
    Ok(controller::run(args).await?)
}
