//! Webhook administration (fleet key): register, list (with health), deliveries,
//! re-enable, delete. Delivery itself is `dispatcher::webhooks`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use dispatcher::auth::generate_token;
use dispatcher::store::{self, webhooks::Webhook};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::iso;
use crate::extract::{AdminKey, Path, Query, json_body};
use crate::wire::{DeliveryBody, ErrorBody, Success, WebhookBody, WebhookRequest};
use crate::{ApiError, ApiState};

/// Event types a webhook may subscribe to (also `build.*`, `worker.*` and `*`).
pub const EVENT_TYPES: [&str; 13] = [
    "build.submitted",
    "build.assigned",
    "build.started",
    "build.lease_expired",
    "build.requeued",
    "build.completed",
    "build.failed",
    "build.cancelled",
    "build.retried",
    "worker.registered",
    "worker.re_registered",
    "worker.offline",
    "worker.unregistered",
];

fn webhook_body(w: &Webhook, secret: Option<String>) -> WebhookBody {
    WebhookBody {
        id: w.id,
        url: w.url.clone(),
        events: w.event_types.clone(),
        enabled: w.enabled,
        failing_since: w.failing_since.map(iso),
        disabled_at: w.disabled_at.map(iso),
        disabled_reason: w.disabled_reason.clone(),
        created_at: iso(w.created_at),
        secret,
    }
}

fn valid_pattern(p: &str) -> bool {
    p == "*" || p == "build.*" || p == "worker.*" || EVENT_TYPES.contains(&p)
}

/// Registers a webhook; the answer carries its signing secret (shown once).
#[utoipa::path(
    post,
    path = "/api/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    security(("api_key" = [])),
    request_body = WebhookRequest,
    responses(
        (status = 200, description = "Registered", body = WebhookBody),
        (status = 400, description = "Not JSON, or an invalid url, events or secret", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    _key: AdminKey,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<WebhookBody>, ApiError> {
    let body = json_body(body)?;
    let Some(url) = body.get("url").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest("url required".into()));
    };
    let parsed = reqwest_url(url)?;
    let events: Vec<String> = match body.get("events") {
        None => vec!["*".to_owned()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(_) => return Err(ApiError::BadRequest("events must be an array of event types".into())),
    };
    if events.is_empty() || events.iter().any(|e| !valid_pattern(e)) {
        return Err(ApiError::BadRequest(format!(
            "events must name known event types ({}), build.*, worker.* or *",
            EVENT_TYPES.join(", ")
        )));
    }
    let secret = match body.get("secret") {
        None => generate_token(),
        Some(Value::String(s)) if s.len() >= 16 => s.clone(),
        Some(_) => return Err(ApiError::BadRequest("secret must be a string of at least 16 characters".into())),
    };
    let webhook =
        store::webhooks::insert(&state.backend.pool, &state.backend.encryption, &parsed, &events, &secret).await?;
    tracing::info!(webhook.id = %webhook.id, "webhook registered");
    Ok(Json(webhook_body(&webhook, Some(secret))))
}

fn reqwest_url(raw: &str) -> Result<String, ApiError> {
    let lower = raw.to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && raw.len() <= 2000
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\u{FFFD}')
        && raw.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if ok { Ok(raw.to_owned()) } else { Err(ApiError::BadRequest("url must be an http:// or https:// URL".into())) }
}

/// Every webhook with its health.
#[utoipa::path(
    get,
    path = "/api/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The webhooks", body = Vec<WebhookBody>),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<ApiState>, _key: AdminKey) -> Result<Json<Vec<WebhookBody>>, ApiError> {
    let hooks = store::webhooks::list(&state.backend.pool).await?;
    Ok(Json(hooks.iter().map(|w| webhook_body(w, None)).collect()))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("Webhook not found"))
}

/// Deletes a webhook.
#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook id")),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    if store::webhooks::delete(&state.backend.pool, parse_id(&id)?).await? {
        Ok(Json(Success { success: true }))
    } else {
        Err(ApiError::NotFound("Webhook not found"))
    }
}

/// Enables a webhook again, after fixing an endpoint that was disabled.
#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/enable",
    operation_id = "enable_webhook",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Webhook id")),
    responses(
        (status = 200, description = "Enabled", body = Success),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    )
)]
pub async fn enable(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    if store::webhooks::enable(&state.backend.pool, parse_id(&id)?).await? {
        Ok(Json(Success { success: true }))
    } else {
        Err(ApiError::NotFound("Webhook not found"))
    }
}

/// Query of the deliveries route.
#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

/// A webhook's recent deliveries, each with every attempt.
#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    operation_id = "webhook_deliveries",
    tag = "webhooks",
    security(("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "Webhook id"),
        ("limit" = Option<i64>, Query, description = "At most this many deliveries (default 50, clamped to 1..=500)"),
    ),
    responses(
        (status = 200, description = "The deliveries, newest first", body = Vec<DeliveryBody>),
        (status = 400, description = "`limit` is not an integer", body = ErrorBody),
        (status = 401, description = "No `X-API-Key`", body = ErrorBody),
        (status = 403, description = "Wrong `X-API-Key`", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(state): State<ApiState>,
    _key: AdminKey,
    Path(id): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryBody>>, ApiError> {
    let id = parse_id(&id)?;
    if !store::webhooks::exists(&state.backend.pool, id).await? {
        return Err(ApiError::NotFound("Webhook not found"));
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = store::webhooks::deliveries(&state.backend.pool, id, limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DeliveryBody {
                id: d.id,
                event_id: d.event_id,
                status: d.status,
                attempts: d.attempts,
                next_attempt_at: iso(d.next_attempt_at),
                delivered_at: d.delivered_at.map(iso),
                history: d.history,
            })
            .collect(),
    ))
}
