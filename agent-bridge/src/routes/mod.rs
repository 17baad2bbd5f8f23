//! Routes of the agent bridge, one file per group.

pub mod workers;

use axum::Router;
use axum::routing::get;

use crate::BridgeState;

/// Every bridge route.
pub fn router(state: BridgeState) -> Router {
    Router::new().route("/api/workers/{id}/stats", get(workers::stats)).with_state(state)
}
