//! Job-scoped VM credentials and the newer VM flow: `authenticate` (one-time code
//! → VM token), `vm-ready`, `vm-status`, `artifact`.
//!
//! The fleet key never has to enter a build VM. Every lease carries a fresh
//! one-time code (`job.otp`); the VM exchanges it for a VM token bound to that
//! build and that attempt: refused once another attempt holds the build (401) and
//! answered 409 once the build was cancelled or finished, so the VM stops.
//!
//! The one-time code may be exchanged more than once until it expires (the
//! scripts call `authenticate` once, and a retry after a lost answer must work);
//! each exchange replaces the previous VM token, so one VM per attempt holds one.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use dispatcher::auth::{generate_token, hash_token};
use dispatcher::blobs::BlobKey;
use dispatcher::lease::{self, Ended, StagedResult};
use dispatcher::model::{BuildId, BuildStatus, LogLevel};
use dispatcher::store::{self, leases::OtpRefusal};
use serde::Deserialize;
use serde_json::Value;

use super::builds::owner_activity;
use super::upload::{multipart_error, stream_file};
use crate::extract::{Path, Query, VM_TOKEN, build_actor, header};
use crate::wire::{ArtifactForm, AuthenticateRequest, ErrorBody, Success, VmReady, VmStatus, VmToken};
use crate::{BridgeError, BridgeState};

fn parse_id(raw: &str) -> Result<BuildId, BridgeError> {
    BuildId::parse(raw).map_err(|_| BridgeError::NotFound("Build not found"))
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The build VM exchanges the attempt's one-time code for a VM token.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/authenticate",
    operation_id = "authenticate_vm",
    tag = "vm",
    security(()),
    params(("id" = String, Path, description = "Build id")),
    request_body = AuthenticateRequest,
    responses(
        (status = 200, description = "The VM token", body = VmToken),
        (status = 400, description = "Not JSON, or no `otp`", body = ErrorBody),
        (status = 401, description = "Wrong, expired or no one-time code for this build", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn authenticate(
    State(state): State<BridgeState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<VmToken>, BridgeError> {
    let id = parse_id(&id)?;
    let Json(body) = body?;
    let Some(otp) = body.get("otp").and_then(Value::as_str).filter(|o| !o.is_empty()) else {
        return Err(BridgeError::BadRequest("Missing required parameter: otp".into()));
    };
    let mut tx = state.backend.pool.begin().await.map_err(|e| BridgeError::Internal(e.into()))?;
    if store::builds::lock_build(&mut *tx, &id).await?.is_none() {
        return Err(BridgeError::NotFound("Build not found"));
    }
    let vm_token = generate_token();
    let ttl = state.config.lease.max_build.as_secs_f64().max(60.0);
    let expires = match store::leases::exchange_otp(&mut tx, &id, otp, &hash_token(&vm_token), ttl).await? {
        Ok(expires) => expires,
        Err(OtpRefusal::NoOtp) => return Err(BridgeError::Unauthorized("No OTP configured for this build")),
        Err(OtpRefusal::Invalid) => return Err(BridgeError::Unauthorized("Invalid OTP")),
        Err(OtpRefusal::Expired) => return Err(BridgeError::Unauthorized("OTP expired")),
    };
    store::logs::append(&mut *tx, &id, LogLevel::Info, "VM authenticated with OTP").await?;
    tx.commit().await.map_err(|e| BridgeError::Internal(e.into()))?;
    tracing::info!(build.id = %id, "VM authenticated");
    Ok(Json(VmToken { vm_token, expires_at: iso(expires) }))
}

/// The build VM is up (any body).
#[utoipa::path(
    post,
    path = "/api/builds/{id}/vm-ready",
    operation_id = "vm_ready",
    tag = "vm",
    security(("vm_token" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "Noted", body = VmReady),
        (status = 401, description = "No, or an unknown or expired `X-VM-Token`", body = ErrorBody),
        (status = 403, description = "Not the build's VM", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn vm_ready(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<VmReady>, BridgeError> {
    let id = parse_id(&id)?;
    if header(&headers, VM_TOKEN).is_none() {
        return Err(BridgeError::Unauthorized("Missing X-VM-Token header"));
    }
    owner_activity(&state, &headers, &id, None, false).await?;
    let Some(ready_at) = store::leases::mark_vm_ready(&state.backend.pool, &id).await? else {
        return Err(BridgeError::Conflict(lease::Refusal::LeaseLost.message()));
    };
    store::logs::append(&state.backend.pool, &id, LogLevel::Info, "VM signaled ready").await?;
    Ok(Json(VmReady { success: true, vm_ready_at: iso(ready_at) }))
}

/// Query of `vm-status`.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    worker_id: Option<String>,
}

/// Whether the build VM is ready, for the build's worker.
///
/// `{vm_ready:false}`, or `{vm_ready:true, vm_token, vm_ready_at}` with a token of
/// the worker's own for the build's heartbeats. Without credentials only when
/// the server allows it (the 927aa78 Swift worker).
#[utoipa::path(
    get,
    path = "/api/builds/{id}/vm-status",
    operation_id = "vm_status",
    tag = "vm",
    security(("worker_token" = []), ("api_key" = [], "worker_id" = []), ("vm_token" = []), ()),
    params(
        ("id" = String, Path, description = "Build id"),
        ("worker_id" = Option<String>, Query, description = "The worker, with `X-API-Key` (or `X-Worker-Id`)"),
    ),
    responses(
        (status = 200, description = "The VM's state", body = VmStatus),
        (status = 400, description = "An undecodable query string", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The build is not leased (pending, cancelled or finished)", body = ErrorBody),
    )
)]
pub async fn vm_status(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<VmStatus>, BridgeError> {
    let id = parse_id(&id)?;
    let build =
        store::builds::get_build(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Build not found"))?;
    let anonymous = header(&headers, crate::extract::API_KEY).is_none()
        && header(&headers, crate::extract::WORKER_TOKEN).is_none()
        && header(&headers, VM_TOKEN).is_none();
    if !(anonymous && state.config.open_vm_status) {
        let actor = build_actor(&state, &headers, query.worker_id.as_deref(), Some(&id)).await?;
        lease::check_owner(&build, &actor.worker)?;
    } else if !build.status.is_leased() {
        let message = match build.status {
            BuildStatus::Cancelled => lease::Refusal::Cancelled.message(),
            BuildStatus::Pending => "Build is not assigned",
            _ => lease::Refusal::Finished.message(),
        };
        return Err(BridgeError::Conflict(message));
    }
    let token = generate_token();
    match store::leases::vm_status_token(&state.backend.pool, &id, &hash_token(&token)).await? {
        Some(ready_at) => {
            Ok(Json(VmStatus { vm_ready: true, vm_token: Some(token), vm_ready_at: Some(iso(ready_at)) }))
        }
        None => Ok(Json(VmStatus { vm_ready: false, vm_token: None, vm_ready_at: None })),
    }
}

/// The build VM uploads the artifact (multipart `artifact`, streamed); completes the build.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/artifact",
    operation_id = "upload_artifact",
    tag = "vm",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(("id" = String, Path, description = "Build id")),
    request_body(content = inline(ArtifactForm), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored; the build is completed", body = Success),
        (status = 400, description = "Not multipart, malformed, or no `artifact` file", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
        (status = 413, description = "The artifact passed its limit", body = ErrorBody),
    )
)]
pub async fn artifact(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Success>, BridgeError> {
    let id = parse_id(&id)?;
    let actor = build_actor(&state, &headers, None, Some(&id)).await?;
    let current =
        store::builds::get_build(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Build not found"))?;
    lease::check_owner(&current, &actor.worker)?;
    let mut multipart = multipart.map_err(|_| BridgeError::BadRequest("Content must be multipart/form-data".into()))?;
    let mut staged: Option<StagedResult> = None;
    let received = async {
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            if field.name() == Some("artifact") && staged.is_none() {
                let staging = BlobKey::Upload(uuid::Uuid::now_v7());
                staged = Some(StagedResult { staging: staging.clone(), bytes: 0 });
                let bytes = stream_file(&state, field, &staging).await?;
                staged = Some(StagedResult { staging, bytes });
            }
        }
        Ok::<_, BridgeError>(())
    }
    .await;
    if let Err(e) = received {
        if let Some(staged) = &staged {
            state.backend.blobs.delete(&staged.staging).await.ok();
        }
        return Err(e);
    }
    let Some(staged) = staged else {
        return Err(BridgeError::BadRequest("No artifact file provided".into()));
    };
    match lease::complete(&state.backend, &id, &actor.worker, Some(staged)).await?? {
        Ended::Now | Ended::AlreadyAccepted => Ok(Json(Success { success: true })),
    }
}
