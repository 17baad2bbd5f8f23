//! Build routes of submitters: list, active, status, logs, download, cancel, retry.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dispatcher::blobs::BlobKey;
use dispatcher::model::BuildStatus;
use dispatcher::ops::{self, CancelOutcome, RetryOutcome};
use dispatcher::store;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{iso, ms};
use crate::extract::{AdminKey, BuildAccess};
use crate::{ApiError, ApiState};

/// Builds listed when no `limit` is given.
const DEFAULT_LIST_LIMIT: i64 = 1000;
/// Largest `limit` accepted.
const MAX_LIST_LIMIT: i64 = 10_000;

/// Query of `GET /api/builds`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
}

/// `GET /api/builds`: a bare array, newest first (the original CLI accepts only that).
pub async fn list(
    State(state): State<ApiState>,
    _key: AdminKey,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIST_LIMIT}"))),
        },
    };
    let builds = store::builds::list_builds(&state.backend.pool, limit).await?;
    Ok(Json(
        builds
            .iter()
            .map(|b| {
                let mut item = json!({
                    "id": b.id,
                    "status": b.status.wire(),
                    "platform": b.platform,
                    "createdAt": iso(b.submitted_at),
                });
                if let Some(done) = b.completed_at {
                    item["completedAt"] = json!(iso(done));
                }
                item
            })
            .collect(),
    ))
}

/// `GET /api/builds/active`: builds a worker holds, `started_at` in ms.
pub async fn active(State(state): State<ApiState>, _key: AdminKey) -> Result<Json<Value>, ApiError> {
    let builds = store::builds::active_builds(&state.backend.pool).await?;
    let items: Vec<Value> = builds
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "status": b.status.wire(),
                "platform": b.platform,
                "worker_id": b.worker_id,
                "started_at": b.assigned_at.map(ms),
            })
        })
        .collect();
    Ok(Json(json!({ "builds": items })))
}

/// `GET /api/builds/{id}/status`.
pub async fn status(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Value>, ApiError> {
    let b = access.load(&state).await?;
    Ok(Json(json!({
        "id": b.id,
        "status": b.status.wire(),
        "platform": b.platform,
        "worker_id": b.worker_id,
        "submitted_at": ms(b.submitted_at),
        "started_at": b.assigned_at.map(ms),
        "completed_at": b.completed_at.map(ms),
        "error_message": b.error_message,
    })))
}

/// `GET /api/builds/{id}/logs`: the whole log in insertion order.
pub async fn logs(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Value>, ApiError> {
    let b = access.load(&state).await?;
    let lines = store::logs::list(&state.backend.pool, &b.id).await?;
    let logs: Vec<Value> =
        lines.iter().map(|l| json!({ "timestamp": ms(l.ts), "level": l.level, "message": l.message })).collect();
    Ok(Json(json!({ "build_id": b.id, "logs": logs })))
}

/// A streamed file download.
fn attachment(reader: dispatcher::blobs::BlobReader, content_type: &str, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CONTENT_LENGTH, reader.size.to_string()),
        ],
        Body::from_stream(reader.stream),
    )
        .into_response()
}

/// `GET /api/builds/{id}/download`: the artifact, streamed.
pub async fn download(State(state): State<ApiState>, access: BuildAccess) -> Result<Response, ApiError> {
    let b = access.load(&state).await?;
    if b.status != BuildStatus::Completed {
        return Err(ApiError::BadRequest("Build not completed".into()));
    }
    let key = b.result_key.as_deref().and_then(|k| BlobKey::parse_result(k, &b.id));
    let Some(key) = key else {
        return Err(ApiError::NotFound("Build result not found"));
    };
    let Some(reader) = state.backend.blobs.read(&key).await? else {
        return Err(ApiError::NotFound("Build result not found"));
    };
    let filename = format!("{}.{}", b.id, b.platform.artifact_extension());
    Ok(attachment(reader, "application/octet-stream", &filename))
}

/// `GET /api/builds/{id}/download/{kind}` (`source` or `result`), as the Elixir
/// controller offered: lets a submitter fetch back what they uploaded.
pub async fn download_kind(
    State(state): State<ApiState>,
    access: BuildAccess,
    axum::extract::Path((_, kind)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    match kind.as_str() {
        "result" => download(State(state), access).await,
        "source" => {
            let b = access.load(&state).await?;
            let Some(reader) = state.backend.blobs.read(&BlobKey::Source(b.id.clone())).await? else {
                return Err(ApiError::NotFound("Build source not found"));
            };
            Ok(attachment(reader, "application/zip", &format!("{}.zip", b.id)))
        }
        _ => Err(ApiError::BadRequest("Invalid file type".into())),
    }
}

/// `POST /api/builds/{id}/cancel`: any body (the CLI sends none with a JSON type).
pub async fn cancel(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Value>, ApiError> {
    match ops::cancel(&state.backend, &access.id).await? {
        CancelOutcome::Cancelled => {
            tracing::info!(build.id = %access.id, "build cancelled");
            Ok(Json(json!({ "status": "cancelled" })))
        }
        CancelOutcome::NotFound => Err(ApiError::NotFound("Build not found")),
        CancelOutcome::AlreadyFinished => Err(ApiError::BadRequest("Build already finished".into())),
    }
}

/// `POST /api/builds/{id}/retry`: a new build with the same source.
pub async fn retry(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Value>, ApiError> {
    match ops::retry(&state.backend, &access.id).await? {
        RetryOutcome::Retried(new) => {
            tracing::info!(build.id = %new.id, retry_of = %access.id, "build retried");
            Ok(Json(json!({
                "id": new.id,
                "status": "pending",
                "submitted_at": ms(new.submitted_at),
                "access_token": new.token,
                "original_build_id": access.id,
            })))
        }
        RetryOutcome::NotFound => Err(ApiError::NotFound("Build not found")),
        RetryOutcome::SourceGone => {
            Err(ApiError::BadRequest("Original build source no longer available. Please submit a new build.".into()))
        }
    }
}
