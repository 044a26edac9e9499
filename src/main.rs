#![forbid(unsafe_code)]

use clap::Parser;
use pyexec::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pyexec::telemetry::init(&cli.log);
    let outcome = match cli.command {
        Command::Serve(args) => pyexec::commands::serve::run(*args).await.map(|()| std::process::ExitCode::SUCCESS),
        // `pyexec sandbox --job-on-stdin` has exit codes of its own (no job, not a job).
        Command::Sandbox(args) => pyexec::commands::sandbox::run(args).await,
        Command::Controller(args) => {
            pyexec::commands::controller::run(args).await.map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Crd => pyexec::commands::crd::run().map(|()| std::process::ExitCode::SUCCESS),
        Command::Mcp(args) => pyexec::commands::mcp::run(args).await.map(|()| std::process::ExitCode::SUCCESS),
        Command::Docs(reference) => pyexec::commands::docs::run(reference).map(|()| std::process::ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            let chain = pyexec::telemetry::chain(&err);
            tracing::error!(error = %chain, "pyexec stopped");
            eprintln!("pyexec: {chain}");
            std::process::ExitCode::FAILURE
        }
    }
}
