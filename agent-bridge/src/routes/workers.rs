//! Worker routes: register, poll, unregister, abandon, heartbeat, fail, stats.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use chrono::Utc;
use dispatcher::auth::{generate_token, hash_token};
use dispatcher::lease::{self, Delivery, Offer, RequeueIf, Requeued};
use dispatcher::model::{BuildId, Platform, WorkerId};
use dispatcher::queue::Queue;
use dispatcher::store::builds::Build;
use dispatcher::store::{self, workers::Registration, workers::WorkerIdentity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{
    API_KEY, AdminKey, Path, Query, WORKER_ID, WORKER_TOKEN, check_legacy_key, header, json_body, worker_by_token,
};
use crate::wire::{
    AbandonRequest, BuildReport, ErrorBody, Job, PollAnswer, RegisterRequest, Registered, Success, SuccessMessage,
    Unregistered, WorkerStats, WorkerSummary,
};
use crate::{BridgeError, BridgeState};

/// The id the worker installer writes when its registration failed; several
/// machines would share it, so it is never honoured.
const INSTALLER_PLACEHOLDER_ID: &str = "pending-registration";
/// Fetches per poll and platform that may be passed over (settled or adopted).
const FETCHES_PER_PLATFORM: usize = 4;

/// Platforms a worker declares: `capabilities.platforms` (workers, mock) or
/// `capabilities.platform` (installer). None known means all.
fn declared_platforms(capabilities: &Value) -> Vec<Platform> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(list) = capabilities.get("platforms").and_then(Value::as_array) {
        names.extend(list.iter().filter_map(Value::as_str));
    }
    if let Some(one) = capabilities.get("platform").and_then(Value::as_str) {
        names.push(one);
    }
    let mut platforms: Vec<Platform> = names.iter().filter_map(|n| n.to_ascii_lowercase().parse().ok()).collect();
    platforms.sort_by_key(|p| p.as_str());
    platforms.dedup();
    if platforms.is_empty() { Platform::ALL.to_vec() } else { platforms }
}

/// Registers a worker, or re-registers a known id; issues a worker token.
#[utoipa::path(
    post,
    path = "/api/workers/register",
    operation_id = "register_worker",
    tag = "workers",
    security(("api_key" = [])),
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered (always 200: W2+ require exactly that)", body = Registered),
        (status = 400, description = "Not JSON, or no `name` or `capabilities` object", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<BridgeState>,
    _key: AdminKey,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Registered>, BridgeError> {
    let body = json_body(body)?;
    let name = body.get("name").and_then(Value::as_str).map(str::trim).filter(|n| !n.is_empty());
    let capabilities = body.get("capabilities").filter(|c| c.is_object());
    let (Some(name), Some(capabilities)) = (name, capabilities) else {
        return Err(BridgeError::BadRequest("Name and capabilities required".into()));
    };
    let name: String = name.chars().take(200).collect();
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| *id != INSTALLER_PLACEHOLDER_ID)
        .and_then(|id| WorkerId::parse(id).ok())
        .unwrap_or_else(WorkerId::generate);
    let platforms = declared_platforms(capabilities);
    let max_concurrent =
        capabilities.get("maxConcurrentBuilds").and_then(Value::as_i64).map_or(1, |n| n.clamp(1, 64)) as i32;
    let token = generate_token();
    let created = store::workers::register(
        &state.backend.pool,
        &Registration {
            id: &id,
            name: &name,
            capabilities,
            platforms: &platforms,
            max_concurrent,
            token_hash: &hash_token(&token),
            grace_secs: state.config.token_grace_secs,
        },
    )
    .await?;
    state.cache.forget(&id);
    // A worker that restarts without its build gives its leases back at once.
    let mut requeued = 0;
    if !created && body.get("active_build_count").and_then(Value::as_i64) == Some(0) {
        requeued = give_back_leases(&state, &id, "Worker restarted without its build").await?;
    }
    let event = if created { "registered" } else { "re_registered" };
    let data = json!({ "worker_id": id, "name": name, "platforms": platforms, "requeued": requeued });
    store::outbox::record(&state.backend.pool, "worker", id.as_str(), event, &data).await?;
    tracing::info!(worker.id = %id, created, "worker registered");
    Ok(Json(Registered {
        id,
        status: if created { "registered" } else { "re-registered" },
        base_image_id: state.config.base_image_id.clone(),
        access_token: token,
        message: if created { "Worker registered successfully" } else { "Worker re-registered successfully" },
    }))
}

async fn give_back_leases(state: &BridgeState, worker: &WorkerId, reason: &str) -> Result<usize, BridgeError> {
    let mut count = 0;
    for build in store::leases::live_leases_of(&state.backend.pool, worker).await? {
        let outcome =
            lease::requeue(&state.backend, &state.config.lease, &build, RequeueIf::OwnedBy(worker), reason).await?;
        if outcome != Requeued::Skipped {
            count += 1;
        }
    }
    Ok(count)
}

/// Query of the poll route.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    worker_id: Option<String>,
    wait: Option<String>,
}

/// Asks for a job: the next build of the worker's platforms, or its own build again.
///
/// A worker at capacity that polls has restarted and gets its build again (with
/// a fresh `otp`). `?wait=N` long-polls up to N seconds (capped by the server).
#[utoipa::path(
    get,
    path = "/api/workers/poll",
    operation_id = "poll",
    tag = "workers",
    security(("worker_token" = []), ("api_key" = [])),
    params(
        ("worker_id" = Option<String>, Query, description = "The worker, with `X-API-Key` (or `X-Worker-Id`)"),
        ("wait" = Option<f64>, Query, minimum = 0, description = "Seconds to wait for a job (default 0)"),
        ("X-Worker-Id" = Option<String>, Header, description = "The worker, with `X-API-Key`, when `worker_id` is absent"),
    ),
    responses(
        (status = 200, description = "A job or `null`", body = PollAnswer),
        (status = 400, description = "No worker id with the key, or `wait` is not a number", body = ErrorBody),
        (status = 401, description = "No credentials, or an unknown worker token", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker (key path)", body = ErrorBody),
    )
)]
pub async fn poll(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    Query(query): Query<PollQuery>,
) -> Result<Json<PollAnswer>, BridgeError> {
    let (worker, token) = if let Some(token) = header(&headers, WORKER_TOKEN) {
        let w = worker_by_token(&state, token).await?;
        (w.identity, Some(w.token))
    } else {
        let Some(key) = header(&headers, API_KEY) else {
            return Err(BridgeError::Unauthorized(
                "Authentication required: provide X-Worker-Token or (X-API-Key + worker_id)",
            ));
        };
        check_legacy_key(&state, key)?;
        let Some(id) = query.worker_id.as_deref().or(header(&headers, WORKER_ID)) else {
            return Err(BridgeError::BadRequest("worker_id required".into()));
        };
        let id = WorkerId::parse(id).map_err(|_| BridgeError::NotFound("Worker not found"))?;
        let identity = match state.cache.worker_by_id(&id) {
            Some(identity) => identity,
            None => {
                let identity = store::workers::find_identity(&state.backend.pool, &id)
                    .await?
                    .ok_or(BridgeError::NotFound("Worker not found"))?;
                state.cache.remember_worker(identity.clone());
                identity
            }
        };
        (identity, None)
    };
    let wait = match query.wait.as_deref() {
        None => Duration::ZERO,
        Some(raw) => match raw.parse::<f64>() {
            // Capped before the conversion, which panics past about 1.8e19 seconds.
            Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                Duration::from_secs_f64(secs.min(state.config.max_poll_wait.as_secs_f64()))
            }
            _ => return Err(BridgeError::BadRequest("wait must be a number of seconds".into())),
        },
    };
    if state.cache.seen_due(&worker.id) {
        store::workers::touch_seen(&state.backend.pool, &worker.id).await?;
    }
    let job = find_job(&state, &worker, wait).await?;
    Ok(Json(PollAnswer { job, access_token: token }))
}

fn job_json(state: &BridgeState, build: &Build, otp: &str) -> Job {
    Job {
        id: build.id.clone(),
        platform: build.platform,
        source_url: format!("/api/builds/{}/source", build.id),
        certs_url: build.has_certs().then(|| format!("/api/builds/{}/certs", build.id)),
        base_image_id: state.config.base_image_id.clone(),
        otp: otp.to_owned(),
        submitted_at: build.submitted_at.timestamp_millis(),
    }
}

async fn find_job(state: &BridgeState, worker: &WorkerIdentity, wait: Duration) -> Result<Option<Job>, BridgeError> {
    let capacity = usize::try_from(worker.max_concurrent).unwrap_or(1);
    let known = state.cache.lease_count(&worker.id);
    let live = match known {
        Some(count) if count < capacity => Vec::new(),
        _ => {
            let live = store::leases::live_leases_of(&state.backend.pool, &worker.id).await?;
            state.cache.remember_lease_count(&worker.id, live.len());
            live
        }
    };
    if live.len() >= capacity {
        // A worker at capacity that polls has restarted: hand it its build again.
        for id in &live {
            if let Some((build, otp)) =
                Box::pin(lease::redeliver(&state.backend, &state.config.lease, worker, id)).await?
            {
                tracing::info!(build.id = %id, worker.id = %worker.id, "job handed to its owner again");
                return Ok(Some(job_json(state, &build, &otp)));
            }
        }
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Boxed: a waiting poll then holds only this small loop, not the (large)
        // fetch-and-offer state machine; thousands of waiters stay cheap.
        if let Some(job) = Box::pin(try_fetch(state, worker)).await? {
            return Ok(Some(job));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        state.signals.wait(&worker.platforms, deadline - now).await;
    }
}

async fn try_fetch(state: &BridgeState, worker: &WorkerIdentity) -> Result<Option<Job>, BridgeError> {
    for platform in &worker.platforms {
        if state.signals.maybe_available(*platform).is_none() {
            continue;
        }
        let _turn = state.signals.fetch_turn(*platform).await;
        let Some(generation) = state.signals.maybe_available(*platform) else { continue };
        let Some(consumer) = state.consumers.get(platform) else { continue };
        for _ in 0..FETCHES_PER_PLATFORM {
            let message = match Queue::fetch_one(consumer).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    state.signals.fetched_nothing(*platform, generation);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %platform, "fetch failed");
                    break;
                }
            };
            let more_waiting = message.info().map(|i| i.pending > 0).unwrap_or(false);
            let Some(delivery) = Delivery::from_message(&message) else { continue };
            // The offer runs to its end even when the poller goes away meanwhile.
            let task = {
                let (backend, settings, worker, delivery) =
                    (state.backend.clone(), state.config.lease.clone(), worker.clone(), delivery.clone());
                tokio::spawn(async move { lease::offer(&backend, &settings, &worker, &delivery).await })
            };
            match task.await {
                Ok(Ok(Offer::Granted { build, otp })) => {
                    state.cache.forget(&worker.id);
                    if more_waiting {
                        state.signals.job_seen(*platform);
                    }
                    tracing::info!(build.id = %build.id, worker.id = %worker.id, "build assigned");
                    return Ok(Some(job_json(state, &build, &otp)));
                }
                Ok(Ok(Offer::Passed)) => continue,
                outcome => {
                    if let Err(e) = state.backend.queue.nak(&delivery.reply).await {
                        tracing::warn!(error = %e, "could not give a fetched job back");
                    }
                    let cause = match outcome {
                        Ok(Err(e)) => anyhow::Error::from(e),
                        Err(join) => anyhow::anyhow!("offer task failed: {join}"),
                        Ok(Ok(_)) => unreachable!("handled above"),
                    };
                    return Err(BridgeError::Internal(cause));
                }
            }
        }
    }
    Ok(None)
}

/// Unregisters the token's worker: its builds go back to the queue, it goes offline.
#[utoipa::path(
    post,
    path = "/api/workers/unregister",
    operation_id = "unregister_worker",
    tag = "workers",
    security(("worker_token" = [])),
    responses(
        (status = 200, description = "Unregistered", body = Unregistered),
        (status = 401, description = "No or an unknown `X-Worker-Token`", body = ErrorBody),
    )
)]
pub async fn unregister(
    State(state): State<BridgeState>,
    headers: HeaderMap,
) -> Result<Json<Unregistered>, BridgeError> {
    let Some(token) = header(&headers, WORKER_TOKEN) else {
        return Err(BridgeError::Unauthorized("Missing X-Worker-Token header"));
    };
    let worker = worker_by_token(&state, token).await?;
    unregister_worker(&state, &worker.identity.id).await
}

/// Unregisters a worker by id, as the oldest workers call it (fleet key).
#[utoipa::path(
    post,
    path = "/api/workers/{id}/unregister",
    operation_id = "unregister_worker_by_id",
    tag = "workers",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "Unregistered", body = Unregistered),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
    )
)]
pub async fn unregister_by_id(
    State(state): State<BridgeState>,
    _key: AdminKey,
    Path(id): Path<String>,
) -> Result<Json<Unregistered>, BridgeError> {
    let id = WorkerId::parse(&id).map_err(|_| BridgeError::NotFound("Worker not found"))?;
    store::workers::find_identity(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Worker not found"))?;
    unregister_worker(&state, &id).await
}

async fn unregister_worker(state: &BridgeState, id: &WorkerId) -> Result<Json<Unregistered>, BridgeError> {
    state.cache.forget(id);
    let reassigned = give_back_leases(state, id, "Worker unregistered").await?;
    store::workers::set_offline(&state.backend.pool, id).await?;
    let data = json!({ "worker_id": id, "builds_reassigned": reassigned });
    store::outbox::record(&state.backend.pool, "worker", id.as_str(), "unregistered", &data).await?;
    tracing::info!(worker.id = %id, reassigned, "worker unregistered");
    Ok(Json(Unregistered { success: true, message: "Worker unregistered", builds_reassigned: reassigned }))
}

/// Gives the caller's own build back to the queue (or fails it when no attempts are left).
#[utoipa::path(
    post,
    path = "/api/workers/abandon",
    operation_id = "abandon_build",
    tag = "workers",
    security(("worker_token" = [])),
    request_body = AbandonRequest,
    responses(
        (status = 200, description = "Requeued, or failed for want of attempts", body = SuccessMessage),
        (status = 400, description = "Not JSON, or no `build_id` or `reason`", body = ErrorBody),
        (status = 401, description = "No or an unknown `X-Worker-Token`", body = ErrorBody),
        (status = 403, description = "Not this worker's build", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn abandon(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<SuccessMessage>, BridgeError> {
    let Some(token) = header(&headers, WORKER_TOKEN) else {
        return Err(BridgeError::Unauthorized("Missing X-Worker-Token header"));
    };
    let worker = worker_by_token(&state, token).await?;
    let body = json_body(body)?;
    let (Some(build), Some(reason)) =
        (body.get("build_id").and_then(Value::as_str), body.get("reason").and_then(Value::as_str))
    else {
        return Err(BridgeError::BadRequest("build_id and reason required".into()));
    };
    let id = BuildId::parse(build).map_err(|_| BridgeError::NotFound("Build not found"))?;
    let current =
        store::builds::get_build(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Build not found"))?;
    lease::check_owner(&current, &worker.identity.id)?;
    let reason: String = reason.chars().take(500).collect();
    let reason = format!("Abandoned by worker {}: {reason}", worker.identity.name);
    match lease::requeue(&state.backend, &state.config.lease, &id, RequeueIf::OwnedBy(&worker.identity.id), &reason)
        .await?
    {
        Requeued::Queued => Ok(Json(SuccessMessage { success: true, message: "Build requeued successfully" })),
        Requeued::Failed => Ok(Json(SuccessMessage { success: true, message: "Build failed: no attempts left" })),
        Requeued::Skipped => Err(BridgeError::Conflict(lease::Refusal::LeaseLost.message())),
    }
}

/// Reads a JSON worker route about one build: `{build_id, worker_id?, ...}`, the
/// worker by token or key + `worker_id`.
async fn build_report(
    state: &BridgeState,
    headers: &HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(WorkerId, BuildId, Value), BridgeError> {
    let body = json_body(body)?;
    let claimed = body.get("worker_id").and_then(Value::as_str).or(header(headers, WORKER_ID));
    let worker = crate::extract::build_actor(state, headers, claimed, None).await?.worker;
    let Some(build) = body.get("build_id").and_then(Value::as_str) else {
        return Err(BridgeError::BadRequest("build_id required".into()));
    };
    let id = BuildId::parse(build).map_err(|_| BridgeError::NotFound("Build not found"))?;
    Ok((worker, id, body))
}

/// The owner of a build is alive (extends its lease).
#[utoipa::path(
    post,
    path = "/api/workers/heartbeat",
    operation_id = "worker_heartbeat",
    tag = "workers",
    security(("worker_token" = []), ("api_key" = [], "worker_id" = []), ("api_key" = [])),
    request_body = BuildReport,
    responses(
        (status = 200, description = "Noted", body = Success),
        (status = 400, description = "Not JSON, or no `build_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not this worker's build", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn heartbeat(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Success>, BridgeError> {
    let (worker, id, _) = build_report(&state, &headers, body).await?;
    lease::touch(&state.backend, &state.config.lease, &id, &worker).await??;
    Ok(Json(Success { success: true }))
}

/// The owner of a build gives up: the build fails with `error`.
#[utoipa::path(
    post,
    path = "/api/workers/fail",
    operation_id = "worker_fail",
    tag = "workers",
    security(("worker_token" = []), ("api_key" = [], "worker_id" = []), ("api_key" = [])),
    request_body = BuildReport,
    responses(
        (status = 200, description = "Failed", body = SuccessMessage),
        (status = 400, description = "Not JSON, or no `build_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or expired credentials", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`, or not this worker's build", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "The lease was lost, or the build was cancelled or finished", body = ErrorBody),
    )
)]
pub async fn fail(
    State(state): State<BridgeState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<SuccessMessage>, BridgeError> {
    let (worker, id, body) = build_report(&state, &headers, body).await?;
    let message = body.get("error").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or("Build failed");
    let message: String = message.chars().take(4000).collect();
    lease::fail(&state.backend, &id, &worker, &message).await??;
    Ok(Json(SuccessMessage { success: true, message: "Build marked as failed" }))
}

/// Every worker, most recently seen first (fleet key).
#[utoipa::path(
    get,
    path = "/api/workers",
    operation_id = "list_workers",
    tag = "workers",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The workers", body = Vec<WorkerSummary>),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<BridgeState>, _key: AdminKey) -> Result<Json<Vec<WorkerSummary>>, BridgeError> {
    let workers = store::workers::list_workers(&state.backend.pool).await?;
    let iso = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(Json(
        workers
            .into_iter()
            .map(|w| WorkerSummary {
                registered_at: iso(w.registered_at),
                last_seen_at: iso(w.last_seen_at),
                id: w.id,
                name: w.name,
                status: w.status,
                platforms: w.platforms,
                builds_completed: w.builds_completed,
                builds_failed: w.builds_failed,
            })
            .collect(),
    ))
}

/// A worker's statistics (camelCase, as the Swift app decodes them).
#[utoipa::path(
    get,
    path = "/api/workers/{id}/stats",
    operation_id = "worker_stats",
    tag = "workers",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The statistics", body = WorkerStats),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
    )
)]
pub async fn stats(
    State(state): State<BridgeState>,
    _key: AdminKey,
    Path(id): Path<String>,
) -> Result<Json<WorkerStats>, BridgeError> {
    let id = WorkerId::parse(&id).map_err(|_| BridgeError::NotFound("Worker not found"))?;
    let worker =
        store::workers::get_worker(&state.backend.pool, &id).await?.ok_or(BridgeError::NotFound("Worker not found"))?;
    let uptime = (Utc::now() - worker.registered_at).num_seconds().max(0);
    Ok(Json(WorkerStats {
        total_builds: worker.builds_completed + worker.builds_failed,
        successful_builds: worker.builds_completed,
        failed_builds: worker.builds_failed,
        worker_name: worker.name,
        status: worker.status,
        uptime: format_uptime(uptime),
    }))
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
    use super::*;

    #[test]
    fn uptime_reads_like_the_original_controller() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(65), "1m 5s");
        assert_eq!(format_uptime(3 * 3600 + 120), "3h 2m");
        assert_eq!(format_uptime(2 * 86_400 + 5 * 3600 + 59), "2d 5h");
    }

    #[test]
    fn platforms_come_from_either_capability_spelling() {
        assert_eq!(declared_platforms(&json!({ "platforms": ["ios"] })), vec![Platform::Ios]);
        assert_eq!(declared_platforms(&json!({ "platform": "android" })), vec![Platform::Android]);
        assert_eq!(declared_platforms(&json!({ "platform": "macos" })).len(), 2, "unknown means all");
        assert_eq!(declared_platforms(&json!({})).len(), 2);
    }
}
