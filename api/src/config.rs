//! Settings of the api service.

use std::time::Duration;

use clap::Args;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Command-line and environment settings of the api service.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Largest accepted source upload, in bytes (default 500 MiB). Larger uploads
    /// are refused with 413 the moment the limit is passed; nothing is kept.
    #[arg(long, env = "FREEAGENT_MAX_SOURCE_BYTES", default_value_t = 500 * MIB)]
    pub max_source_bytes: u64,

    /// Largest accepted certificate bundle, in bytes (default 10 MiB).
    #[arg(long, env = "FREEAGENT_MAX_CERTS_BYTES", default_value_t = 10 * MIB)]
    pub max_certs_bytes: u64,

    /// How long the public statistics are cached per replica, in milliseconds.
    #[arg(long, env = "FREEAGENT_STATS_CACHE_MS", default_value_t = 10_000)]
    pub stats_cache_ms: u64,
}

/// Resolved settings of the api service.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest source upload.
    pub max_source_bytes: u64,
    /// Largest certificate bundle.
    pub max_certs_bytes: u64,
    /// Statistics cache lifetime.
    pub stats_cache: Duration,
}

impl From<&ApiArgs> for ApiConfig {
    fn from(args: &ApiArgs) -> Self {
        Self {
            max_source_bytes: args.max_source_bytes,
            max_certs_bytes: args.max_certs_bytes,
            stats_cache: Duration::from_millis(args.stats_cache_ms),
        }
    }
}
