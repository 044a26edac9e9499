#![forbid(unsafe_code)]

use clap::Parser;
use pyexec::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pyexec::telemetry::init(&cli.log);
    let outcome: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Serve(args) => pyexec::commands::serve::run(args).await.map_err(Into::into),
        Command::Sandbox(args) => pyexec::commands::sandbox::run(args).await.map_err(Into::into),
        Command::Controller(args) => pyexec::commands::controller::run(args).await.map_err(Into::into),
        Command::Crd => pyexec::commands::crd::run().map_err(Into::into),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "pyexec stopped");
            eprintln!("pyexec: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
