//! Routes of the api service, one file per group.

pub mod builds;
pub mod diagnostics;
pub mod health;
pub mod stats;
pub mod stream;
pub mod submit;
pub mod webhooks;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::ApiState;

/// Every api route.
pub fn router(state: ApiState) -> Router {
    let public = Router::new()
        // OPTIONS must route somewhere for the CORS layer to answer preflights.
        .route("/api/stats", get(stats::network_stats).options(stats::preflight))
        .route("/public/stats", get(stats::network_stats).options(stats::preflight))
        .layer(stats::cors());
    Router::new()
        .route("/health", get(health::health))
        .route("/api/health", get(health::health))
        .route("/api/builds", get(builds::list))
        .route("/api/builds/active", get(builds::active))
        .route("/api/builds/submit", post(submit::submit).layer(submit::body_limit(&state)))
        .route("/api/builds/{id}/status", get(builds::status))
        .route("/api/builds/{id}/logs", get(builds::logs))
        .route("/api/builds/{id}/logs/stream", get(stream::logs))
        .route("/api/builds/{id}/events", get(stream::events))
        .route("/api/builds/{id}/download", get(builds::download))
        .route("/api/builds/{id}/download/{kind}", get(builds::download_kind))
        .route("/api/builds/{id}/cancel", post(builds::cancel))
        .route("/api/builds/{id}/retry", post(builds::retry))
        .route("/api/diagnostics/report", post(diagnostics::report))
        .route("/api/diagnostics/{worker_id}", get(diagnostics::history))
        .route("/api/diagnostics/{worker_id}/latest", get(diagnostics::latest))
        .route("/api/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/api/webhooks/{id}", delete(webhooks::delete))
        .route("/api/webhooks/{id}/enable", post(webhooks::enable))
        .route("/api/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .merge(public)
        .with_state(state)
}

/// Milliseconds since the epoch, the timestamp form of most of the wire contract.
pub(crate) fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// ISO 8601 with milliseconds and `Z`, as JavaScript's `toISOString` prints it.
pub(crate) fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
