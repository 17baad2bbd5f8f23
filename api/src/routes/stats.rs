//! `GET /api/stats` and `GET /public/stats`: the landing page's seven numbers.
//! No auth, CORS reflecting the caller's origin, real numbers only, cached briefly.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use dispatcher::store::stats::{NetworkStats, network_stats as compute};
use tokio::sync::Mutex;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::{ApiError, ApiState};

/// Per-replica cache of the last computed statistics.
#[derive(Clone, Default)]
pub struct StatsCache(Arc<Mutex<Option<(Instant, NetworkStats)>>>);

/// The landing page's seven numbers.
///
/// Real numbers only, cached briefly per replica; CORS reflects the caller's
/// origin. No credentials.
#[utoipa::path(
    get,
    path = "/api/stats",
    operation_id = "network_stats",
    tag = "stats",
    security(()),
    responses(
        (status = 200, description = "The statistics", body = NetworkStats),
    )
)]
pub async fn network_stats(State(state): State<ApiState>) -> Result<Json<NetworkStats>, ApiError> {
    let mut cached = state.stats_cache.0.lock().await;
    if let Some((at, stats)) = *cached
        && at.elapsed() < state.config.stats_cache
    {
        return Ok(Json(stats));
    }
    let stats = compute(&state.backend.pool).await?;
    *cached = Some((Instant::now(), stats));
    Ok(Json(stats))
}

/// CORS preflight of the statistics.
///
/// Answered by the CORS layer (it reflects `Origin` and the requested headers);
/// this is only the route it needs.
#[utoipa::path(
    options,
    path = "/api/stats",
    operation_id = "network_stats_preflight",
    tag = "stats",
    security(()),
    responses(
        (status = 204, description = "Preflight accepted"),
        (status = 200, description = "Preflight accepted (the CORS layer's own answer)"),
    )
)]
pub async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// CORS as the original controller did it: reflect the origin, allow credentials.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::HEAD, Method::PUT, Method::PATCH, Method::POST, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
}
