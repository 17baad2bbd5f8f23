//! The transactional outbox: events written with the state change that caused them.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::StoreError;

/// An event waiting to be published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEvent {
    /// Stable id (CloudEvents `id`, `Nats-Msg-Id`).
    pub id: Uuid,
    /// `build` or `worker`.
    pub kind: String,
    /// The build or worker id.
    pub entity_id: String,
    /// What happened, e.g. `submitted`.
    pub event_type: String,
    /// Event payload.
    pub data: serde_json::Value,
    /// When the change was committed.
    pub created_at: DateTime<Utc>,
}

/// Records an event in the caller's transaction.
pub async fn record(
    db: impl PgExecutor<'_>,
    kind: &str,
    entity_id: &str,
    event_type: &str,
    data: &serde_json::Value,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO outbox (id, kind, entity_id, event_type, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(kind)
        .bind(entity_id)
        .bind(event_type)
        .bind(data)
        .execute(db)
        .await?;
    Ok(id)
}

/// The oldest unpublished events, locked so that replicas share the work.
pub async fn lock_unpublished(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, entity_id, event_type, data, created_at FROM outbox
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Marks events as published.
pub async fn mark_published(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)").bind(ids).execute(db).await?;
    Ok(())
}
