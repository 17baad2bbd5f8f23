//! Lease bookkeeping on the `builds` table: grant, adopt, extend, finish, requeue.
//!
//! Every function runs inside the caller's transaction, on a row the caller has
//! locked (or with a `WHERE` that re-checks ownership), so Postgres decides who owns
//! a build before any JetStream verb is sent.

use sqlx::PgExecutor;

use super::StoreError;
use crate::model::{BuildId, WorkerId};

/// What a grant writes.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// The build.
    pub build: &'a BuildId,
    /// The new owner.
    pub worker: &'a WorkerId,
    /// Stream sequence of the delivered message.
    pub seq: i64,
    /// Its reply subject.
    pub reply: &'a str,
    /// Its delivery count.
    pub delivered: i64,
    /// Our deadline from now, in seconds (a little shorter than JetStream's).
    pub ttl_secs: f64,
    /// Hash of the job's one-time code.
    pub otp_hash: &'a str,
    /// Lifetime of that code, in seconds.
    pub otp_ttl_secs: f64,
}

/// Grants a lease: the build becomes `assigned` to the worker for a new attempt.
pub async fn grant(db: impl PgExecutor<'_>, g: &Grant<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE builds SET status = 'assigned', worker_id = $2, attempt = attempt + 1, queue_seq = $3,
                lease_reply = $4, lease_delivery = $5, lease_renewed_at = now(),
                lease_expires_at = now() + make_interval(secs => $6),
                assigned_at = now(), started_at = NULL, last_heartbeat_at = NULL,
                otp_hash = $7, otp_expires_at = now() + make_interval(secs => $8),
                vm_token_hash = NULL, vm_status_token_hash = NULL, vm_token_expires_at = NULL, vm_ready_at = NULL,
                updated_at = now()
         WHERE id = $1",
    )
    .bind(g.build.as_str())
    .bind(g.worker.as_str())
    .bind(g.seq)
    .bind(g.reply)
    .bind(g.delivered)
    .bind(g.ttl_secs)
    .bind(g.otp_hash)
    .bind(g.otp_ttl_secs)
    .execute(db)
    .await?;
    Ok(())
}

/// JetStream redelivered the live lease's own message before our deadline ran
/// out: keep the owner, remember the new reply subject (later verbs go there).
pub async fn adopt_delivery(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    reply: &str,
    delivered: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE builds SET lease_reply = $2, lease_delivery = $3, lease_renewed_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(build.as_str())
    .bind(reply)
    .bind(delivered)
    .execute(db)
    .await?;
    Ok(())
}

/// A fresh one-time code for a job handed to its owner again.
pub async fn renew_otp(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    otp_hash: &str,
    ttl_secs: f64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE builds SET otp_hash = $2, otp_expires_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1",
    )
    .bind(build.as_str())
    .bind(otp_hash)
    .bind(ttl_secs)
    .execute(db)
    .await?;
    Ok(())
}

/// Result of recording activity on a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Reply subject to send `+WPI` to, when the deadline was renewed.
    pub renew_reply: Option<String>,
    /// Whether this activity moved the build from assigned to building.
    pub started: bool,
}

/// Records activity of the owner on its live lease: `last_heartbeat_at`, assigned
/// → building, and (when at least `renew_after_secs` passed since JetStream's
/// deadline was last reset) a new deadline. `None` when `worker` holds no lease
/// on the build.
pub async fn touch(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    worker: &WorkerId,
    ttl_secs: f64,
    renew_after_secs: f64,
) -> Result<Option<Touched>, StoreError> {
    let row: Option<(bool, bool, Option<String>)> = sqlx::query_as(
        "WITH old AS (
            SELECT id, status, lease_renewed_at FROM builds
            WHERE id = $1 AND worker_id = $2 AND status IN ('assigned', 'building') FOR UPDATE
         ),
         renew AS (
            SELECT id, status,
                   (lease_renewed_at IS NULL OR lease_renewed_at < now() - make_interval(secs => $4)) AS due
            FROM old
         )
         UPDATE builds b SET
            last_heartbeat_at = now(),
            status = 'building',
            started_at = COALESCE(b.started_at, now()),
            lease_renewed_at = CASE WHEN renew.due THEN now() ELSE b.lease_renewed_at END,
            lease_expires_at = CASE WHEN renew.due THEN now() + make_interval(secs => $3) ELSE b.lease_expires_at END,
            updated_at = now()
         FROM renew WHERE b.id = renew.id
         RETURNING renew.due, renew.status = 'assigned', b.lease_reply",
    )
    .bind(build.as_str())
    .bind(worker.as_str())
    .bind(ttl_secs)
    .bind(renew_after_secs)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(due, started, reply)| Touched { renew_reply: if due { reply } else { None }, started }))
}

/// Live leases of a worker, oldest first.
pub async fn live_leases_of(db: impl PgExecutor<'_>, worker: &WorkerId) -> Result<Vec<BuildId>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM builds WHERE worker_id = $1 AND status IN ('assigned', 'building') ORDER BY assigned_at, id",
    )
    .bind(worker.as_str())
    .fetch_all(db)
    .await?;
    ids.into_iter().map(|id| BuildId::try_from(id).map_err(|_| StoreError::Corrupt("build id".into()))).collect()
}

/// How a lease ends.
#[derive(Debug, Clone)]
pub enum Finish<'a> {
    /// With an artifact stored under `result_key`.
    Completed {
        /// Object path of the artifact.
        result_key: &'a str,
        /// Its size.
        result_bytes: i64,
    },
    /// Without an artifact.
    Failed {
        /// Why.
        error_message: &'a str,
    },
}

/// Moves a locked build to a terminal state and clears its lease.
pub async fn finish(db: impl PgExecutor<'_>, build: &BuildId, how: &Finish<'_>) -> Result<(), StoreError> {
    let (status, message, key, bytes) = match how {
        Finish::Completed { result_key, result_bytes } => ("completed", None, Some(*result_key), Some(*result_bytes)),
        Finish::Failed { error_message } => ("failed", Some(*error_message), None, None),
    };
    sqlx::query(
        "UPDATE builds SET status = $2, error_message = $3, result_key = COALESCE($4, result_key),
                result_bytes = COALESCE($5, result_bytes), completed_at = now(), updated_at = now(),
                lease_reply = NULL, lease_delivery = NULL, lease_expires_at = NULL, lease_renewed_at = NULL,
                otp_hash = NULL, otp_expires_at = NULL
         WHERE id = $1",
    )
    .bind(build.as_str())
    .bind(status)
    .bind(message)
    .bind(key)
    .bind(bytes)
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a locked, leased build back in the queue (not yet republished).
pub async fn requeue(db: impl PgExecutor<'_>, build: &BuildId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE builds SET status = 'pending', worker_id = NULL, queue_seq = NULL,
                lease_reply = NULL, lease_delivery = NULL, lease_expires_at = NULL, lease_renewed_at = NULL,
                assigned_at = NULL, started_at = NULL, last_heartbeat_at = NULL,
                otp_hash = NULL, otp_expires_at = NULL, vm_token_hash = NULL, vm_status_token_hash = NULL,
                vm_token_expires_at = NULL, vm_ready_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(build.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// Leased builds whose deadline passed more than `grace_secs` ago.
pub async fn expired(db: impl PgExecutor<'_>, grace_secs: f64, limit: i64) -> Result<Vec<BuildId>, StoreError> {
    ids(sqlx::query_scalar(
        "SELECT id FROM builds WHERE status IN ('assigned', 'building')
           AND lease_expires_at < now() - make_interval(secs => $1)
         ORDER BY lease_expires_at LIMIT $2",
    )
    .bind(grace_secs)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Leased builds running for longer than `max_secs` in their current lease.
pub async fn overdue(db: impl PgExecutor<'_>, max_secs: f64, limit: i64) -> Result<Vec<BuildId>, StoreError> {
    ids(sqlx::query_scalar(
        "SELECT id FROM builds WHERE status IN ('assigned', 'building')
           AND assigned_at < now() - make_interval(secs => $1)
         ORDER BY assigned_at LIMIT $2",
    )
    .bind(max_secs)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

fn ids(raw: Vec<String>) -> Result<Vec<BuildId>, StoreError> {
    raw.into_iter().map(|id| BuildId::try_from(id).map_err(|_| StoreError::Corrupt("build id".into()))).collect()
}

/// Why a one-time code was not exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpRefusal {
    /// The build holds no code (not leased).
    NoOtp,
    /// The code does not match.
    Invalid,
    /// The code expired.
    Expired,
}

/// Exchanges the one-time code of a locked, leased build for a VM token (its hash
/// stored, valid for `ttl_secs`). Returns the token's expiry.
pub async fn exchange_otp(
    db: &mut sqlx::PgConnection,
    build: &BuildId,
    otp: &str,
    vm_token_hash: &str,
    ttl_secs: f64,
) -> Result<Result<chrono::DateTime<chrono::Utc>, OtpRefusal>, StoreError> {
    let row: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT otp_hash, COALESCE(otp_expires_at > now(), false) FROM builds
         WHERE id = $1 AND status IN ('assigned', 'building')",
    )
    .bind(build.as_str())
    .fetch_optional(&mut *db)
    .await?;
    let Some((Some(otp_hash), fresh)) = row else {
        return Ok(Err(OtpRefusal::NoOtp));
    };
    if !crate::auth::token_matches(&otp_hash, otp) {
        return Ok(Err(OtpRefusal::Invalid));
    }
    if !fresh {
        return Ok(Err(OtpRefusal::Expired));
    }
    let expires: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE builds SET vm_token_hash = $2, vm_token_expires_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 RETURNING vm_token_expires_at",
    )
    .bind(build.as_str())
    .bind(vm_token_hash)
    .bind(ttl_secs)
    .fetch_one(&mut *db)
    .await?;
    Ok(Ok(expires))
}

/// The worker a VM token of `build` acts for: `Some(owner)` when the token (the
/// VM's, or the one handed to the worker by `vm-status`) matches and has not
/// expired. The owner is the attempt's worker even after the build ended, so a
/// late VM learns that it ended.
pub async fn vm_token_owner(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    token_hash: &str,
) -> Result<Option<WorkerId>, StoreError> {
    let owner: Option<Option<String>> = sqlx::query_scalar(
        "SELECT worker_id FROM builds WHERE id = $1 AND (vm_token_hash = $2 OR vm_status_token_hash = $2)
           AND vm_token_expires_at > now()",
    )
    .bind(build.as_str())
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    Ok(owner.flatten().and_then(|w| WorkerId::try_from(w).ok()))
}

/// Records that the VM of a leased build is ready; returns the time.
pub async fn mark_vm_ready(
    db: impl PgExecutor<'_>,
    build: &BuildId,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE builds SET vm_ready_at = COALESCE(vm_ready_at, now()), updated_at = now()
         WHERE id = $1 AND status IN ('assigned', 'building') RETURNING vm_ready_at",
    )
    .bind(build.as_str())
    .fetch_optional(db)
    .await?)
}

/// For `vm-status`: when the VM is ready, a fresh token for the assigned worker
/// (its hash replaces the previous one) and the ready time.
pub async fn vm_status_token(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    token_hash: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE builds SET vm_status_token_hash = $2, updated_at = now()
         WHERE id = $1 AND status IN ('assigned', 'building') AND vm_ready_at IS NOT NULL
           AND vm_token_expires_at > now()
         RETURNING vm_ready_at",
    )
    .bind(build.as_str())
    .bind(token_hash)
    .fetch_optional(db)
    .await?)
}
