//! `GET /health` and `GET /api/health`: no auth (test scripts, installers, VM
//! diagnostics). The body keeps the original controller's keys; scripts grep
//! `"pending":<digits>`.

use axum::Json;
use axum::extract::State;

use crate::wire::{ErrorBody, Health, QueueCounts, Storage};
use crate::{ApiError, ApiState};

/// Liveness and queue counts.
///
/// Counts come from Postgres; 503 when Postgres is down. No credentials: an
/// `X-API-Key` that is sent is ignored.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "The controller and its database answer", body = Health),
        (status = 503, description = "Postgres is unreachable", body = ErrorBody),
    )
)]
pub async fn health(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let (pending, active) = dispatcher::store::builds::queue_counts(&state.backend.pool).await.map_err(|e| {
        tracing::warn!(error = %e, "health check cannot reach Postgres");
        ApiError::Unavailable("Database unavailable")
    })?;
    let nats = if state.backend.queue.is_connected() { "connected" } else { "disconnected" };
    Ok(Json(Health {
        status: "ok",
        queue: QueueCounts { pending, active, total: pending + active },
        storage: Storage { url: state.backend.blobs.description().to_owned() },
        nats,
    }))
}
