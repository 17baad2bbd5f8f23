//! The lease protocol (DESIGN.md §3), the heart of the dispatcher.
//!
//! Postgres decides who owns a build; JetStream delivers jobs and keeps the ack
//! deadline. Every decision here commits in Postgres first; only then is the
//! JetStream verb it implies sent, to the reply subject read inside that
//! transaction. A late or foreign worker is refused in Postgres before any verb.
//!
//! - [`offer`]: a fetched job meets a polling worker (grant, adopt a redelivery,
//!   or settle a message nobody should get).
//! - [`touch`]: activity of the owner extends its lease (rate-limited `+WPI`).
//! - [`complete`], [`fail`]: the owner ends its lease; `ack` after the commit.
//! - [`requeue`]: a lease is given back or lost; the build is queued again, or
//!   failed when it has lost [`LeaseSettings::max_attempts`] leases.
//! - [`reap_step`]: expired leases, overdue builds and quiet workers.

use std::time::Duration;

use serde_json::json;

use crate::Backend;
use crate::auth::{generate_token, hash_token};
use crate::blobs::BlobKey;
use crate::config::LeaseArgs;
use crate::model::{BuildId, BuildStatus, LogLevel, WorkerId};
use crate::store::builds::Build;
use crate::store::leases::{self, Finish, Grant};
use crate::store::workers::WorkerIdentity;
use crate::store::{self, StoreError};

/// Lease timing.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// JetStream's AckWait: the deadline of a lease without activity.
    pub ttl: Duration,
    /// Leases a build may lose before it fails.
    pub max_attempts: u32,
    /// Longest a lease may run.
    pub max_build: Duration,
    /// Lifetime of a job's one-time code.
    pub otp_ttl: Duration,
    /// Quiet time after which an idle worker is offline.
    pub worker_offline_after: Duration,
}

impl From<&LeaseArgs> for LeaseSettings {
    fn from(args: &LeaseArgs) -> Self {
        Self {
            ttl: Duration::from_secs(args.lease_ttl_secs.max(1)),
            max_attempts: args.max_attempts.max(1),
            max_build: Duration::from_secs(args.max_build_secs),
            otp_ttl: Duration::from_secs(args.otp_ttl_secs),
            worker_offline_after: Duration::from_secs(args.worker_offline_secs),
        }
    }
}

impl LeaseSettings {
    /// Our deadline, set a little shorter than JetStream's so that Postgres always
    /// knows a lease is lost before JetStream redelivers its message.
    pub fn db_ttl_secs(&self) -> f64 {
        let ttl = self.ttl.as_secs_f64();
        ttl - (ttl / 10.0).min(1.0)
    }

    /// Activity renews the deadline (and sends `+WPI`) at most this often.
    pub fn renew_after_secs(&self) -> f64 {
        self.ttl.as_secs_f64() / 4.0
    }

    /// How long after our deadline the reaper waits for JetStream's redelivery
    /// before it requeues the build itself.
    pub fn expiry_grace_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }
}

/// Errors of the lease operations (server-side failures only).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    Blob(anyhow::Error),
}

/// Why a worker's request about a build is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such build (404).
    NotFound,
    /// The caller does not hold this build's lease (403).
    NotAssignee,
    /// The build was cancelled (409).
    Cancelled,
    /// The build already finished (409).
    Finished,
    /// The caller's lease was lost and the build requeued (409).
    LeaseLost,
}

impl Refusal {
    /// The error message clients see.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotFound => "Build not found",
            Refusal::NotAssignee => "Worker not authorized for this build",
            Refusal::Cancelled => "Build was cancelled",
            Refusal::Finished => "Build already finished",
            Refusal::LeaseLost => "Lease lost: the build was requeued",
        }
    }
}

/// Checks that `worker` holds the lease of `build` (status and owner).
pub fn check_owner(build: &Build, worker: &WorkerId) -> Result<(), Refusal> {
    if build.worker_id.as_ref() != Some(worker) {
        return Err(Refusal::NotAssignee);
    }
    match build.status {
        BuildStatus::Assigned | BuildStatus::Building => Ok(()),
        BuildStatus::Cancelled => Err(Refusal::Cancelled),
        BuildStatus::Completed | BuildStatus::Failed => Err(Refusal::Finished),
        BuildStatus::Pending => Err(Refusal::LeaseLost),
    }
}

/// A job message as fetched from JetStream.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The build it names (`None` when the body is not a job).
    pub build: Option<BuildId>,
    /// Its stream sequence.
    pub seq: u64,
    /// How often it was delivered.
    pub delivered: i64,
    /// Its reply subject (the handle every verb goes to).
    pub reply: String,
}

impl Delivery {
    /// Reads a fetched JetStream message; `None` without a reply subject.
    pub fn from_message(message: &async_nats::jetstream::Message) -> Option<Self> {
        let info = message.info().ok()?;
        let build = serde_json::from_slice::<crate::queue::JobMessage>(&message.payload).ok().map(|j| j.build_id);
        Some(Self {
            build,
            seq: info.stream_sequence,
            delivered: info.delivered,
            reply: message.reply.as_ref()?.to_string(),
        })
    }
}

/// The outcome of offering a fetched job to a worker.
#[derive(Debug)]
pub enum Offer {
    /// The worker now holds the lease; `otp` is the job's one-time code.
    Granted {
        /// The build as it was before the grant.
        build: Box<Build>,
        /// The job's one-time code (only its hash is stored).
        otp: String,
    },
    /// The message was settled or adopted; fetch another.
    Passed,
}

/// A verb decided inside a transaction, sent after its commit.
enum Verb {
    Term(String),
    Ack(String),
}

async fn send(backend: &Backend, verb: Option<Verb>) {
    let result = match &verb {
        Some(Verb::Term(reply)) => backend.queue.term(reply).await,
        Some(Verb::Ack(reply)) => backend.queue.ack(reply).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "a JetStream verb could not be sent; the reaper settles the message later");
    }
}

/// Offers a fetched job to `worker` (see the module docs). A message for a missing,
/// terminal or cancelled build, or a duplicate of a live lease's message, is
/// terminated; a redelivery of a live lease's own message is adopted.
pub async fn offer(
    backend: &Backend,
    settings: &LeaseSettings,
    worker: &WorkerIdentity,
    delivery: &Delivery,
) -> Result<Offer, LeaseError> {
    let Some(id) = &delivery.build else {
        send(backend, Some(Verb::Term(delivery.reply.clone()))).await;
        return Ok(Offer::Passed);
    };
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        tx.commit().await?;
        backend.events_committed();
        send(backend, Some(Verb::Term(delivery.reply.clone()))).await;
        return Ok(Offer::Passed);
    };
    let seq = i64::try_from(delivery.seq).unwrap_or(i64::MAX);
    if build.status.is_terminal() {
        tx.commit().await?;
        backend.events_committed();
        send(backend, Some(Verb::Term(delivery.reply.clone()))).await;
        return Ok(Offer::Passed);
    }
    if build.status.is_leased() {
        if build.queue_seq != Some(seq) {
            // A duplicate publish: the verb acts on its own sequence only.
            tx.commit().await?;
            backend.events_committed();
            send(backend, Some(Verb::Term(delivery.reply.clone()))).await;
            return Ok(Offer::Passed);
        }
        let live: bool =
            sqlx::query_scalar("SELECT COALESCE(lease_expires_at > now(), false) FROM builds WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if live {
            leases::adopt_delivery(&mut *tx, id, &delivery.reply, delivery.delivered).await?;
            tx.commit().await?;
            backend.events_committed();
            return Ok(Offer::Passed);
        }
        // The owner went silent: its lease is lost.
        let old = build.worker_id.clone();
        let old_name = old.as_ref().map(ToString::to_string).unwrap_or_default();
        let message = format!("Lease of worker {old_name} expired: the worker stopped responding");
        store::logs::append(&mut *tx, id, LogLevel::Warn, &message).await?;
        store::outbox::record(
            &mut *tx,
            "build",
            id.as_str(),
            "lease_expired",
            &json!({ "build_id": id, "worker_id": old, "attempt": build.attempt }),
        )
        .await?;
        if build.attempt >= i32::try_from(settings.max_attempts).unwrap_or(i32::MAX) {
            let reason = format!("Build failed after {} attempts: the worker stopped responding", build.attempt);
            fail_locked(&mut tx, &build, &reason).await?;
            tx.commit().await?;
            backend.events_committed();
            send(backend, Some(Verb::Term(delivery.reply.clone()))).await;
            return Ok(Offer::Passed);
        }
        leases::requeue(&mut *tx, id).await?;
        if let Some(old) = &old {
            store::workers::release_if_idle(&mut *tx, old).await?;
        }
    }
    let otp = generate_token();
    leases::grant(
        &mut *tx,
        &Grant {
            build: id,
            worker: &worker.id,
            seq,
            reply: &delivery.reply,
            delivered: delivery.delivered,
            ttl_secs: settings.db_ttl_secs(),
            otp_hash: &hash_token(&otp),
            otp_ttl_secs: settings.otp_ttl.as_secs_f64(),
        },
    )
    .await?;
    store::workers::set_building(&mut *tx, &worker.id).await?;
    store::logs::append(&mut *tx, id, LogLevel::Info, &format!("Assigned to worker {}", worker.name)).await?;
    store::outbox::record(
        &mut *tx,
        "build",
        id.as_str(),
        "assigned",
        &json!({ "build_id": id, "worker_id": worker.id, "attempt": build.attempt + 1 }),
    )
    .await?;
    tx.commit().await?;
    backend.events_committed();
    Ok(Offer::Granted { build: Box::new(build), otp })
}

/// Hands a worker's live lease to it again (it restarted and polls): a fresh
/// one-time code, and the lease counts as active.
pub async fn redeliver(
    backend: &Backend,
    settings: &LeaseSettings,
    worker: &WorkerIdentity,
    id: &BuildId,
) -> Result<Option<(Build, String)>, LeaseError> {
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        return Ok(None);
    };
    if check_owner(&build, &worker.id).is_err() {
        return Ok(None);
    }
    let otp = generate_token();
    leases::renew_otp(&mut *tx, id, &hash_token(&otp), settings.otp_ttl.as_secs_f64()).await?;
    tx.commit().await?;
    backend.events_committed();
    let _ = touch(backend, settings, id, &worker.id).await?;
    Ok(Some((build, otp)))
}

/// Records activity of `worker` on `build`: refused unless it holds the lease;
/// otherwise the lease is extended (and `+WPI` sent when due).
pub async fn touch(
    backend: &Backend,
    settings: &LeaseSettings,
    id: &BuildId,
    worker: &WorkerId,
) -> Result<Result<Build, Refusal>, LeaseError> {
    let Some(build) = store::builds::get_build(&backend.pool, id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    if let Err(refusal) = check_owner(&build, worker) {
        return Ok(Err(refusal));
    }
    let mut tx = backend.pool.begin().await?;
    let touched = leases::touch(&mut *tx, id, worker, settings.db_ttl_secs(), settings.renew_after_secs()).await?;
    let Some(touched) = touched else {
        // Lost between the read and the update.
        tx.rollback().await?;
        let now = store::builds::get_build(&backend.pool, id).await?;
        return Ok(Err(now.map_or(Refusal::NotFound, |b| check_owner(&b, worker).err().unwrap_or(Refusal::LeaseLost))));
    };
    store::workers::touch_seen(&mut *tx, worker).await?;
    if touched.started {
        store::logs::append(&mut *tx, id, LogLevel::Info, "Build started").await?;
        store::outbox::record(
            &mut *tx,
            "build",
            id.as_str(),
            "started",
            &json!({ "build_id": id, "worker_id": worker }),
        )
        .await?;
    }
    tx.commit().await?;
    backend.events_committed();
    if let Some(reply) = touched.renew_reply
        && let Err(e) = backend.queue.in_progress(&reply).await
    {
        tracing::warn!(build.id = %id, error = %e, "could not extend the JetStream deadline");
    }
    Ok(Ok(build))
}

/// Outcome of a completion or failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The build reached the reported state now.
    Now,
    /// The same result had been accepted before (a retried upload): no change.
    AlreadyAccepted,
}

/// An uploaded artifact waiting under a staging key for the lease check.
#[derive(Debug, Clone)]
pub struct StagedResult {
    /// Where the upload was streamed.
    pub staging: BlobKey,
    /// Its size.
    pub bytes: u64,
}

/// Completes the owner's build. A staged artifact moves to the attempt's own key
/// while the build row is locked; any refusal deletes it, so a refused upload
/// leaves no trace. Without an artifact the build fails, unless this worker's
/// result was already accepted (then nothing changes).
pub async fn complete(
    backend: &Backend,
    id: &BuildId,
    worker: &WorkerId,
    staged: Option<StagedResult>,
) -> Result<Result<Ended, Refusal>, LeaseError> {
    let outcome = complete_locked(backend, id, worker, staged.as_ref()).await;
    let keep = matches!(outcome, Ok(Ok(Ended::Now)));
    if !keep
        && let Some(staged) = &staged
        && let Err(e) = backend.blobs.delete(&staged.staging).await
    {
        tracing::warn!(build.id = %id, error = %e, "could not delete a refused upload");
    }
    outcome
}

async fn complete_locked(
    backend: &Backend,
    id: &BuildId,
    worker: &WorkerId,
    staged: Option<&StagedResult>,
) -> Result<Result<Ended, Refusal>, LeaseError> {
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    if build.status == BuildStatus::Completed && build.worker_id.as_ref() == Some(worker) {
        return Ok(Ok(Ended::AlreadyAccepted));
    }
    if let Err(refusal) = check_owner(&build, worker) {
        return Ok(Err(refusal));
    }
    let Some(staged) = staged else {
        drop(tx);
        return match fail(backend, id, worker, "Build failed").await? {
            // A success report without an artifact is a failure (as it always was).
            Ok(_) => Ok(Ok(Ended::Now)),
            Err(refusal) => Ok(Err(refusal)),
        };
    };
    let final_key = BlobKey::Result { build: id.clone(), attempt: build.attempt };
    backend.blobs.rename(&staged.staging, &final_key).await.map_err(LeaseError::Blob)?;
    let result_key = final_key.path().to_string();
    let result_bytes = i64::try_from(staged.bytes).unwrap_or(i64::MAX);
    leases::finish(&mut *tx, id, &Finish::Completed { result_key: &result_key, result_bytes }).await?;
    store::workers::count_finished(&mut *tx, worker, true).await?;
    store::workers::release_if_idle(&mut *tx, worker).await?;
    store::logs::append(&mut *tx, id, LogLevel::Info, "Build completed successfully").await?;
    store::outbox::record(
        &mut *tx,
        "build",
        id.as_str(),
        "completed",
        &json!({ "build_id": id, "worker_id": worker, "result_bytes": result_bytes, "attempt": build.attempt }),
    )
    .await?;
    tx.commit().await?;
    backend.events_committed();
    send(backend, build.lease_reply.map(Verb::Ack)).await;
    Ok(Ok(Ended::Now))
}

/// Fails the owner's build with `message`.
pub async fn fail(
    backend: &Backend,
    id: &BuildId,
    worker: &WorkerId,
    message: &str,
) -> Result<Result<Ended, Refusal>, LeaseError> {
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    if let Err(refusal) = check_owner(&build, worker) {
        return Ok(Err(refusal));
    }
    fail_locked(&mut tx, &build, message).await?;
    tx.commit().await?;
    backend.events_committed();
    send(backend, build.lease_reply.map(Verb::Ack)).await;
    Ok(Ok(Ended::Now))
}

async fn fail_locked(tx: &mut sqlx::PgConnection, build: &Build, message: &str) -> Result<(), LeaseError> {
    leases::finish(&mut *tx, &build.id, &Finish::Failed { error_message: message }).await?;
    if let Some(worker) = &build.worker_id {
        store::workers::count_finished(&mut *tx, worker, false).await?;
        store::workers::release_if_idle(&mut *tx, worker).await?;
    }
    store::logs::append(&mut *tx, &build.id, LogLevel::Error, message).await?;
    store::outbox::record(
        &mut *tx,
        "build",
        build.id.as_str(),
        "failed",
        &json!({ "build_id": build.id, "worker_id": build.worker_id, "error_message": message, "attempt": build.attempt }),
    )
    .await?;
    Ok(())
}

/// Outcome of a requeue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// Back in the queue.
    Queued,
    /// It had lost too many leases and failed instead.
    Failed,
    /// Nothing to do (not leased, or the condition no longer held).
    Skipped,
}

/// When a requeue applies.
#[derive(Debug, Clone, Copy)]
pub enum RequeueIf<'a> {
    /// The build is leased to this worker (abandon, unregister).
    OwnedBy(&'a WorkerId),
    /// Its deadline passed more than this many seconds ago (reaper).
    ExpiredFor(f64),
}

/// Puts a leased build back in the queue (or fails it after too many lost
/// leases): commit, then terminate the old delivery and publish a new job.
pub async fn requeue(
    backend: &Backend,
    settings: &LeaseSettings,
    id: &BuildId,
    condition: RequeueIf<'_>,
    reason: &str,
) -> Result<Requeued, LeaseError> {
    let mut tx = backend.pool.begin().await?;
    let Some(build) = store::builds::lock_build(&mut *tx, id).await? else {
        return Ok(Requeued::Skipped);
    };
    if !build.status.is_leased() {
        return Ok(Requeued::Skipped);
    }
    let applies = match condition {
        RequeueIf::OwnedBy(worker) => build.worker_id.as_ref() == Some(worker),
        RequeueIf::ExpiredFor(secs) => sqlx::query_scalar(
            "SELECT COALESCE(lease_expires_at < now() - make_interval(secs => $2), false) FROM builds WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(secs)
        .fetch_one(&mut *tx)
        .await?,
    };
    if !applies {
        return Ok(Requeued::Skipped);
    }
    let old_reply = build.lease_reply.clone();
    if build.attempt >= i32::try_from(settings.max_attempts).unwrap_or(i32::MAX) {
        let message = format!("Build failed after {} attempts: {reason}", build.attempt);
        fail_locked(&mut tx, &build, &message).await?;
        tx.commit().await?;
        backend.events_committed();
        send(backend, old_reply.map(Verb::Term)).await;
        return Ok(Requeued::Failed);
    }
    leases::requeue(&mut *tx, id).await?;
    if let Some(worker) = &build.worker_id {
        store::workers::release_if_idle(&mut *tx, worker).await?;
    }
    store::logs::append(&mut *tx, id, LogLevel::Warn, &format!("{reason}; build requeued")).await?;
    store::outbox::record(
        &mut *tx,
        "build",
        id.as_str(),
        "requeued",
        &json!({ "build_id": id, "worker_id": build.worker_id, "reason": reason, "attempt": build.attempt }),
    )
    .await?;
    tx.commit().await?;
    backend.events_committed();
    send(backend, old_reply.map(Verb::Term)).await;
    crate::ops::publish(backend, id, build.platform, build.attempt).await;
    Ok(Requeued::Queued)
}

/// What one reaper step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Expired leases requeued.
    pub requeued: usize,
    /// Builds failed (too many lost leases, or over the maximum build time).
    pub failed: usize,
    /// Workers marked offline.
    pub offline: usize,
}

/// One reaper step, safe on every replica: requeues leases whose deadline passed
/// long ago without a redelivery (also dead letters past MaxDeliver), fails builds
/// over the maximum build time, and marks quiet idle workers offline.
pub async fn reap_step(backend: &Backend, settings: &LeaseSettings) -> Result<Reaped, LeaseError> {
    let mut report = Reaped::default();
    let grace = settings.expiry_grace_secs();
    for id in leases::expired(&backend.pool, grace, 100).await? {
        let reason = "Lease expired: the worker stopped responding";
        match requeue(backend, settings, &id, RequeueIf::ExpiredFor(grace), reason).await? {
            Requeued::Queued => report.requeued += 1,
            Requeued::Failed => report.failed += 1,
            Requeued::Skipped => {}
        }
    }
    let max_secs = settings.max_build.as_secs_f64();
    for id in leases::overdue(&backend.pool, max_secs, 100).await? {
        let mut tx = backend.pool.begin().await?;
        let Some(build) = store::builds::lock_build(&mut *tx, &id).await? else { continue };
        let still: bool = sqlx::query_scalar(
            "SELECT status IN ('assigned', 'building') AND assigned_at < now() - make_interval(secs => $2) FROM builds WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(max_secs)
        .fetch_one(&mut *tx)
        .await?;
        if !still {
            continue;
        }
        let message = format!("Build exceeded the maximum build time of {} s", settings.max_build.as_secs());
        fail_locked(&mut tx, &build, &message).await?;
        tx.commit().await?;
        backend.events_committed();
        send(backend, build.lease_reply.map(Verb::Term)).await;
        report.failed += 1;
    }
    let mut tx = backend.pool.begin().await?;
    let quiet = store::workers::mark_quiet_offline(&mut *tx, settings.worker_offline_after.as_secs_f64()).await?;
    for worker in &quiet {
        store::outbox::record(&mut *tx, "worker", worker, "offline", &json!({ "worker_id": worker })).await?;
    }
    tx.commit().await?;
    backend.events_committed();
    report.offline = quiet.len();
    Ok(report)
}
