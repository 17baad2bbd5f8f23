//! Worker routes: statistics for the Swift app's StatisticsView.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use dispatcher::model::WorkerId;
use dispatcher::store;
use serde_json::{Value, json};

use crate::extract::AdminKey;
use crate::{BridgeError, BridgeState};

/// `GET /api/workers/{id}/stats`: camelCase fields, uptime since registration.
pub async fn stats(
    State(state): State<BridgeState>,
    _key: AdminKey,
    Path(id): Path<String>,
) -> Result<Json<Value>, BridgeError> {
    let id = WorkerId::parse(&id).map_err(|_| BridgeError::NotFound("Worker not found"))?;
    let worker =
        store::workers::get_worker(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Worker not found"))?;
    let uptime = (Utc::now() - worker.registered_at).num_seconds().max(0);
    Ok(Json(json!({
        "totalBuilds": worker.builds_completed + worker.builds_failed,
        "successfulBuilds": worker.builds_completed,
        "failedBuilds": worker.builds_failed,
        "workerName": worker.name,
        "status": worker.status,
        "uptime": format_uptime(uptime),
    })))
}

/// The original controller's uptime text: `Nd Nh`, `Nh Nm`, `Nm Ns` or `Ns`.
pub fn format_uptime(seconds: i64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60, seconds % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::format_uptime;

    #[test]
    fn uptime_reads_like_the_original_controller() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(65), "1m 5s");
        assert_eq!(format_uptime(3 * 3600 + 120), "3h 2m");
        assert_eq!(format_uptime(2 * 86_400 + 5 * 3600 + 59), "2d 5h");
    }
}
