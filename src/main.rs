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
        Command::Controller(args) => pyexec::commands::controller::run(args).await,
        Command::Crd => pyexec::commands::crd::run(),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let chain = pyexec::error::chain(&err);
            tracing::error!(error = %chain, "pyexec stopped");
            eprintln!("pyexec: {chain}");
            std::process::ExitCode::FAILURE
        }
    }
}
