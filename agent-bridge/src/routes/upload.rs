//! `POST /api/workers/upload` (and `/api/workers/result`): the owner reports its
//! build's result, multipart `build_id`, `worker_id`, `success`, `error_message`
//! and an optional file `result`.
//!
//! The file streams into a staging key while its bytes are counted; only the lease
//! check (in Postgres, row locked) moves it to the attempt's own key. A refused or
//! failed report deletes it: a late worker leaves no trace.

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use dispatcher::blobs::{BlobKey, WriteError};
use dispatcher::lease::{self, Ended, StagedResult};
use dispatcher::model::{BuildId, WorkerId};

use crate::extract::{API_KEY, WORKER_TOKEN, check_legacy_key, header, worker_by_token};
use crate::wire::{ErrorBody, UploadAnswer, UploadForm};
use crate::{BridgeError, BridgeState};

const MAX_TEXT_FIELD: usize = 64 * 1024;

/// Request body limit of the upload routes: the result plus framing.
pub fn body_limit(state: &BridgeState) -> DefaultBodyLimit {
    DefaultBodyLimit::max(usize::try_from(state.config.max_result_bytes + 1024 * 1024).unwrap_or(usize::MAX))
}

#[derive(Default)]
struct Report {
    build_id: Option<String>,
    worker_id: Option<String>,
    success: Option<String>,
    error_message: Option<String>,
    staged: Option<StagedResult>,
}

/// The build's worker reports its result: an artifact (success) or a failure.
///
/// A report on a build that already has this result is answered 200 without
/// change; `success=true` without a file on a running build fails it.
#[utoipa::path(
    post,
    path = "/api/workers/upload",
    operation_id = "upload_result",
    tag = "workers",
    security(("worker_token" = []), ("api_key" = [])),
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Accepted", body = UploadAnswer),
        (status = 400, description = "Not multipart, malformed, or no `build_id` or `worker_id`", body = ErrorBody),
        (status = 401, description = "No credentials, or an unknown worker token", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build or worker", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
        (status = 413, description = "The file or a field passed its limit", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadAnswer>, BridgeError> {
    // Credentials first: nothing is read from an unauthenticated request.
    let token_worker = match header(&headers, WORKER_TOKEN) {
        Some(token) => Some(worker_by_token(&state, token).await?.identity.id),
        None => match header(&headers, API_KEY) {
            Some(key) => {
                check_legacy_key(&state, key)?;
                None
            }
            None => return Err(BridgeError::Unauthorized("Missing X-API-Key or X-Worker-Token header")),
        },
    };
    let mut multipart = multipart.map_err(|_| BridgeError::BadRequest("Content must be multipart/form-data".into()))?;
    let mut report = Report::default();
    if let Err(e) = receive(&state, &mut multipart, &mut report).await {
        discard(&state, &report).await;
        if matches!(e, BridgeError::TooLarge(_)) {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(Some(mut f)) = multipart.next_field().await {
                    while let Ok(Some(_)) = f.chunk().await {}
                }
            })
            .await;
        }
        return Err(e);
    }
    let outcome = settle(&state, token_worker, &mut report).await;
    if outcome.is_err() {
        discard(&state, &report).await;
    }
    outcome
}

async fn discard(state: &BridgeState, report: &Report) {
    if let Some(staged) = &report.staged {
        state.backend.blobs.delete(&staged.staging).await.ok();
    }
}

async fn settle(
    state: &BridgeState,
    token_worker: Option<WorkerId>,
    report: &mut Report,
) -> Result<Json<UploadAnswer>, BridgeError> {
    let claimed = report.worker_id.as_deref();
    let (Some(build), Some(worker)) =
        (report.build_id.as_deref(), token_worker.as_ref().map(WorkerId::as_str).or(claimed))
    else {
        return Err(BridgeError::BadRequest("build_id and worker_id required".into()));
    };
    if let (Some(token_worker), Some(claimed)) = (&token_worker, claimed)
        && token_worker.as_str() != claimed
    {
        return Err(BridgeError::Forbidden("Worker not authorized for this build"));
    }
    let id = BuildId::parse(build).map_err(|_| BridgeError::NotFound("Build not found"))?;
    let worker = WorkerId::parse(worker).map_err(|_| BridgeError::NotFound("Worker not found"))?;
    if token_worker.is_none()
        && dispatcher::store::workers::find_identity(&state.backend.pool, &worker).await?.is_none()
    {
        return Err(BridgeError::NotFound("Worker not found"));
    }
    let success = report.success.as_deref().map(str::trim) == Some("true");
    if success {
        let staged = report.staged.take();
        let had_file = staged.is_some();
        match lease::complete(&state.backend, &id, &worker, staged).await?? {
            Ended::Now if had_file => Ok(Json(UploadAnswer { status: "success", success: true })),
            Ended::AlreadyAccepted => Ok(Json(UploadAnswer { status: "success", success: true })),
            // Success without a file on a running build: a failure, as it always was.
            Ended::Now => Ok(Json(UploadAnswer { status: "failed", success: true })),
        }
    } else {
        if let Some(staged) = report.staged.take() {
            state.backend.blobs.delete(&staged.staging).await.ok();
        }
        let message =
            report.error_message.as_deref().map(str::trim).filter(|m| !m.is_empty()).unwrap_or("Build failed");
        let message: String = message.chars().take(4000).collect();
        lease::fail(&state.backend, &id, &worker, &message).await??;
        Ok(Json(UploadAnswer { status: "failed", success: true }))
    }
}

async fn receive(state: &BridgeState, multipart: &mut Multipart, report: &mut Report) -> Result<(), BridgeError> {
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "build_id" => report.build_id = Some(text(field).await?),
            "worker_id" => report.worker_id = Some(text(field).await?),
            "success" => report.success = Some(text(field).await?),
            "error_message" => report.error_message = Some(text(field).await?),
            "result" => {
                if report.staged.is_some() {
                    return Err(BridgeError::BadRequest("Only one result file is allowed".into()));
                }
                let staging = BlobKey::Upload(uuid::Uuid::now_v7());
                report.staged = Some(StagedResult { staging: staging.clone(), bytes: 0 });
                let bytes = stream_file(state, field, &staging).await?;
                report.staged = Some(StagedResult { staging, bytes });
            }
            _ => {
                text(field).await.ok();
            }
        }
    }
    Ok(())
}

pub(crate) async fn stream_file(state: &BridgeState, mut field: Field<'_>, key: &BlobKey) -> Result<u64, BridgeError> {
    let mut writer = state
        .backend
        .blobs
        .writer(key, state.config.max_result_bytes)
        .await
        .map_err(|e| BridgeError::Internal(e.into()))?;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => match writer.write(&chunk).await {
                Ok(()) => {}
                Err(WriteError::TooLarge { .. }) => return Err(BridgeError::TooLarge("Result file too large")),
                Err(e) => {
                    writer.abort().await;
                    return Err(BridgeError::Internal(e.into()));
                }
            },
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(multipart_error(e));
            }
        }
    }
    writer.finish().await.map_err(|e| BridgeError::Internal(e.into()))
}

async fn text(mut field: Field<'_>) -> Result<String, BridgeError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(BridgeError::TooLarge("Form field too large"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let text =
        String::from_utf8(bytes).map_err(|_| BridgeError::BadRequest("Form fields must be UTF-8 text".into()))?;
    Ok(dispatcher::model::storable_text(text))
}

pub(crate) fn multipart_error(e: MultipartError) -> BridgeError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        BridgeError::TooLarge("Request too large")
    } else {
        BridgeError::BadRequest(format!("Malformed multipart body: {}", e.body_text()))
    }
}
