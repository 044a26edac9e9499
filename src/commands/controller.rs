//! `pyexec controller`: runs PythonExecutions in sandbox pods until SIGTERM or Ctrl-C.

use crate::controller::{self, ControllerArgs};

pub async fn run(args: ControllerArgs) -> controller::Result<()> {
    controller::run(args).await
}
