//! `POST /api/builds/submit`: multipart `source`, optional `certs`, `platform`.
//!
//! Files stream into the object store while their bytes are counted; the moment a
//! limit is passed the upload is aborted and the answer is 413. Any refusal deletes
//! what was stored, so a refused request leaves no blob, no row and no job. Only
//! then does the build get its row, first log line and event (one transaction),
//! and its job is published.

use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use dispatcher::blobs::{BlobKey, Blobs, WriteError};
use dispatcher::model::{BuildId, Platform, WireStatus};
use dispatcher::ops::{self, NewSubmission};

use super::ms;
use crate::config::MIB;
use crate::extract::AdminKey;
use crate::wire::{ErrorBody, SubmitForm, Submitted};
use crate::{ApiError, ApiState};

/// Room for the multipart framing and small fields around the files.
const FORM_OVERHEAD: u64 = MIB;
/// Largest accepted value of a text field such as `platform`.
const MAX_TEXT_FIELD: u64 = 64 * 1024;
/// How long a refused upload is still read (and discarded) so that the client is
/// able to read the 413 instead of seeing a reset connection.
const DRAIN_FOR: Duration = Duration::from_secs(2);

/// The request body limit of the submit route: both files plus framing.
pub fn body_limit(state: &ApiState) -> DefaultBodyLimit {
    let max = state.config.max_source_bytes + state.config.max_certs_bytes + FORM_OVERHEAD;
    DefaultBodyLimit::max(usize::try_from(max).unwrap_or(usize::MAX))
}

/// Deletes the blobs of a submission unless it was accepted, also when the request
/// future is dropped (client gone mid-upload).
struct Stored {
    blobs: Blobs,
    keys: Vec<BlobKey>,
    keep: bool,
}

impl Stored {
    async fn discard(mut self) {
        for key in std::mem::take(&mut self.keys) {
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(error = %e, "could not delete the blob of a refused submission");
            }
        }
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        if self.keep || self.keys.is_empty() {
            return;
        }
        let blobs = self.blobs.clone();
        let keys = std::mem::take(&mut self.keys);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for key in keys {
                    blobs.delete(&key).await.ok();
                }
            });
        }
    }
}

/// What the form held.
#[derive(Default)]
struct Form {
    source_bytes: Option<u64>,
    certs_bytes: Option<u64>,
    platform: Option<String>,
}

/// Submits a build: a zipped project, its platform and optional certificates.
///
/// Files stream into the object store; a file past its limit is refused with 413
/// at once and nothing is kept. Checks run in the original controller's order:
/// multipart, source, platform.
#[utoipa::path(
    post,
    path = "/api/builds/submit",
    operation_id = "submit_build",
    tag = "builds",
    security(("api_key" = [])),
    request_body(content = inline(SubmitForm), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Accepted and queued", body = Submitted),
        (status = 400, description = "Not multipart, malformed, no `source`, or no valid `platform`", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 413, description = "A file or the request passed its limit", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<ApiState>,
    _key: AdminKey,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Submitted>, ApiError> {
    let mut multipart = multipart.map_err(|_| ApiError::BadRequest("Content must be multipart/form-data".into()))?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_source_bytes + state.config.max_certs_bytes + FORM_OVERHEAD) {
        return Err(ApiError::TooLarge("Request too large"));
    }

    let id = BuildId::generate();
    let mut stored = Stored { blobs: state.backend.blobs.clone(), keys: Vec::new(), keep: false };
    let form = match receive(&state, &id, &mut multipart, &mut stored).await {
        Ok(form) => form,
        Err(e) => {
            stored.discard().await;
            if matches!(e, ApiError::TooLarge(_)) {
                drain(&mut multipart).await;
            }
            return Err(e);
        }
    };
    let Some(source_bytes) = form.source_bytes else {
        stored.discard().await;
        return Err(ApiError::BadRequest("Source file required".into()));
    };
    let Some(platform) = form.platform.as_deref().and_then(|p| p.trim().parse::<Platform>().ok()) else {
        stored.discard().await;
        return Err(ApiError::BadRequest("Valid platform required (ios|android)".into()));
    };

    let submission = NewSubmission { id, platform, source_bytes, certs_bytes: form.certs_bytes, retry_of: None };
    let accepted = match ops::enqueue(&state.backend, submission).await {
        Ok(accepted) => accepted,
        Err(e) => {
            stored.discard().await;
            return Err(e.into());
        }
    };
    stored.keep = true;
    tracing::info!(build.id = %accepted.id, %platform, source_bytes, published = accepted.published, "build submitted");
    Ok(Json(Submitted {
        id: accepted.id,
        status: WireStatus::Pending,
        submitted_at: ms(accepted.submitted_at),
        access_token: accepted.token,
        original_build_id: None,
    }))
}

async fn receive(
    state: &ApiState,
    id: &BuildId,
    multipart: &mut Multipart,
    stored: &mut Stored,
) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "source" => {
                if form.source_bytes.is_some() {
                    return Err(ApiError::BadRequest("Only one source file is allowed".into()));
                }
                let key = BlobKey::Source(id.clone());
                stored.keys.push(key.clone());
                let limit = state.config.max_source_bytes;
                let size = store_field(&state.backend.blobs, field, &key, limit, "Source file too large").await?;
                form.source_bytes = Some(size);
            }
            "certs" => {
                if form.certs_bytes.is_some() {
                    return Err(ApiError::BadRequest("Only one certs file is allowed".into()));
                }
                let key = BlobKey::Certs(id.clone());
                stored.keys.push(key.clone());
                let limit = state.config.max_certs_bytes;
                let size = store_field(&state.backend.blobs, field, &key, limit, "Certs file too large").await?;
                form.certs_bytes = Some(size);
            }
            "platform" => form.platform = Some(read_text(field).await?),
            // The CLI also sends profile, appleId and applePassword; like the
            // original controller we ignore other parts (without keeping them).
            _ => {
                skip(field).await?;
            }
        }
    }
    Ok(form)
}

async fn store_field(
    blobs: &Blobs,
    mut field: Field<'_>,
    key: &BlobKey,
    limit: u64,
    too_large: &'static str,
) -> Result<u64, ApiError> {
    let mut writer = blobs.writer(key, limit).await.map_err(|e| ApiError::Internal(e.into()))?;
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(multipart_error(e));
            }
        };
        match writer.write(&chunk).await {
            Ok(()) => {}
            Err(WriteError::TooLarge { .. }) => return Err(ApiError::TooLarge(too_large)),
            Err(e @ WriteError::Store(_)) => {
                writer.abort().await;
                return Err(ApiError::Internal(e.into()));
            }
        }
    }
    writer.finish().await.map_err(|e| ApiError::Internal(e.into()))
}

async fn read_text(mut field: Field<'_>) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if (text.len() + chunk.len()) as u64 > MAX_TEXT_FIELD {
            return Err(ApiError::TooLarge("Form field too large"));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| ApiError::BadRequest("Form fields must be UTF-8 text".into()))
}

async fn skip(mut field: Field<'_>) -> Result<(), ApiError> {
    let mut seen = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        seen += chunk.len() as u64;
        if seen > MAX_TEXT_FIELD * 16 {
            return Err(ApiError::TooLarge("Form field too large"));
        }
    }
    Ok(())
}

/// Reads and discards what is left of a refused upload, for a bounded time.
async fn drain(multipart: &mut Multipart) {
    let all = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, all).await;
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("Request too large")
    } else {
        ApiError::BadRequest(format!("Malformed multipart body: {}", e.body_text()))
    }
}
