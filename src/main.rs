#![forbid(unsafe_code)]

use clap::Parser;
use pyexec::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pyexec::telemetry::init(&cli.log);
    let outcome = match cli.command {
        Command::Serve(args) => pyexec::commands::serve::run(args).await,
        Command::Sandbox(args) => pyexec::commands::sandbox::run(args).await,
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
