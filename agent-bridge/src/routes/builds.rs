//! Worker- and VM-side build routes: source, certs, certs-secure, logs,
//! telemetry, heartbeat. Each authenticates the caller, checks that it holds the
//! build's lease (in Postgres), and counts as activity that extends the lease.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dispatcher::blobs::BlobKey;
use dispatcher::lease;
use dispatcher::model::{BuildId, LogLevel};
use dispatcher::store::{self, builds::Build};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::certs::SigningMaterial;
use crate::extract::{API_KEY, BUILD_ID, Path, Query, WORKER_ID, WORKER_TOKEN, build_actor, header, json_body};
use crate::wire::{
    ErrorBody, HeartbeatAnswer, HeartbeatRequest, LogsAccepted, LogsRequest, StatusOk, TelemetryRequest, ZipBody,
};
use crate::{BridgeError, BridgeState};

/// Most log lines accepted in one batch.
const MAX_BATCH: usize = 1000;
/// Longest log message kept.
const MAX_MESSAGE: usize = 16 * 1024;

fn parse_id(raw: &str) -> Result<BuildId, BridgeError> {
    BuildId::parse(raw).map_err(|_| BridgeError::NotFound("Build not found"))
}

/// Authenticates a worker-side request on `id`, checks its lease and records the
/// activity. `require_build_header` enforces the V0 scripts' `X-Build-Id` binding
/// on the key path.
pub(crate) async fn owner_activity(
    state: &BridgeState,
    headers: &HeaderMap,
    id: &BuildId,
    query_worker: Option<&str>,
    require_build_header: bool,
) -> Result<Build, BridgeError> {
    let actor = build_actor(state, headers, query_worker, Some(id)).await?;
    if actor.by_key && require_build_header {
        check_build_header(headers, id)?;
    }
    Ok(lease::touch(&state.backend, &state.config.lease, id, &actor.worker).await??)
}

fn check_build_header(headers: &HeaderMap, id: &BuildId) -> Result<(), BridgeError> {
    match header(headers, BUILD_ID) {
        None => Err(BridgeError::Unauthorized("Missing X-Build-Id header")),
        Some(b) if b == id.as_str() => Ok(()),
        Some(_) => Err(BridgeError::Forbidden("X-Build-Id header does not match build ID in URL")),
    }
}

async fn stream_blob(
    state: &BridgeState,
    key: &BlobKey,
    filename: String,
    missing: &'static str,
) -> Result<Response, BridgeError> {
    let Some(reader) = state.backend.blobs.read(key).await? else {
        return Err(BridgeError::NotFound(missing));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CONTENT_LENGTH, reader.size.to_string()),
        ],
        Body::from_stream(reader.stream),
    )
        .into_response())
}

/// The zipped project, for the build's worker or its VM.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/source",
    operation_id = "download_source",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The source", body = inline(ZipBody), content_type = "application/zip"),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn source(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, BridgeError> {
    let id = parse_id(&id)?;
    owner_activity(&state, &headers, &id, None, false).await?;
    stream_blob(&state, &BlobKey::Source(id.clone()), format!("{id}.zip"), "Source not found").await
}

/// The certificate bundle as uploaded, for the build's worker.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/certs",
    operation_id = "download_certs",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The bundle", body = inline(ZipBody), content_type = "application/zip"),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build, or it has no certificates", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn certs(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, BridgeError> {
    let id = parse_id(&id)?;
    let build = owner_activity(&state, &headers, &id, None, false).await?;
    if !build.has_certs() {
        return Err(BridgeError::NotFound("Certs not found"));
    }
    stream_blob(&state, &BlobKey::Certs(id.clone()), format!("{id}-certs.zip"), "Certs not found").await
}

/// The certificate bundle unpacked for the build VM (camelCase keys).
///
/// With `X-API-Key`, the V0 scripts' `X-Build-Id` must name the build in the path.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/certs-secure",
    operation_id = "certs_secure",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("X-Build-Id" = Option<String>, Header, description = "The build in the path (required with `X-API-Key`)"),
    ),
    responses(
        (status = 200, description = "The signing material", body = SigningMaterial),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build, or it has no certificates", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
        (status = 422, description = "The bundle is not a usable zip", body = ErrorBody),
    )
)]
pub async fn certs_secure(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SigningMaterial>, BridgeError> {
    let id = parse_id(&id)?;
    let build = owner_activity(&state, &headers, &id, None, true).await?;
    if !build.has_certs() {
        return Err(BridgeError::NotFound("Certs not found"));
    }
    let Some(mut reader) = state.backend.blobs.read(&BlobKey::Certs(id.clone())).await? else {
        return Err(BridgeError::NotFound("Certs not found"));
    };
    // Bounded by the certificate upload limit; the answer carries it whole anyway.
    let mut zip = Vec::with_capacity(usize::try_from(reader.size).unwrap_or(0));
    while let Some(chunk) = reader.stream.next().await {
        zip.extend_from_slice(&chunk.map_err(|e| BridgeError::Internal(e.into()))?);
    }
    let limit = state.config.max_certs_unzipped_bytes;
    let material = tokio::task::spawn_blocking(move || crate::certs::read_bundle(&zip, limit))
        .await
        .map_err(|e| BridgeError::Internal(e.into()))?
        .map_err(|e| BridgeError::Unprocessable(format!("Failed to process certs file: {e}")))?;
    Ok(Json(material))
}

fn level_of(value: Option<&Value>) -> Option<LogLevel> {
    match value.and_then(Value::as_str)? {
        "info" => Some(LogLevel::Info),
        "warn" => Some(LogLevel::Warn),
        "error" => Some(LogLevel::Error),
        _ => None,
    }
}

fn message_of(value: Option<&Value>) -> Option<String> {
    let message = value?.as_str()?;
    Some(message.chars().take(MAX_MESSAGE).collect())
}

/// Appends log lines of a build: `{level, message}` or `{logs:[...]}`.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/logs",
    operation_id = "append_logs",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(("id" = String, Path, description = "Build id")),
    request_body = LogsRequest,
    responses(
        (status = 200, description = "Stored", body = LogsAccepted),
        (status = 400, description = "Not JSON, or neither a line nor a batch (of at most 1000)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<LogsAccepted>, BridgeError> {
    let id = parse_id(&id)?;
    owner_activity(&state, &headers, &id, None, false).await?;
    let body = json_body(body)?;
    let (lines, answer) = if let Some(entries) = body.get("logs").and_then(Value::as_array) {
        if entries.len() > MAX_BATCH {
            return Err(BridgeError::BadRequest(format!("At most {MAX_BATCH} log entries per request")));
        }
        let lines: Vec<(LogLevel, String)> =
            entries.iter().filter_map(|e| Some((level_of(e.get("level"))?, message_of(e.get("message"))?))).collect();
        (lines, LogsAccepted { success: true, count: Some(entries.len()) })
    } else if body.get("level").is_some() || body.get("message").is_some() {
        let Some(level) = level_of(body.get("level")) else {
            return Err(BridgeError::BadRequest("Invalid log level. Must be: info, warn, or error".into()));
        };
        let Some(message) = message_of(body.get("message")) else {
            return Err(BridgeError::BadRequest("Invalid body. Expected { level, message } or { logs: [...] }".into()));
        };
        (vec![(level, message)], LogsAccepted { success: true, count: None })
    } else {
        return Err(BridgeError::BadRequest("Invalid body. Expected { level, message } or { logs: [...] }".into()));
    };
    store::logs::append_many(&state.backend.pool, &id, &lines).await?;
    publish_live(&state, &id, &lines).await;
    Ok(Json(answer))
}

/// Publishes accepted log lines on `<namespace>.logs.<build>` (best effort: the
/// stored log is the record).
async fn publish_live(state: &BridgeState, id: &BuildId, lines: &[(LogLevel, String)]) {
    let subject = state.backend.queue.names().log_subject(id);
    let now = chrono::Utc::now().timestamp_millis();
    for (level, message) in lines {
        let body = json!({ "build_id": id, "timestamp": now, "level": level, "message": message });
        let payload = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        if let Err(e) = state.backend.queue.client().publish(subject.clone(), payload).await {
            tracing::debug!(error = %e, "live log line not published");
            return;
        }
    }
}

/// A sample of the VM monitor or the host monitor; counts as activity.
///
/// The old host monitor sends only `X-Worker-Id` and `X-Build-Id` (accepted
/// unless turned off); with `X-API-Key`, `X-Build-Id` must name the build.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/telemetry",
    operation_id = "telemetry",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = []), ("worker_id" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("X-Build-Id" = Option<String>, Header, description = "The build in the path (required with `X-API-Key` or without credentials)"),
    ),
    request_body = TelemetryRequest,
    responses(
        (status = 200, description = "Stored", body = StatusOk),
        (status = 400, description = "Not JSON, or no `type`, `timestamp` or `data`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn telemetry(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<StatusOk>, BridgeError> {
    let id = parse_id(&id)?;
    let keyless = header(&headers, API_KEY).is_none()
        && header(&headers, WORKER_TOKEN).is_none()
        && header(&headers, crate::extract::VM_TOKEN).is_none();
    if keyless {
        // The old host resource monitor sends only the two ids.
        if !state.config.keyless_telemetry {
            return Err(BridgeError::Unauthorized("Missing X-API-Key header"));
        }
        let Some(worker) = header(&headers, WORKER_ID) else {
            return Err(BridgeError::Unauthorized(
                "Missing credentials: X-Worker-Token, or X-API-Key with X-Worker-Id",
            ));
        };
        check_build_header(&headers, &id)?;
        let worker = dispatcher::model::WorkerId::parse(worker)
            .map_err(|_| BridgeError::Forbidden("Worker not authorized for this build"))?;
        lease::touch(&state.backend, &state.config.lease, &id, &worker).await??;
    } else {
        owner_activity(&state, &headers, &id, None, true).await?;
    }
    let body = json_body(body)?;
    let (Some(kind), Some(_), Some(data)) =
        (body.get("type").and_then(Value::as_str), body.get("timestamp"), body.get("data"))
    else {
        return Err(BridgeError::BadRequest("Invalid telemetry data".into()));
    };
    let pool = &state.backend.pool;
    match kind {
        "monitor_started" => store::logs::append(pool, &id, LogLevel::Info, "[VM] Monitor started").await?,
        "cpu_snapshot" => {
            let cpu = data.get("cpu_percent").and_then(Value::as_f64);
            let mem = data.get("memory_mb").and_then(Value::as_f64);
            if let (Some(cpu), Some(mem)) = (cpu, mem)
                && (0.0..=1000.0).contains(&cpu)
                && (0.0..=1_000_000.0).contains(&mem)
            {
                store::logs::add_cpu_snapshot(pool, &id, cpu, mem).await?;
            }
        }
        "heartbeat" => {
            let metrics = data.get("metrics").cloned().unwrap_or(Value::Null);
            let text =
                |v: Option<&Value>| v.map(|v| v.to_string().trim_matches('"').to_owned()).unwrap_or_else(|| "?".into());
            let message = format!(
                "[VM] Stage: {} | CPU: {}% | Mem: {}MB | Disk: {}% | Beat: {}",
                text(data.get("stage")),
                text(metrics.get("cpu_percent")),
                text(metrics.get("memory_mb")),
                text(metrics.get("disk_percent")),
                text(data.get("heartbeat_count")),
            );
            store::logs::append(pool, &id, LogLevel::Debug, &message).await?;
        }
        other => {
            let kind: String = other.chars().take(64).collect();
            let data: String = data.to_string().chars().take(2000).collect();
            store::logs::append(pool, &id, LogLevel::Debug, &format!("[VM] {kind}: {data}")).await?;
        }
    }
    Ok(Json(StatusOk { status: "ok" }))
}

/// Query of the heartbeat route.
#[derive(Debug, Deserialize)]
pub struct HeartbeatQuery {
    worker_id: Option<String>,
}

/// The build is alive (W4 every 20 s, with `X-VM-Token`): `{progress}` or `{}`.
///
/// Any answer but 200 makes W4 abort the build.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/heartbeat",
    operation_id = "build_heartbeat",
    tag = "worker builds",
    security(("vm_token" = []), ("worker_token" = []), ("api_key" = [], "worker_id" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("worker_id" = Option<String>, Query, description = "The worker (W4 sends it; with `X-API-Key` it names the worker)"),
    ),
    request_body(content = Option<HeartbeatRequest>, description = "Optional; a body that is not JSON is ignored"),
    responses(
        (status = 200, description = "Noted", body = HeartbeatAnswer),
        (status = 400, description = "`X-API-Key` without a worker id", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not the build's worker", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn heartbeat(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HeartbeatQuery>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<HeartbeatAnswer>, BridgeError> {
    // The body is optional (W4 sends `{}` or `{progress}`); one that is not JSON
    // is ignored rather than refused, since any answer but 200 aborts W4's build.
    // One over the JSON body limit is refused all the same: no worker sends that.
    let body = match body {
        Ok(body) => Some(body),
        Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(BridgeError::TooLarge("Request body too large"));
        }
        Err(_) => None,
    };
    let id = parse_id(&id)?;
    if header(&headers, API_KEY).is_some()
        && header(&headers, WORKER_TOKEN).is_none()
        && query.worker_id.is_none()
        && header(&headers, WORKER_ID).is_none()
    {
        check_key_only(&state, &headers)?;
        return Err(BridgeError::BadRequest("worker_id required".into()));
    }
    owner_activity(&state, &headers, &id, query.worker_id.as_deref(), false).await?;
    if let Some(progress) = body.as_ref().and_then(|Json(b)| b.get("progress")).and_then(Value::as_f64) {
        let message = format!("Build progress: {}%", progress.clamp(0.0, 100.0).round());
        store::logs::append(&state.backend.pool, &id, LogLevel::Info, &message).await?;
    }
    Ok(Json(HeartbeatAnswer { status: "ok", timestamp: chrono::Utc::now().timestamp_millis() }))
}

fn check_key_only(state: &BridgeState, headers: &HeaderMap) -> Result<(), BridgeError> {
    crate::extract::check_legacy_key(state, header(headers, API_KEY).unwrap_or_default())
}
