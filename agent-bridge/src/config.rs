//! Settings of the agent bridge.

use clap::Args;

/// The VM template workers use when the controller names none.
pub const DEFAULT_BASE_IMAGE_ID: &str = "ghcr.io/sethwebster/expo-free-agent-base:0.1.23";

/// Command-line and environment settings of the agent bridge.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// VM template sent to workers (`baseImageId` on register and every job).
    #[arg(long, env = "BASE_IMAGE_ID", default_value = DEFAULT_BASE_IMAGE_ID)]
    pub base_image_id: String,
}

impl Default for BridgeArgs {
    fn default() -> Self {
        Self { base_image_id: DEFAULT_BASE_IMAGE_ID.to_owned() }
    }
}

/// Resolved settings of the agent bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// VM template sent to workers.
    pub base_image_id: String,
}

impl From<&BridgeArgs> for BridgeConfig {
    fn from(args: &BridgeArgs) -> Self {
        Self { base_image_id: args.base_image_id.clone() }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self::from(&BridgeArgs::default())
    }
}
