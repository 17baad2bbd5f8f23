//! Background loops every replica runs: the republisher of unacknowledged jobs,
//! the outbox publisher and the lease reaper. Each is a "do one step" function (tests call it) and
//! a loop that runs the step until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Backend;
use crate::config::LoopArgs;
use crate::events::publish_outbox_step;
use crate::lease::{LeaseSettings, Reaped, reap_step};
use crate::store::{self, StoreError};

/// Builds republished per step at most.
const REPUBLISH_BATCH: i64 = 200;

/// Publishes pending builds whose job publish was never acknowledged. Returns how
/// many were published. Stops at the first failure (NATS is likely down).
/// Duplicates are harmless: the job carries `Nats-Msg-Id = build id`.
pub async fn republish_step(backend: &Backend, min_age: Duration) -> Result<usize, StoreError> {
    let mut tx = backend.pool.begin().await?;
    let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
    let due = store::builds::lock_unpublished(&mut *tx, min_age_ms, REPUBLISH_BATCH).await?;
    let mut published = 0;
    for (id, platform, attempt) in &due {
        match backend.queue.publish_job(id, *platform, *attempt).await {
            Ok(seq) => {
                store::builds::set_queue_seq(&mut *tx, id, seq).await?;
                tracing::info!(build.id = %id, seq, "republished job");
                published += 1;
            }
            Err(e) => {
                tracing::warn!(build.id = %id, error = %e, "republish failed; will retry");
                break;
            }
        }
    }
    tx.commit().await?;
    Ok(published)
}

/// Runs the reaper every `interval` until `shutdown` fires.
pub async fn run_reaper(backend: Backend, settings: LeaseSettings, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match reap_step(&backend, &settings).await {
            Ok(report) if report != Reaped::default() => tracing::info!(?report, "reaper step"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaper step failed"),
        }
    }
}

/// Runs the republisher and the outbox publisher until `shutdown` fires.
pub async fn run(backend: Backend, loops: LoopArgs, min_age: Duration, shutdown: CancellationToken) {
    let interval = loops.republish_interval();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = republish_step(&backend, min_age).await {
                    tracing::warn!(error = %e, "republish step failed");
                }
            }
            _ = backend.outbox_nudge.notified() => {}
        }
        // Drain the outbox in batches until it is empty or publishing fails.
        loop {
            match publish_outbox_step(&backend.pool, &backend.queue).await {
                Ok(0) => break,
                Ok(_) if shutdown.is_cancelled() => return,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox publish step failed");
                    break;
                }
            }
        }
    }
}
