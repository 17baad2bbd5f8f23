//! The `builds` table.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreError;
use crate::model::{BuildId, BuildStatus, Platform, WorkerId};

/// A build as stored.
#[derive(Debug, Clone)]
pub struct Build {
    /// Its id.
    pub id: BuildId,
    /// Target platform.
    pub platform: Platform,
    /// Stored state.
    pub status: BuildStatus,
    /// SHA-256 of the submitter's build token.
    pub token_hash: String,
    /// Size of the source zip.
    pub source_bytes: i64,
    /// Size of the certificate bundle, when one was uploaded.
    pub certs_bytes: Option<i64>,
    /// The worker holding (or that last held) the lease.
    pub worker_id: Option<WorkerId>,
    /// Leases granted so far.
    pub attempt: i32,
    /// Stream sequence of the job message, once its publish was acknowledged.
    pub queue_seq: Option<i64>,
    /// Reply subject of the live lease's delivery.
    pub lease_reply: Option<String>,
    /// Our deadline of the live lease.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Object path of the accepted artifact.
    pub result_key: Option<String>,
    /// Why the build failed (or "Build cancelled by user").
    pub error_message: Option<String>,
    /// The build this one retries.
    pub retry_of: Option<BuildId>,
    /// Submission time.
    pub submitted_at: DateTime<Utc>,
    /// When the current lease was granted.
    pub assigned_at: Option<DateTime<Utc>>,
    /// First activity of the assignee.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last sign of life of the assignee.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

impl Build {
    /// Whether a certificate bundle was uploaded.
    pub fn has_certs(&self) -> bool {
        self.certs_bytes.is_some()
    }
}

#[derive(sqlx::FromRow)]
struct BuildRow {
    id: String,
    platform: String,
    status: String,
    token_hash: String,
    source_bytes: i64,
    certs_bytes: Option<i64>,
    worker_id: Option<String>,
    attempt: i32,
    queue_seq: Option<i64>,
    lease_reply: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    result_key: Option<String>,
    error_message: Option<String>,
    retry_of: Option<String>,
    submitted_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    last_heartbeat_at: Option<DateTime<Utc>>,
}

/// `SELECT <every build column> FROM builds <rest>` as a `&'static str`.
macro_rules! select_builds {
    ($rest:literal) => {
        concat!(
            "SELECT id, platform, status, token_hash, source_bytes, certs_bytes, worker_id, attempt, ",
            "queue_seq, lease_reply, lease_expires_at, result_key, error_message, retry_of, submitted_at, assigned_at, ",
            "started_at, completed_at, last_heartbeat_at FROM builds ",
            $rest
        )
    };
}

impl TryFrom<BuildRow> for Build {
    type Error = StoreError;
    fn try_from(r: BuildRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("build {}: {what}", r.id));
        Ok(Build {
            platform: r.platform.parse().map_err(|_| corrupt("platform"))?,
            status: r.status.parse().map_err(|_| corrupt("status"))?,
            worker_id: r.worker_id.map(WorkerId::try_from).transpose().map_err(|_| corrupt("worker_id"))?,
            retry_of: r.retry_of.map(BuildId::try_from).transpose().map_err(|_| corrupt("retry_of"))?,
            id: BuildId::try_from(r.id.clone()).map_err(|_| corrupt("id"))?,
            token_hash: r.token_hash,
            source_bytes: r.source_bytes,
            certs_bytes: r.certs_bytes,
            attempt: r.attempt,
            queue_seq: r.queue_seq,
            lease_reply: r.lease_reply,
            lease_expires_at: r.lease_expires_at,
            result_key: r.result_key,
            error_message: r.error_message,
            submitted_at: r.submitted_at,
            assigned_at: r.assigned_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            last_heartbeat_at: r.last_heartbeat_at,
        })
    }
}

fn convert(rows: Vec<BuildRow>) -> Result<Vec<Build>, StoreError> {
    rows.into_iter().map(Build::try_from).collect()
}

/// What a new build row needs.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    /// Its id.
    pub id: &'a BuildId,
    /// Target platform.
    pub platform: Platform,
    /// SHA-256 of its build token.
    pub token_hash: &'a str,
    /// Size of the stored source.
    pub source_bytes: i64,
    /// Size of the stored certificate bundle.
    pub certs_bytes: Option<i64>,
    /// The build it retries.
    pub retry_of: Option<&'a BuildId>,
}

/// Inserts a pending build; returns its submission time.
pub async fn insert_build(db: impl PgExecutor<'_>, new: &NewBuild<'_>) -> Result<DateTime<Utc>, StoreError> {
    let submitted_at = sqlx::query_scalar(
        "INSERT INTO builds (id, platform, token_hash, source_bytes, certs_bytes, retry_of)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING submitted_at",
    )
    .bind(new.id.as_str())
    .bind(new.platform.as_str())
    .bind(new.token_hash)
    .bind(new.source_bytes)
    .bind(new.certs_bytes)
    .bind(new.retry_of.map(BuildId::as_str))
    .fetch_one(db)
    .await?;
    Ok(submitted_at)
}

/// One build, if it exists.
pub async fn get_build(db: impl PgExecutor<'_>, id: &BuildId) -> Result<Option<Build>, StoreError> {
    let row: Option<BuildRow> =
        sqlx::query_as(select_builds!("WHERE id = $1")).bind(id.as_str()).fetch_optional(db).await?;
    row.map(Build::try_from).transpose()
}

/// One build, locked for the rest of the transaction.
pub async fn lock_build(db: impl PgExecutor<'_>, id: &BuildId) -> Result<Option<Build>, StoreError> {
    let row: Option<BuildRow> =
        sqlx::query_as(select_builds!("WHERE id = $1 FOR UPDATE")).bind(id.as_str()).fetch_optional(db).await?;
    row.map(Build::try_from).transpose()
}

/// Builds, newest first, at most `limit`.
pub async fn list_builds(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Build>, StoreError> {
    let rows = sqlx::query_as(select_builds!("ORDER BY submitted_at DESC, id DESC LIMIT $1"))
        .bind(limit)
        .fetch_all(db)
        .await?;
    convert(rows)
}

/// Builds a worker holds right now (assigned or building), oldest lease first.
pub async fn active_builds(db: impl PgExecutor<'_>) -> Result<Vec<Build>, StoreError> {
    let rows = sqlx::query_as(select_builds!("WHERE status IN ('assigned', 'building') ORDER BY assigned_at, id"))
        .fetch_all(db)
        .await?;
    convert(rows)
}

/// Records the stream sequence of a build's acknowledged job message.
pub async fn set_queue_seq(db: impl PgExecutor<'_>, id: &BuildId, seq: u64) -> Result<(), StoreError> {
    sqlx::query("UPDATE builds SET queue_seq = $2 WHERE id = $1 AND queue_seq IS NULL")
        .bind(id.as_str())
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .execute(db)
        .await?;
    Ok(())
}

/// Pending builds whose publish was never acknowledged and that are older than
/// `min_age_ms` (so a submission still waiting for its own ack is left alone),
/// locked with `SKIP LOCKED` so replicas share the work. Returns id, platform and
/// attempt (the job's message id depends on it).
pub async fn lock_unpublished(
    db: impl PgExecutor<'_>,
    min_age_ms: i64,
    limit: i64,
) -> Result<Vec<(BuildId, Platform, i32)>, StoreError> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT id, platform, attempt FROM builds
         WHERE status = 'pending' AND queue_seq IS NULL
           AND submitted_at < now() - make_interval(secs => $1::double precision / 1000)
         ORDER BY submitted_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(min_age_ms)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, platform, attempt)| {
            let corrupt = || StoreError::Corrupt(format!("build {id}"));
            Ok((
                BuildId::try_from(id.clone()).map_err(|_| corrupt())?,
                platform.parse().map_err(|_| corrupt())?,
                attempt,
            ))
        })
        .collect()
}

/// Marks a locked, non-terminal build cancelled and clears its lease.
pub async fn mark_cancelled(db: impl PgExecutor<'_>, id: &BuildId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE builds SET status = 'cancelled', error_message = $2, completed_at = now(), updated_at = now(),
                lease_reply = NULL, lease_delivery = NULL, lease_expires_at = NULL,
                otp_hash = NULL, otp_expires_at = NULL
         WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(crate::model::CANCELLED_MESSAGE)
    .execute(db)
    .await?;
    Ok(())
}

/// Counts of queued and leased builds (health endpoint).
pub async fn queue_counts(db: impl PgExecutor<'_>) -> Result<(i64, i64), StoreError> {
    let (pending, active): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'),
                count(*) FILTER (WHERE status IN ('assigned', 'building'))
         FROM builds WHERE status IN ('pending', 'assigned', 'building')",
    )
    .fetch_one(db)
    .await?;
    Ok((pending, active))
}
