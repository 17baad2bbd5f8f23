//! Routes of the agent bridge, one file per group.

pub mod builds;
pub mod upload;
pub mod vm;
pub mod workers;

use axum::Router;
use axum::routing::{get, post};

use crate::BridgeState;

/// Every bridge route.
pub fn router(state: BridgeState) -> Router {
    Router::new()
        .route("/api/workers", get(workers::list))
        .route("/api/workers/register", post(workers::register))
        .route("/api/workers/poll", get(workers::poll))
        .route("/api/workers/upload", post(upload::upload).layer(upload::body_limit(&state)))
        .route("/api/workers/result", post(upload::upload).layer(upload::body_limit(&state)))
        .route("/api/workers/heartbeat", post(workers::heartbeat))
        .route("/api/workers/fail", post(workers::fail))
        .route("/api/workers/unregister", post(workers::unregister))
        .route("/api/workers/abandon", post(workers::abandon))
        .route("/api/workers/{id}/unregister", post(workers::unregister_by_id))
        .route("/api/workers/{id}/stats", get(workers::stats))
        .route("/api/builds/{id}/source", get(builds::source))
        .route("/api/builds/{id}/certs", get(builds::certs))
        .route("/api/builds/{id}/certs-secure", get(builds::certs_secure))
        .route("/api/builds/{id}/logs", post(builds::logs))
        .route("/api/builds/{id}/telemetry", post(builds::telemetry))
        .route("/api/builds/{id}/heartbeat", post(builds::heartbeat))
        .route("/api/builds/{id}/authenticate", post(vm::authenticate))
        .route("/api/builds/{id}/vm-ready", post(vm::vm_ready))
        .route("/api/builds/{id}/vm-status", get(vm::vm_status))
        .route("/api/builds/{id}/artifact", post(vm::artifact).layer(upload::body_limit(&state)))
        .with_state(state)
}
