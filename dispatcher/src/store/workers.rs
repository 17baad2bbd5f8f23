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
    /// Platforms it accepts.
    pub platforms: Vec<String>,
}

/// One worker, if it exists.
pub async fn get_worker(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<Option<Worker>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, registered_at, last_seen_at, builds_completed, builds_failed, platforms
         FROM workers WHERE id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(db)
    .await?)
}

/// Every worker, most recently seen first.
pub async fn list_workers(db: impl PgExecutor<'_>) -> Result<Vec<Worker>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, name, status, registered_at, last_seen_at, builds_completed, builds_failed, platforms
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

/// What the bridge knows about an authenticated worker.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    /// Its id.
    pub id: WorkerId,
    /// Its display name.
    pub name: String,
    /// Platforms it accepts jobs for.
    pub platforms: Vec<crate::model::Platform>,
    /// Leases it may hold at once.
    pub max_concurrent: i32,
    /// `idle`, `building` or `offline`.
    pub status: String,
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: String,
    name: String,
    platforms: Vec<String>,
    max_concurrent: i32,
    status: String,
}

impl TryFrom<IdentityRow> for WorkerIdentity {
    type Error = StoreError;
    fn try_from(r: IdentityRow) -> Result<Self, StoreError> {
        Ok(WorkerIdentity {
            id: WorkerId::try_from(r.id.clone()).map_err(|_| StoreError::Corrupt(format!("worker {}", r.id)))?,
            name: r.name,
            platforms: r.platforms.iter().filter_map(|p| p.parse().ok()).collect(),
            max_concurrent: r.max_concurrent,
            status: r.status,
        })
    }
}

/// The worker whose current token, or previous token still inside its grace
/// period, hashes to `token_hash`.
pub async fn find_by_token_hash(
    db: impl PgExecutor<'_>,
    token_hash: &str,
) -> Result<Option<WorkerIdentity>, StoreError> {
    let row: Option<IdentityRow> = sqlx::query_as(
        "SELECT id, name, platforms, max_concurrent, status FROM workers
         WHERE token_hash = $1 OR (prev_token_hash = $1 AND prev_token_expires_at > now())
         LIMIT 1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    row.map(WorkerIdentity::try_from).transpose()
}

/// A worker by id (legacy `X-API-Key` + `worker_id` authentication).
pub async fn find_identity(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<Option<WorkerIdentity>, StoreError> {
    let row: Option<IdentityRow> =
        sqlx::query_as("SELECT id, name, platforms, max_concurrent, status FROM workers WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(db)
            .await?;
    row.map(WorkerIdentity::try_from).transpose()
}

/// A registration or re-registration.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// The worker's id (generated or supplied).
    pub id: &'a WorkerId,
    /// Display name.
    pub name: &'a str,
    /// Capabilities as sent.
    pub capabilities: &'a serde_json::Value,
    /// Platforms derived from the capabilities.
    pub platforms: &'a [crate::model::Platform],
    /// Leases it may hold at once.
    pub max_concurrent: i32,
    /// Hash of the newly issued token.
    pub token_hash: &'a str,
    /// How long the replaced token stays valid, in seconds.
    pub grace_secs: f64,
}

/// Creates the worker, or re-registers it: a new token, the previous one valid for
/// the grace period, an offline worker back to idle. Returns `true` when created.
pub async fn register(db: impl PgExecutor<'_>, r: &Registration<'_>) -> Result<bool, StoreError> {
    let platforms: Vec<&str> = r.platforms.iter().map(|p| p.as_str()).collect();
    let created: bool = sqlx::query_scalar(
        "INSERT INTO workers (id, name, capabilities, platforms, max_concurrent, token_hash, status, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'idle', now())
         ON CONFLICT (id) DO UPDATE SET
            name = EXCLUDED.name,
            capabilities = EXCLUDED.capabilities,
            platforms = EXCLUDED.platforms,
            max_concurrent = EXCLUDED.max_concurrent,
            prev_token_hash = workers.token_hash,
            prev_token_expires_at = now() + make_interval(secs => $7),
            token_hash = EXCLUDED.token_hash,
            status = CASE WHEN workers.status = 'offline' THEN 'idle' ELSE workers.status END,
            last_seen_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(r.id.as_str())
    .bind(r.name)
    .bind(r.capabilities)
    .bind(&platforms)
    .bind(r.max_concurrent)
    .bind(r.token_hash)
    .bind(r.grace_secs)
    .fetch_one(db)
    .await?;
    Ok(created)
}

/// Records that a worker was seen; an offline worker that shows up is idle again.
/// Skips the write when it was seen in the last few seconds.
pub async fn touch_seen(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workers SET last_seen_at = now(),
                status = CASE WHEN status = 'offline' THEN 'idle' ELSE status END
         WHERE id = $1 AND (last_seen_at < now() - interval '5 seconds' OR status = 'offline')",
    )
    .bind(id.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a worker as building (it was granted a lease).
pub async fn set_building(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query("UPDATE workers SET status = 'building', last_seen_at = now() WHERE id = $1")
        .bind(id.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Marks a worker offline (unregistered).
pub async fn set_offline(db: impl PgExecutor<'_>, id: &WorkerId) -> Result<(), StoreError> {
    sqlx::query("UPDATE workers SET status = 'offline' WHERE id = $1").bind(id.as_str()).execute(db).await?;
    Ok(())
}

/// Counts a finished build for a worker.
pub async fn count_finished(db: impl PgExecutor<'_>, id: &WorkerId, completed: bool) -> Result<(), StoreError> {
    let sql = if completed {
        "UPDATE workers SET builds_completed = builds_completed + 1 WHERE id = $1"
    } else {
        "UPDATE workers SET builds_failed = builds_failed + 1 WHERE id = $1"
    };
    sqlx::query(sql).bind(id.as_str()).execute(db).await?;
    Ok(())
}

/// Marks workers offline that were not seen for `quiet_secs` and hold no live
/// lease; returns their ids.
pub async fn mark_quiet_offline(db: impl PgExecutor<'_>, quiet_secs: f64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE workers w SET status = 'offline'
         WHERE w.status <> 'offline' AND w.last_seen_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.worker_id = w.id AND b.status IN ('assigned', 'building'))
         RETURNING w.id",
    )
    .bind(quiet_secs)
    .fetch_all(db)
    .await?)
}
