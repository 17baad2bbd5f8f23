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

/// One event by id (published or not).
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<OutboxEvent>, StoreError> {
    Ok(sqlx::query_as("SELECT id, kind, entity_id, event_type, data, created_at FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Events of one build or worker after `after_seq`, in commit order, with their
/// sequence numbers.
pub async fn list_for(
    db: impl PgExecutor<'_>,
    kind: &str,
    entity_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, OutboxEvent)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        seq: i64,
        #[sqlx(flatten)]
        event: OutboxEvent,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, id, kind, entity_id, event_type, data, created_at FROM outbox
         WHERE kind = $1 AND entity_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
    )
    .bind(kind)
    .bind(entity_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq, r.event)).collect())
}

/// The sequence number of an event (resolving an SSE `Last-Event-ID`).
pub async fn seq_of(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT seq FROM outbox WHERE id = $1").bind(id).fetch_optional(db).await?)
}
