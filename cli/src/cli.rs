//! Command-line interface of `freeagent`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dispatcher::config::{BlobArgs, DatabaseArgs, LeaseArgs, LoopArgs, NatsArgs};

/// Free Agent Dispatcher: the controller of Expo Free Agent.
#[derive(Debug, Parser)]
#[command(name = "freeagent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (creates the database, migrates, sets up JetStream).
    Serve(Box<ServeArgs>),
    /// Create the database, apply migrations and set up JetStream, then exit.
    Migrate(MigrateArgs),
    /// Run a benchmark against a controller this command starts itself.
    Bench(crate::bench::BenchArgs),
    /// Break things on purpose: replicas, workers, NATS and Postgres connections fail
    /// while builds flow; exits non-zero when a lease invariant breaks.
    Chaos(crate::chaos::ChaosArgs),
    /// Run a reference worker (Linux builds driven by a shell command).
    Worker(Box<crate::worker::WorkerArgs>),
    /// Show the whole loop on this machine: controller, worker, submission, logs, artifact.
    Demo(crate::demo::DemoArgs),
    #[allow(missing_docs)]
    #[command(flatten)]
    Client(crate::client::commands::ClientCommand),
}

/// Which routers a `serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Both the submitter API and the agent bridge.
    All,
    /// Only the submitter/admin API.
    Api,
    /// Only the worker/VM-facing agent bridge.
    Bridge,
}

impl Role {
    /// Whether this role serves the api router.
    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    /// Whether this role serves the bridge router.
    pub fn serves_bridge(self) -> bool {
        matches!(self, Role::All | Role::Bridge)
    }
}

/// Settings of `freeagent serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Listen port (3000 is the CLI's default controller URL; 0 picks a free port).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Which routers to run.
    #[arg(long, env = "FREEAGENT_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Fleet API key (`X-API-Key`), at least 16 characters of A-Z a-z 0-9 _ -.
    /// When unset, a key is generated on first start and kept in the data directory.
    /// Every replica of a fleet must share the same key.
    #[arg(long, env = "CONTROLLER_API_KEY", hide_env_values = true, allow_hyphen_values = true)]
    pub api_key: Option<String>,

    /// How long the events stream keeps events, in seconds (default 7 days).
    #[arg(long, env = "FREEAGENT_EVENTS_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub events_max_age_secs: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "FREEAGENT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Pending connections the listening socket queues (thousands of workers may
    /// reconnect at once after a network blip).
    #[arg(long, env = "FREEAGENT_LISTEN_BACKLOG", default_value_t = 8192)]
    pub listen_backlog: u32,

    /// Postgres.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// NATS JetStream.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Data directory and object store.
    #[command(flatten)]
    pub blobs: BlobArgs,

    /// Lease timing.
    #[command(flatten)]
    pub lease: LeaseArgs,

    /// Background loops.
    #[command(flatten)]
    pub loops: LoopArgs,

    /// Submitter API settings.
    #[command(flatten)]
    pub api: api::config::ApiArgs,

    /// Webhook delivery settings.
    #[command(flatten)]
    pub webhooks: dispatcher::webhooks::WebhookArgs,

    /// Agent bridge settings.
    #[command(flatten)]
    pub bridge: agent_bridge::config::BridgeArgs,

    /// Failed-authentication limits.
    #[command(flatten)]
    pub auth_limit: crate::auth_limit::AuthLimitArgs,

    /// Request size limits.
    #[command(flatten)]
    pub request_limits: crate::request_limits::RequestLimitArgs,
}

/// Settings of `freeagent migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// How long the events stream keeps events, in seconds (default 7 days).
    #[arg(long, env = "FREEAGENT_EVENTS_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub events_max_age_secs: u64,

    /// Postgres.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// NATS JetStream.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Lease timing.
    #[command(flatten)]
    pub lease: LeaseArgs,
}

impl ServeArgs {
    /// Settings for a test or benchmark controller: port 0, the given database,
    /// namespace and data directory, every other setting at its default except
    /// the failed-authentication limit, raised far above what a test suite that
    /// checks refusals from one address produces (tests of the limit lower it).
    pub fn for_test(database_url: &str, namespace: &str, data_dir: &std::path::Path) -> Self {
        let cli = Cli::parse_from([
            "freeagent",
            "serve",
            "--port",
            "0",
            "--database-url",
            database_url,
            "--namespace",
            namespace,
            "--data-dir",
            data_dir.to_str().expect("UTF-8 temp dir"),
            "--auth-failures-per-minute",
            "100000",
            "--auth-failure-burst",
            "100000",
        ]);
        match cli.command {
            Command::Serve(args) => *args,
            _ => unreachable!("parsed a serve command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command};

    /// Generated keys are base64url and one in 64 starts with `-`.
    #[test]
    fn a_key_that_starts_with_a_hyphen_is_a_value_not_a_flag() {
        let key = "-vAbCdEfGhIjKlMnOpQrStUv";
        let serve = Cli::try_parse_from(["freeagent", "serve", "--api-key", key]).expect("serve parses");
        assert!(matches!(serve.command, Command::Serve(args) if args.api_key.as_deref() == Some(key)));
        let worker = Cli::try_parse_from([
            "freeagent",
            "worker",
            "--api-key",
            key,
            "--url",
            "http://x",
            "--build-command",
            "true",
            "--artifact",
            "*.apk",
        ])
        .expect("worker parses");
        assert!(matches!(worker.command, Command::Worker(args) if args.api_key.as_deref() == Some(key)));
        Cli::try_parse_from(["freeagent", "submit", "--api-key", key, "./project"]).expect("submit parses");
        Cli::try_parse_from(["freeagent", "status", "--api-key", key, "some-build"]).expect("status parses");
    }
}
