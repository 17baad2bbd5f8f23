//! Worker diagnostics (`freeagent doctor`): report, history, latest.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use dispatcher::model::WorkerId;
use dispatcher::store::{self, diagnostics::NewReport, diagnostics::Report};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ms;
use crate::extract::AdminKey;
use crate::{ApiError, ApiState};

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

fn report_json(r: &Report) -> Value {
    json!({
        "id": r.id,
        "worker_id": r.worker_id,
        "status": r.status,
        "run_at": ms(r.run_at),
        "duration_ms": r.duration_ms,
        "auto_fixed": r.auto_fixed,
        "checks": r.checks,
    })
}

async fn known_worker(state: &ApiState, raw: &str) -> Result<WorkerId, ApiError> {
    let id = WorkerId::parse(raw).map_err(|_| ApiError::NotFound("Worker not found"))?;
    match store::workers::get_worker(&state.backend.pool, &id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::NotFound("Worker not found")),
    }
}

/// `POST /api/diagnostics/report`.
pub async fn report(
    State(state): State<ApiState>,
    _key: AdminKey,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let (Some(worker_id), Some(status), Some(duration), Some(checks)) =
        (body.get("worker_id"), body.get("status"), body.get("duration_ms"), body.get("checks"))
    else {
        return Err(ApiError::BadRequest("Missing required fields: worker_id, status, duration_ms, checks".into()));
    };
    let status = status.as_str().unwrap_or_default();
    if !matches!(status, "healthy" | "warning" | "critical") {
        return Err(ApiError::BadRequest("Invalid status. Must be: healthy, warning, or critical".into()));
    }
    let Some(duration_ms) = duration.as_f64().filter(|d| d.is_finite() && *d >= 0.0) else {
        return Err(ApiError::BadRequest("duration_ms must be a non-negative number".into()));
    };
    let worker = known_worker(&state, worker_id.as_str().unwrap_or_default()).await?;
    if !checks.is_array() {
        return Err(ApiError::BadRequest("checks must be an array".into()));
    }
    let auto_fixed = body.get("auto_fixed").and_then(Value::as_bool).unwrap_or(false);
    let id = store::diagnostics::insert(
        &state.backend.pool,
        &NewReport { worker_id: &worker, status, duration_ms: duration_ms.round() as i64, auto_fixed, checks },
    )
    .await?;
    Ok(Json(json!({ "id": id, "status": "stored" })))
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<String>,
}

/// `GET /api/diagnostics/{worker_id}[?limit=N]`: newest first.
pub async fn history(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(worker_id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}"))),
        },
    };
    let worker = known_worker(&state, &worker_id).await?;
    let reports = store::diagnostics::list(&state.backend.pool, &worker, limit).await?;
    Ok(Json(json!({
        "worker_id": worker,
        "reports": reports.iter().map(report_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/diagnostics/{worker_id}/latest`.
pub async fn latest(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(worker_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let worker = known_worker(&state, &worker_id).await?;
    let reports = store::diagnostics::list(&state.backend.pool, &worker, 1).await?;
    match reports.first() {
        Some(r) => Ok(Json(report_json(r))),
        None => Err(ApiError::NotFound("No diagnostic reports found")),
    }
}
