//! The `webhooks`, `webhook_deliveries` and `webhook_attempts` tables.
//!
//! Signing secrets are stored sealed (`secret_sealed`, see `crate::crypto`) and
//! bound to their webhook's id; rows from before encryption at rest keep a clear
//! `secret` until [`seal_plaintext_secrets`] runs at startup.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::StoreError;
use crate::crypto::{DecryptError, EncryptionKey};

/// What a webhook's sealed secret is bound to.
fn secret_aad(webhook: Uuid) -> Vec<u8> {
    format!("freeagent webhook secret {webhook}").into_bytes()
}

/// Opens a webhook's secret from whichever form its row holds.
fn open_secret(
    key: &EncryptionKey,
    webhook: Uuid,
    clear: Option<String>,
    sealed: Option<Vec<u8>>,
) -> Result<SecretString, DecryptError> {
    match (sealed, clear) {
        (Some(sealed), _) => {
            let bytes = key.open(&sealed, &secret_aad(webhook))?;
            String::from_utf8(bytes).map(SecretString::from).map_err(|_| DecryptError::Corrupt)
        }
        (None, Some(clear)) => Ok(SecretString::from(clear)),
        (None, None) => Err(DecryptError::Corrupt),
    }
}

/// A registered endpoint (without its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Webhook {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Event type patterns it receives.
    pub event_types: Vec<String>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Since when every attempt failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was disabled for failing too long.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why.
    pub disabled_reason: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// Registers an endpoint; its secret is stored sealed under `key`.
pub async fn insert(
    db: impl PgExecutor<'_>,
    key: &EncryptionKey,
    url: &str,
    event_types: &[String],
    secret: &str,
) -> Result<Webhook, StoreError> {
    let id = Uuid::now_v7();
    Ok(sqlx::query_as(
        "INSERT INTO webhooks (id, url, event_types, secret_sealed) VALUES ($1, $2, $3, $4)
         RETURNING id, url, event_types, enabled, failing_since, disabled_at, disabled_reason, created_at",
    )
    .bind(id)
    .bind(url)
    .bind(event_types)
    .bind(key.seal(secret.as_bytes(), &secret_aad(id)))
    .fetch_one(db)
    .await?)
}

/// Seals every secret still stored in clear (rows from before encryption at
/// rest); returns how many. Safe on every replica at once.
pub async fn seal_plaintext_secrets(db: &sqlx::PgPool, key: &EncryptionKey) -> Result<u64, StoreError> {
    let clear: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, secret FROM webhooks WHERE secret_sealed IS NULL AND secret IS NOT NULL")
            .fetch_all(db)
            .await?;
    let mut sealed = 0;
    for (id, secret) in clear {
        let done = sqlx::query(
            "UPDATE webhooks SET secret_sealed = $2, secret = NULL WHERE id = $1 AND secret_sealed IS NULL",
        )
        .bind(id)
        .bind(key.seal(secret.as_bytes(), &secret_aad(id)))
        .execute(db)
        .await?;
        sealed += done.rows_affected();
    }
    if sealed > 0 {
        tracing::info!(count = sealed, "encrypted webhook secrets stored before encryption at rest");
    }
    Ok(sealed)
}

/// Every endpoint, oldest first.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Webhook>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, url, event_types, enabled, failing_since, disabled_at, disabled_reason, created_at
         FROM webhooks ORDER BY created_at, id",
    )
    .fetch_all(db)
    .await?)
}

/// Removes an endpoint (and its deliveries); `false` when unknown.
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(db).await?.rows_affected() == 1)
}

/// Enables an endpoint again and forgets its failures; `false` when unknown.
pub async fn enable(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE webhooks SET enabled = true, failing_since = NULL, disabled_at = NULL, disabled_reason = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a webhook exists.
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1)").bind(id).fetch_one(db).await?)
}

/// Creates a delivery of `event` for every enabled endpoint whose patterns match
/// `type_name` (for example `build.completed`).
pub async fn fan_out(db: impl PgExecutor<'_>, event: Uuid, type_name: &str) -> Result<u64, StoreError> {
    let kind = type_name.split('.').next().unwrap_or_default();
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id)
         SELECT gen_random_uuid(), w.id, $1 FROM webhooks w
         WHERE w.enabled AND ('*' = ANY(w.event_types) OR $2 = ANY(w.event_types) OR ($3 || '.*') = ANY(w.event_types))
         ON CONFLICT DO NOTHING",
    )
    .bind(event)
    .bind(type_name)
    .bind(kind)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery due now, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub id: Uuid,
    /// Attempts so far.
    pub attempts: i32,
    /// The endpoint.
    pub webhook_id: Uuid,
    /// Its URL.
    pub url: String,
    /// Its signing key, or why it cannot be decrypted (the attempt then fails
    /// with that reason, visible in the delivery history).
    pub secret: Result<SecretString, DecryptError>,
    /// The event (an outbox row id).
    pub event_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    attempts: i32,
    webhook_id: Uuid,
    url: String,
    secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    event_id: Uuid,
}

/// Due deliveries of enabled endpoints, locked (`SKIP LOCKED`: replicas share),
/// with their secrets opened under `key`.
pub async fn lock_due(
    db: impl PgExecutor<'_>,
    key: &EncryptionKey,
    limit: i64,
) -> Result<Vec<DueDelivery>, StoreError> {
    let rows: Vec<DueRow> = sqlx::query_as(
        "SELECT d.id, d.attempts, w.id AS webhook_id, w.url, w.secret, w.secret_sealed, d.event_id
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.enabled
         ORDER BY d.next_attempt_at
         LIMIT $1
         FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| DueDelivery {
            secret: open_secret(key, row.webhook_id, row.secret, row.secret_sealed),
            id: row.id,
            attempts: row.attempts,
            webhook_id: row.webhook_id,
            url: row.url,
            event_id: row.event_id,
        })
        .collect())
}

/// Records one attempt.
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    delivery: Uuid,
    status_code: Option<i32>,
    error: Option<&str>,
    duration_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms) VALUES ($1, $2, $3, $4)")
        .bind(delivery)
        .bind(status_code)
        .bind(error)
        .bind(duration_ms)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks a delivery delivered and its endpoint healthy.
pub async fn mark_delivered(db: &mut sqlx::PgConnection, delivery: Uuid, webhook: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = now() WHERE id = $1",
    )
    .bind(delivery)
    .execute(&mut *db)
    .await?;
    sqlx::query("UPDATE webhooks SET failing_since = NULL WHERE id = $1").bind(webhook).execute(&mut *db).await?;
    Ok(())
}

/// Schedules the next attempt of a failed delivery (or gives up after
/// `max_attempts`), and disables its endpoint once it has failed for longer than
/// `disable_after_secs`. Returns whether the endpoint was disabled now.
pub async fn mark_failed(
    db: &mut sqlx::PgConnection,
    delivery: Uuid,
    webhook: Uuid,
    retry_in_ms: i64,
    max_attempts: i32,
    disable_after_secs: f64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1,
                status = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END,
                next_attempt_at = now() + make_interval(secs => $2::double precision / 1000)
         WHERE id = $1",
    )
    .bind(delivery)
    .bind(retry_in_ms)
    .bind(max_attempts)
    .execute(&mut *db)
    .await?;
    let disabled: Option<bool> = sqlx::query_scalar(
        "UPDATE webhooks SET failing_since = COALESCE(failing_since, now()),
                enabled = NOT (COALESCE(failing_since, now()) < now() - make_interval(secs => $2)),
                disabled_at = CASE WHEN COALESCE(failing_since, now()) < now() - make_interval(secs => $2)
                                   THEN now() ELSE disabled_at END,
                disabled_reason = CASE WHEN COALESCE(failing_since, now()) < now() - make_interval(secs => $2)
                                   THEN 'every delivery failed for longer than the limit' ELSE disabled_reason END
         WHERE id = $1 AND enabled
         RETURNING NOT enabled",
    )
    .bind(webhook)
    .bind(disable_after_secs)
    .fetch_optional(&mut *db)
    .await?;
    Ok(disabled.unwrap_or(false))
}

/// One delivery with its attempts, for operators.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryView {
    /// The delivery.
    pub id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The next attempt (when pending).
    pub next_attempt_at: DateTime<Utc>,
    /// When it succeeded.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt as JSON `[{attempted_at, status_code, error, duration_ms}]`.
    pub history: serde_json::Value,
}

/// Recent deliveries of an endpoint, newest first.
pub async fn deliveries(db: impl PgExecutor<'_>, webhook: Uuid, limit: i64) -> Result<Vec<DeliveryView>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.event_id, d.status, d.attempts, d.next_attempt_at, d.delivered_at,
                COALESCE((SELECT json_agg(json_build_object('attempted_at', a.attempted_at, 'status_code', a.status_code,
                                                            'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.id)
                          FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::json)::jsonb AS history
         FROM webhook_deliveries d WHERE d.webhook_id = $1
         ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
    )
    .bind(webhook)
    .bind(limit)
    .fetch_all(db)
    .await?)
}
