//! Configuration fragments shared by every role of `freeagent`.
//!
//! Each fragment is a clap `Args` struct whose every field is both a flag and an
//! environment variable (the names of DESIGN.md §7 are fixed: clients, scripts and
//! operators rely on them). The binary flattens them; tests build them directly.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

/// Where the state lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/freeagent",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Maximum connections in this replica's Postgres pool.
    #[arg(long, env = "FREEAGENT_DB_POOL_SIZE", default_value_t = 20)]
    pub db_pool_size: u32,
}

/// The message bus.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server with JetStream enabled.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Prefix of every stream, consumer and subject, so several deployments (or
    /// test runs) share one NATS server without seeing each other.
    #[arg(long, env = "FREEAGENT_NAMESPACE", default_value = "freeagent")]
    pub namespace: String,

    /// How long a submission waits for JetStream to acknowledge its job before it
    /// answers anyway and leaves the publish to the background republisher.
    #[arg(long, env = "FREEAGENT_PUBLISH_TIMEOUT_MS", default_value_t = 2000)]
    pub publish_timeout_ms: u64,
}

impl NatsArgs {
    /// [`NatsArgs::publish_timeout_ms`] as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// Local data and the object store.
#[derive(Debug, Clone, Args)]
pub struct BlobArgs {
    /// Local data: blobs by default and the generated API key.
    #[arg(long, env = "FREEAGENT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Object store for sources, certificates and artifacts: `file:///path` or
    /// `s3://bucket` (credentials and endpoint from the usual `AWS_*` variables).
    /// Defaults to `file://<data dir>/blobs`.
    #[arg(long, env = "FREEAGENT_BLOB_URL")]
    pub blob_url: Option<String>,

    /// Key that encrypts secrets at rest (certificate bundles in the object store,
    /// webhook signing secrets in Postgres): 32 bytes in base64. When unset, a key
    /// is generated on first start and kept in the data directory. Every replica
    /// of a fleet must use the same key, and losing it loses those secrets.
    #[arg(long, env = "FREEAGENT_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<SecretString>,
}

/// Lease timing (DESIGN.md §3).
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Ack deadline of a lease without activity, in seconds.
    #[arg(long, env = "FREEAGENT_LEASE_TTL_SECS", default_value_t = 120)]
    pub lease_ttl_secs: u64,

    /// A build running longer than this many seconds fails.
    #[arg(long, env = "FREEAGENT_MAX_BUILD_SECS", default_value_t = 9000)]
    pub max_build_secs: u64,

    /// Leases a build may lose before it fails.
    #[arg(long, env = "FREEAGENT_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,

    /// Lifetime of a job's one-time code (`otp`), in seconds.
    #[arg(long, env = "FREEAGENT_OTP_TTL_SECS", default_value_t = 600)]
    pub otp_ttl_secs: u64,

    /// A worker not seen for this many seconds, holding no lease, is marked offline.
    #[arg(long, env = "FREEAGENT_WORKER_OFFLINE_SECS", default_value_t = 300)]
    pub worker_offline_secs: u64,

    /// How long a worker's previous token stays valid after it re-registered, in
    /// seconds (a worker that lost the register answer is not stranded).
    #[arg(long, env = "FREEAGENT_WORKER_TOKEN_GRACE_SECS", default_value_t = 600)]
    pub worker_token_grace_secs: u64,

    /// How often the reaper looks for expired leases, overdue builds and quiet
    /// workers, in milliseconds.
    #[arg(long, env = "FREEAGENT_REAPER_INTERVAL_MS", default_value_t = 5000)]
    pub reaper_interval_ms: u64,
}

/// Background loops.
#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// How often the republisher looks for builds whose publish was not acknowledged
    /// (and the outbox publisher for unpublished events), in milliseconds.
    #[arg(long, env = "FREEAGENT_REPUBLISH_INTERVAL_MS", default_value_t = 1000)]
    pub republish_interval_ms: u64,
}

impl LoopArgs {
    /// [`LoopArgs::republish_interval_ms`] as a duration.
    pub fn republish_interval(&self) -> Duration {
        Duration::from_millis(self.republish_interval_ms)
    }
}
