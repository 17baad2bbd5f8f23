//! The submitter-side use cases, shared by every HTTP surface and the CLI:
//! enqueue a build whose blobs are stored, cancel a build, retry a build.
//!
//! Each follows DESIGN.md §3: state and its event commit in one Postgres
//! transaction; NATS verbs are sent only after that commit, to subjects read inside
//! it; a publish that is not acknowledged leaves the build for the republisher.

use chrono::{DateTime, Utc};

use crate::Backend;
use crate::auth::{generate_token, hash_token};
use crate::blobs::BlobKey;
use crate::model::{BuildId, BuildStatus, LogLevel, Platform};
use crate::store::{self, StoreError, builds::NewBuild};

/// Errors of the use cases (all of them are server-side failures).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The object store failed.
    #[error(transparent)]
    Blob(#[from] anyhow::Error),
}

/// A build that was accepted: the submitter gets its id and token once.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The new build.
    pub id: BuildId,
    /// Its build token (only its hash is stored).
    pub token: String,
    /// Submission time.
    pub submitted_at: DateTime<Utc>,
    /// Whether JetStream acknowledged the job already (else the republisher will).
    pub published: bool,
}

/// A build whose blobs are already stored.
#[derive(Debug, Clone)]
pub struct NewSubmission<'a> {
    /// Its id (the blobs are stored under it).
    pub id: BuildId,
    /// Target platform.
    pub platform: Platform,
    /// Size of the stored source.
    pub source_bytes: u64,
    /// Size of the stored certificates, if any.
    pub certs_bytes: Option<u64>,
    /// The build it retries.
    pub retry_of: Option<&'a BuildId>,
}

/// Commits the build row, its first log line and its event, then publishes the
/// job and waits (bounded) for the acknowledgement.
pub async fn enqueue(backend: &Backend, new: NewSubmission<'_>) -> Result<Accepted, OpsError> {
    let token = generate_token();
    let token_hash = hash_token(&token);
    let mut tx = backend.pool.begin().await?;
    let submitted_at = store::builds::insert_build(
        &mut *tx,
        &NewBuild {
            id: &new.id,
            platform: new.platform,
            token_hash: &token_hash,
            source_bytes: i64::try_from(new.source_bytes).unwrap_or(i64::MAX),
            certs_bytes: new.certs_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            retry_of: new.retry_of,
        },
    )
    .await?;
    let first_line = match new.retry_of {
        Some(old) => format!("Build submitted (retry of {old})"),
        None => "Build submitted".to_owned(),
    };
    store::logs::append(&mut *tx, &new.id, LogLevel::Info, &first_line).await?;
    let data = serde_json::json!({
        "build_id": new.id,
        "platform": new.platform,
        "status": "pending",
        "source_bytes": new.source_bytes,
        "has_certs": new.certs_bytes.is_some(),
        "retry_of": new.retry_of,
    });
    store::outbox::record(&mut *tx, "build", new.id.as_str(), "submitted", &data).await?;
    if let Some(old) = new.retry_of {
        store::logs::append(&mut *tx, old, LogLevel::Info, &format!("Retried as build {}", new.id)).await?;
        let data = serde_json::json!({ "build_id": old, "retried_as": new.id });
        store::outbox::record(&mut *tx, "build", old.as_str(), "retried", &data).await?;
    }
    tx.commit().await?;
    backend.events_committed();

    let published = publish(backend, &new.id, new.platform, 0).await;
    Ok(Accepted { id: new.id, token, submitted_at, published })
}

/// Publishes a pending build's job and records its sequence. `false` when the
/// publish was not acknowledged (the republisher tries again).
pub async fn publish(backend: &Backend, id: &BuildId, platform: Platform, attempt: i32) -> bool {
    match backend.queue.publish_job(id, platform, attempt).await {
        Ok(seq) => {
            if let Err(e) = record_queue_seq(backend, id, seq).await {
                tracing::warn!(build.id = %id, error = %e, "job published but its sequence was not recorded");
            }
            true
        }
        Err(e) => {
            tracing::warn!(build.id = %id, error = %e, "job publish not acknowledged; the republisher will retry");
            false
        }
    }
}

/// Records a job's stream sequence without waiting for the WAL flush: the row
/// itself is durable already, and a sequence lost in a crash only makes the
/// republisher publish again, which JetStream deduplicates (same message id).
async fn record_queue_seq(backend: &Backend, id: &BuildId, seq: u64) -> Result<(), OpsError> {
    let mut tx = backend.pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    store::builds::set_queue_seq(&mut *tx, id, seq).await?;
    tx.commit().await?;
    Ok(())
}

/// Result of a cancellation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The build is now cancelled.
    Cancelled,
    /// No such build.
    NotFound,
    /// It had already reached a terminal state.
    AlreadyFinished,
}

/// Cancels a non-terminal build: removes its queued job or terminates its lease.
pub async fn cancel(backend: &Backend, id: &BuildId) -> Result<CancelOutcome, OpsError> {
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    if build.status.is_terminal() {
        return Ok(CancelOutcome::AlreadyFinished);
    }
    build.status.transition(BuildStatus::Cancelled).expect("every non-terminal build can be cancelled");
    store::builds::mark_cancelled(&mut *tx, id).await?;
    store::logs::append(&mut *tx, id, LogLevel::Info, "Build cancelled").await?;
    if let (Some(worker), true) = (&build.worker_id, build.status.is_leased()) {
        store::workers::release_if_idle(&mut *tx, worker).await?;
    }
    let data = serde_json::json!({ "build_id": id, "previous_status": build.status.as_str() });
    store::outbox::record(&mut *tx, "build", id.as_str(), "cancelled", &data).await?;
    tx.commit().await?;
    backend.events_committed();

    // Verbs after the commit, to what the transaction read.
    if build.status == BuildStatus::Pending {
        if let Some(seq) = build.queue_seq {
            match backend.queue.delete_job(u64::try_from(seq).unwrap_or_default()).await {
                Ok(_) => {}
                // The bridge terminates a job of a cancelled build when it meets it.
                Err(e) => tracing::warn!(build.id = %id, error = %e, "could not delete the queued job"),
            }
        }
    } else if let Some(reply) = &build.lease_reply
        && let Err(e) = backend.queue.term(reply).await
    {
        tracing::warn!(build.id = %id, error = %e, "could not terminate the leased job");
    }
    Ok(CancelOutcome::Cancelled)
}

/// Result of a retry request.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// A new build was enqueued.
    Retried(Accepted),
    /// No such build.
    NotFound,
    /// The original source is gone.
    SourceGone,
}

/// Enqueues a copy of a build (same source and certificates, new id and token).
pub async fn retry(backend: &Backend, id: &BuildId) -> Result<RetryOutcome, OpsError> {
    let Some(old) = store::builds::get_build(&backend.pool, id).await? else {
        return Ok(RetryOutcome::NotFound);
    };
    let Some(source_bytes) = backend.blobs.size(&BlobKey::Source(id.clone())).await? else {
        return Ok(RetryOutcome::SourceGone);
    };
    let new_id = BuildId::generate();
    backend.blobs.copy(&BlobKey::Source(id.clone()), &BlobKey::Source(new_id.clone())).await?;
    let mut certs_bytes = None;
    if old.has_certs()
        && let Some(size) = backend.blobs.size(&BlobKey::Certs(id.clone())).await?
    {
        if let Err(e) = backend.blobs.copy(&BlobKey::Certs(id.clone()), &BlobKey::Certs(new_id.clone())).await {
            backend.blobs.delete(&BlobKey::Source(new_id.clone())).await.ok();
            return Err(e.into());
        }
        certs_bytes = Some(size);
    }
    let submission =
        NewSubmission { id: new_id.clone(), platform: old.platform, source_bytes, certs_bytes, retry_of: Some(id) };
    match enqueue(backend, submission).await {
        Ok(accepted) => Ok(RetryOutcome::Retried(accepted)),
        Err(e) => {
            backend.blobs.delete(&BlobKey::Source(new_id.clone())).await.ok();
            backend.blobs.delete(&BlobKey::Certs(new_id)).await.ok();
            Err(e)
        }
    }
}
