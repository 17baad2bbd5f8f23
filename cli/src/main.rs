//! `freeagent`: run the controller, migrate, benchmark.

use clap::Parser;
use freeagent::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => freeagent::commands::serve(*args).await,
        Command::Migrate(args) => freeagent::commands::migrate(args).await,
        Command::Bench(args) => freeagent::bench::run(args).await,
        Command::Chaos(args) => freeagent::chaos::run(args).await,
        Command::Worker(args) => freeagent::worker::run(*args).await,
        Command::Demo(args) => freeagent::demo::run(args).await,
        Command::Client(command) => {
            return match freeagent::client::commands::run(command).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::ExitCode::from(u8::try_from(e.code).unwrap_or(1))
                }
            };
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
