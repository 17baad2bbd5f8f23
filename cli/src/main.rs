//! `freeagent`: run the controller, migrate, benchmark.

use clap::Parser;
use freeagent::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => freeagent::commands::serve(*args).await,
        Command::Migrate(args) => freeagent::commands::migrate(args).await,
        Command::Bench(args) => freeagent::bench::run(args).await,
    }
}
