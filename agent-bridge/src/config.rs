//! Settings of the agent bridge.

use clap::{ArgAction, Args};
use dispatcher::config::LeaseArgs;
use dispatcher::lease::LeaseSettings;

/// The VM template workers use when the controller names none.
pub const DEFAULT_BASE_IMAGE_ID: &str = "ghcr.io/sethwebster/expo-free-agent-base:0.1.23";

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// Command-line and environment settings of the agent bridge.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// VM template sent to workers (`baseImageId` on register and every job).
    #[arg(long, env = "BASE_IMAGE_ID", default_value = DEFAULT_BASE_IMAGE_ID)]
    pub base_image_id: String,

    /// Accept the oldest workers' `X-API-Key` + worker id instead of a worker token.
    #[arg(long, env = "FREEAGENT_LEGACY_WORKER_AUTH", default_value_t = true, action = ArgAction::Set)]
    pub legacy_worker_auth: bool,

    /// Accept the host resource monitor of old workers, which sends only
    /// `X-Worker-Id` and `X-Build-Id`, as a sign of life of the assigned worker.
    #[arg(long, env = "FREEAGENT_KEYLESS_TELEMETRY", default_value_t = true, action = ArgAction::Set)]
    pub keyless_telemetry: bool,

    /// Let `GET /api/builds/{id}/vm-status` answer without credentials, as the
    /// 927aa78 generation of the Swift worker asks it. Off by default: the answer
    /// carries a VM token.
    #[arg(long, env = "FREEAGENT_OPEN_VM_STATUS", default_value_t = false, action = ArgAction::Set)]
    pub open_vm_status: bool,

    /// Longest long poll (`GET /api/workers/poll?wait=N`), in seconds.
    #[arg(long, env = "FREEAGENT_MAX_POLL_WAIT_SECS", default_value_t = 30)]
    pub max_poll_wait_secs: u64,

    /// Largest accepted build result, in bytes (default 1 GiB).
    #[arg(long, env = "FREEAGENT_MAX_RESULT_BYTES", default_value_t = 1024 * MIB)]
    pub max_result_bytes: u64,
}

/// Resolved settings of the agent bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// VM template sent to workers.
    pub base_image_id: String,
    /// Whether `X-API-Key` + worker id authenticates a worker.
    pub legacy_worker_auth: bool,
    /// Whether key-less host telemetry counts.
    pub keyless_telemetry: bool,
    /// Whether `vm-status` answers without credentials.
    pub open_vm_status: bool,
    /// Longest long poll.
    pub max_poll_wait: std::time::Duration,
    /// Largest result upload.
    pub max_result_bytes: u64,
    /// Largest certificate bundle once unzipped.
    pub max_certs_unzipped_bytes: u64,
    /// Lease timing.
    pub lease: LeaseSettings,
    /// Grace period of a replaced worker token, in seconds.
    pub token_grace_secs: f64,
}

impl BridgeConfig {
    /// Resolves the settings.
    pub fn new(args: &BridgeArgs, lease: &LeaseArgs) -> Self {
        Self {
            base_image_id: args.base_image_id.clone(),
            legacy_worker_auth: args.legacy_worker_auth,
            keyless_telemetry: args.keyless_telemetry,
            open_vm_status: args.open_vm_status,
            max_poll_wait: std::time::Duration::from_secs(args.max_poll_wait_secs),
            max_result_bytes: args.max_result_bytes,
            max_certs_unzipped_bytes: 50 * MIB,
            lease: LeaseSettings::from(lease),
            token_grace_secs: lease.worker_token_grace_secs as f64,
        }
    }
}
