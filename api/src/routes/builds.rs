//! Build routes of submitters: list, active, status, logs, download, cancel, retry.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dispatcher::blobs::BlobKey;
use dispatcher::model::{BuildStatus, WireStatus};
use dispatcher::ops::{self, CancelOutcome, RetryOutcome};
use dispatcher::store;
use serde::Deserialize;

use super::{iso, ms};
use crate::extract::{AdminKey, BuildAccess, Path, Query};
use crate::wire::{
    ActiveBuild, ActiveBuilds, BuildListItem, BuildLogs, BuildStatusBody, Cancelled, ErrorBody, FileBody, LogEntry,
    Submitted,
};
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

/// Every build, newest first, as a bare array (the original CLI accepts only that).
#[utoipa::path(
    get,
    path = "/api/builds",
    operation_id = "list_builds",
    tag = "builds",
    security(("api_key" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 10000, description = "At most this many builds (default 1000)"),
    ),
    responses(
        (status = 200, description = "The builds", body = Vec<BuildListItem>),
        (status = 400, description = "`limit` is not an integer from 1 to 10000", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    _key: AdminKey,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<BuildListItem>>, ApiError> {
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
            .map(|b| BuildListItem {
                id: b.id.clone(),
                status: b.status.wire_status(),
                platform: b.platform,
                created_at: iso(b.submitted_at),
                completed_at: b.completed_at.map(iso),
            })
            .collect(),
    ))
}

/// Builds a worker holds, `started_at` in milliseconds (the Swift app's menu).
#[utoipa::path(
    get,
    path = "/api/builds/active",
    operation_id = "active_builds",
    tag = "builds",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Assigned and building builds", body = ActiveBuilds),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn active(State(state): State<ApiState>, _key: AdminKey) -> Result<Json<ActiveBuilds>, ApiError> {
    let builds = store::builds::active_builds(&state.backend.pool).await?;
    let builds = builds
        .iter()
        .map(|b| ActiveBuild {
            id: b.id.clone(),
            status: b.status.wire_status(),
            platform: b.platform,
            worker_id: b.worker_id.clone(),
            started_at: b.assigned_at.map(ms),
        })
        .collect();
    Ok(Json(ActiveBuilds { builds }))
}

/// A build's status; timestamps in milliseconds.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/status",
    operation_id = "build_status",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build", body = BuildStatusBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn status(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<BuildStatusBody>, ApiError> {
    let b = access.load(&state).await?;
    Ok(Json(BuildStatusBody {
        id: b.id.clone(),
        status: b.status.wire_status(),
        platform: b.platform,
        worker_id: b.worker_id.clone(),
        submitted_at: ms(b.submitted_at),
        started_at: b.assigned_at.map(ms),
        completed_at: b.completed_at.map(ms),
        error_message: b.error_message.clone(),
    }))
}

/// A build's whole log, in insertion order.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/logs",
    operation_id = "build_logs",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The log", body = BuildLogs),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn logs(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<BuildLogs>, ApiError> {
    let b = access.load(&state).await?;
    let lines = store::logs::list(&state.backend.pool, &b.id).await?;
    let logs =
        lines.into_iter().map(|l| LogEntry { timestamp: ms(l.ts), level: l.level, message: l.message }).collect();
    Ok(Json(BuildLogs { build_id: b.id, logs }))
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

/// The artifact of a completed build (`<id>.ipa` or `<id>.apk`), streamed.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/download",
    operation_id = "download_artifact",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The artifact", body = inline(FileBody), content_type = "application/octet-stream"),
        (status = 400, description = "The build is not completed", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build, or its result is gone", body = ErrorBody),
    )
)]
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

/// The uploaded source (`source`) or the artifact (`result`) of a build.
///
/// As the Elixir controller offered it: lets a submitter fetch back what they
/// uploaded.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/download/{kind}",
    operation_id = "download_file",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("kind" = String, Path, description = "`source` or `result`"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (inline(FileBody) = "application/zip"),
            (inline(FileBody) = "application/octet-stream"),
        )),
        (status = 400, description = "Unknown kind, or the build is not completed (`result`)", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build or file", body = ErrorBody),
    )
)]
pub async fn download_kind(
    State(state): State<ApiState>,
    access: BuildAccess,
    Path((_, kind)): Path<(String, String)>,
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

/// Cancels a build that has not finished.
///
/// Any body is accepted (the CLI sends none, with a JSON content type). A
/// cancelled build is shown as `failed` with `Build cancelled by user`.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/cancel",
    operation_id = "cancel_build",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
        (status = 400, description = "The build already finished", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn cancel(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Cancelled>, ApiError> {
    match ops::cancel(&state.backend, &access.id).await? {
        CancelOutcome::Cancelled => {
            tracing::info!(build.id = %access.id, "build cancelled");
            Ok(Json(Cancelled { status: "cancelled" }))
        }
        CancelOutcome::NotFound => Err(ApiError::NotFound("Build not found")),
        CancelOutcome::AlreadyFinished => Err(ApiError::BadRequest("Build already finished".into())),
    }
}

/// A new build with the same source (and certificates); a new build token.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/retry",
    operation_id = "retry_build",
    tag = "builds",
    security(("api_key" = []), ("build_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The new build", body = Submitted),
        (status = 400, description = "The original source is gone", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn retry(State(state): State<ApiState>, access: BuildAccess) -> Result<Json<Submitted>, ApiError> {
    match ops::retry(&state.backend, &access.id).await? {
        RetryOutcome::Retried(new) => {
            tracing::info!(build.id = %new.id, retry_of = %access.id, "build retried");
            Ok(Json(Submitted {
                id: new.id,
                status: WireStatus::Pending,
                submitted_at: ms(new.submitted_at),
                access_token: new.token,
                original_build_id: Some(access.id),
            }))
        }
        RetryOutcome::NotFound => Err(ApiError::NotFound("Build not found")),
        RetryOutcome::SourceGone => {
            Err(ApiError::BadRequest("Original build source no longer available. Please submit a new build.".into()))
        }
    }
}
