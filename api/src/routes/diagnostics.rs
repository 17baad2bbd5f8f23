//! Worker diagnostics (`freeagent doctor`): report, history, latest.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use dispatcher::model::WorkerId;
use dispatcher::store::{self, diagnostics::NewReport, diagnostics::Report};
use serde::Deserialize;
use serde_json::Value;

use super::ms;
use crate::extract::{AdminKey, Path, Query, json_body};
use crate::wire::{DiagnosticHistory, DiagnosticReport, ErrorBody, ReportRequest, ReportStored};
use crate::{ApiError, ApiState};

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

fn report_body(r: &Report) -> DiagnosticReport {
    DiagnosticReport {
        id: r.id,
        worker_id: r.worker_id.clone(),
        status: r.status.clone(),
        run_at: ms(r.run_at),
        duration_ms: r.duration_ms,
        auto_fixed: r.auto_fixed,
        checks: r.checks.clone(),
    }
}

async fn known_worker(state: &ApiState, raw: &str) -> Result<WorkerId, ApiError> {
    let id = WorkerId::parse(raw).map_err(|_| ApiError::NotFound("Worker not found"))?;
    match store::workers::get_worker(&state.backend.pool, &id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::NotFound("Worker not found")),
    }
}

/// Stores a worker's diagnostics report (`FreeAgent doctor`).
#[utoipa::path(
    post,
    path = "/api/diagnostics/report",
    operation_id = "report_diagnostics",
    tag = "diagnostics",
    security(("api_key" = [])),
    request_body = ReportRequest,
    responses(
        (status = 200, description = "Stored", body = ReportStored),
        (status = 400, description = "Not JSON, or a field is missing or invalid", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
    )
)]
pub async fn report(
    State(state): State<ApiState>,
    _key: AdminKey,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ReportStored>, ApiError> {
    let body = json_body(body)?;
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
    Ok(Json(ReportStored { id, status: "stored" }))
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<String>,
}

/// A worker's diagnostics reports, newest first.
#[utoipa::path(
    get,
    path = "/api/diagnostics/{worker_id}",
    operation_id = "diagnostics_history",
    tag = "diagnostics",
    security(("api_key" = [])),
    params(
        ("worker_id" = String, Path, description = "Worker id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "At most this many reports (default 10)"),
    ),
    responses(
        (status = 200, description = "The reports", body = DiagnosticHistory),
        (status = 400, description = "`limit` is not an integer from 1 to 100", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(worker_id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<DiagnosticHistory>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}"))),
        },
    };
    let worker = known_worker(&state, &worker_id).await?;
    let reports = store::diagnostics::list(&state.backend.pool, &worker, limit).await?;
    Ok(Json(DiagnosticHistory { worker_id: worker, reports: reports.iter().map(report_body).collect() }))
}

/// A worker's latest diagnostics report.
#[utoipa::path(
    get,
    path = "/api/diagnostics/{worker_id}/latest",
    operation_id = "diagnostics_latest",
    tag = "diagnostics",
    security(("api_key" = [])),
    params(("worker_id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The report", body = DiagnosticReport),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker, or no report yet", body = ErrorBody),
    )
)]
pub async fn latest(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(worker_id): Path<String>,
) -> Result<Json<DiagnosticReport>, ApiError> {
    let worker = known_worker(&state, &worker_id).await?;
    let reports = store::diagnostics::list(&state.backend.pool, &worker, 1).await?;
    match reports.first() {
        Some(r) => Ok(Json(report_body(r))),
        None => Err(ApiError::NotFound("No diagnostic reports found")),
    }
}
