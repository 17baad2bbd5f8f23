//! `GET /health` and `GET /api/health`: no auth (test scripts, installers, VM
//! diagnostics). The body keeps the original controller's keys; scripts grep
//! `"pending":<digits>`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiError, ApiState};

/// Queue counts from Postgres and where blobs go; 503 when Postgres is down.
pub async fn health(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (pending, active) = dispatcher::store::builds::queue_counts(&state.backend.pool).await.map_err(|e| {
        tracing::warn!(error = %e, "health check cannot reach Postgres");
        ApiError::Unavailable("Database unavailable")
    })?;
    let nats = if state.backend.queue.is_connected() { "connected" } else { "disconnected" };
    Ok(Json(json!({
        "status": "ok",
        "queue": { "pending": pending, "active": active, "total": pending + active },
        "storage": { "url": state.backend.blobs.description() },
        "nats": nats,
    })))
}
