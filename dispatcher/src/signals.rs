//! Job availability signals: what lets an idle poll answer from memory.
//!
//! Every replica subscribes (core NATS) to the job subjects of its namespace, so it
//! sees every publish of every replica; it also looks at the platform consumers'
//! pending counts periodically (redeliveries, jobs queued before it started). A
//! poll fetches from JetStream only when its platform may have a job; a fetch that
//! finds nothing clears the flag unless a publish was seen meanwhile. Long polls
//! wait on the same signals and are woken one per published job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::Platform;
use crate::queue::Queue;

/// How often the consumers' pending counts are read.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Fetches of one platform in flight at once on a replica: thousands of pollers
/// woken together must not all fetch (most would find nothing).
pub const FETCHES_IN_FLIGHT: usize = 8;

#[derive(Debug)]
struct Signal {
    generation: AtomicU64,
    maybe: AtomicBool,
    notify: Notify,
    gate: tokio::sync::Semaphore,
}

impl Default for Signal {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            maybe: AtomicBool::new(false),
            notify: Notify::new(),
            gate: tokio::sync::Semaphore::new(FETCHES_IN_FLIGHT),
        }
    }
}

impl Signal {
    fn raise(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.maybe.store(true, Ordering::SeqCst);
    }
}

/// Per-platform availability flags and wake-ups of one replica.
#[derive(Debug)]
pub struct JobSignals {
    signals: HashMap<Platform, Signal>,
}

impl Default for JobSignals {
    fn default() -> Self {
        let signals = Platform::ALL
            .into_iter()
            .map(|p| {
                let signal = Signal::default();
                // Unknown at start: the first poll looks.
                signal.maybe.store(true, Ordering::SeqCst);
                (p, signal)
            })
            .collect();
        Self { signals }
    }
}

impl JobSignals {
    fn signal(&self, platform: Platform) -> &Signal {
        &self.signals[&platform]
    }

    /// `Some(generation)` when a job may wait for `platform` (fetch, then pass the
    /// generation to [`JobSignals::fetched_nothing`]); `None` when surely nothing does.
    pub fn maybe_available(&self, platform: Platform) -> Option<u64> {
        let signal = self.signal(platform);
        let generation = signal.generation.load(Ordering::SeqCst);
        signal.maybe.load(Ordering::SeqCst).then_some(generation)
    }

    /// Waits for a turn to fetch for `platform` (at most [`FETCHES_IN_FLIGHT`] at
    /// once); check [`JobSignals::maybe_available`] again after it.
    pub async fn fetch_turn(&self, platform: Platform) -> tokio::sync::SemaphorePermit<'_> {
        self.signal(platform).gate.acquire().await.expect("the gate is never closed")
    }

    /// A fetch found nothing: clear the flag unless something was published since
    /// `generation` was read.
    pub fn fetched_nothing(&self, platform: Platform, generation: u64) {
        let signal = self.signal(platform);
        if signal.generation.load(Ordering::SeqCst) == generation {
            signal.maybe.store(false, Ordering::SeqCst);
        }
    }

    /// A job for `platform` was published (or may be waiting): raise the flag and
    /// wake one waiter.
    pub fn job_seen(&self, platform: Platform) {
        let signal = self.signal(platform);
        signal.raise();
        signal.notify.notify_one();
    }

    /// Waits until a job may be available for one of `platforms`, or `timeout`.
    pub async fn wait(&self, platforms: &[Platform], timeout: Duration) {
        let waits = platforms.iter().map(|p| Box::pin(self.signal(*p).notify.notified()));
        let _ = tokio::time::timeout(timeout, futures::future::select_all(waits)).await;
    }

    /// Starts the subscription and the periodic check for `consumers`; both stop
    /// with `shutdown`.
    pub async fn start(
        queue: &Queue,
        consumers: HashMap<Platform, PullConsumer>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let signals = Arc::new(Self::default());
        let subject = format!("{}.jobs.*", queue.names().namespace());
        let mut subscription = queue.client().subscribe(subject).await?;
        let prefix = format!("{}.jobs.", queue.names().namespace());
        {
            let signals = signals.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        message = subscription.next() => {
                            let Some(message) = message else { break };
                            let platform = message.subject.as_str().strip_prefix(prefix.as_str()).and_then(|p| p.parse().ok());
                            if let Some(platform) = platform {
                                signals.job_seen(platform);
                            }
                        }
                    }
                }
            });
        }
        {
            let signals = signals.clone();
            tokio::spawn(async move {
                let mut consumers = consumers;
                let mut ticker = tokio::time::interval(CHECK_INTERVAL);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    for (platform, consumer) in consumers.iter_mut() {
                        let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), consumer.info()).await else {
                            continue;
                        };
                        // Undelivered jobs, or leases whose messages may come back.
                        if info.num_pending > 0 || info.num_ack_pending > 0 {
                            signals.job_seen(*platform);
                        }
                    }
                }
            });
        }
        Ok(signals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_fetch_clears_the_flag_unless_a_job_was_seen_meanwhile() {
        let signals = JobSignals::default();
        let generation = signals.maybe_available(Platform::Ios).expect("unknown at start");
        signals.fetched_nothing(Platform::Ios, generation);
        assert_eq!(signals.maybe_available(Platform::Ios), None);

        signals.job_seen(Platform::Ios);
        let generation = signals.maybe_available(Platform::Ios).expect("raised by a publish");
        signals.job_seen(Platform::Ios);
        signals.fetched_nothing(Platform::Ios, generation);
        assert!(signals.maybe_available(Platform::Ios).is_some(), "a newer publish keeps it raised");
        assert!(signals.maybe_available(Platform::Android).is_some(), "platforms are independent");
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_job_of_its_platforms() {
        let signals = Arc::new(JobSignals::default());
        let waiter = {
            let signals = signals.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                signals.wait(&[Platform::Android], Duration::from_secs(10)).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        signals.job_seen(Platform::Android);
        assert!(waiter.await.unwrap() < Duration::from_secs(5));
    }
}
