//! The `workers` table (read side used by the submitter API; registration and
//! leases live with the agent bridge).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreError;
use crate::model::WorkerId;

/// A worker as stored (without its token hashes).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Worker {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// `idle`, `building` or `offline`.
    pub status: String,
    /// When it first registered.
    pub registered_at: DateTime<Utc>,
    /// Last authenticated request.
    pub last_seen_at: DateTime<Utc>,
    /// Builds it completed.
    pub builds_completed: i64,
    /// Builds it failed.
    pub builds_failed: i64,
}

/// One worker, if it exists.
pub async fn get_worker(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<Option<Worker>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, registered_at, last_seen_at, builds_completed, builds_failed
         FROM workers WHERE id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(db)
    .await?)
}

/// Every worker, most recently seen first.
pub async fn list_workers(db: impl PgExecutor<'_>) -> Result<Vec<Worker>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, registered_at, last_seen_at, builds_completed, builds_failed
         FROM workers ORDER BY last_seen_at DESC, id",
    )
    .fetch_all(db)
    .await?)
}

/// Sets a worker back to `idle` when it holds no other live lease (after one of
/// its builds was cancelled). An offline worker stays offline.
pub async fn release_if_idle(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workers SET status = 'idle'
         WHERE id = $1 AND status = 'building'
           AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.worker_id = $1 AND b.status IN ('assigned', 'building'))",
    )
    .bind(id.as_str())
    .execute(db)
    .await?;
    Ok(())
}
