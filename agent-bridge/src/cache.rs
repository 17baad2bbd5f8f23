//! Short-lived, per-replica memory that lets an idle poll answer without a
//! Postgres round trip: who a token belongs to, how many leases a worker holds,
//! and when this replica last recorded the worker as seen.
//!
//! Only positive answers are kept, for a few seconds, and this replica drops a
//! worker's entries whenever it changes that worker (registration, grant,
//! completion). Another replica's change is seen within the TTL; the rules that
//! matter (who owns a build) are always decided in Postgres.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dispatcher::model::WorkerId;
use dispatcher::store::workers::WorkerIdentity;

/// How long an identity is trusted from memory.
const IDENTITY_TTL: Duration = Duration::from_secs(5);
/// How long a lease count is trusted from memory.
const LEASES_TTL: Duration = Duration::from_secs(2);
/// How often this replica writes a worker's `last_seen_at`.
const SEEN_EVERY: Duration = Duration::from_secs(10);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 50_000;

/// The cache of one bridge replica.
#[derive(Debug, Default)]
pub struct PollCache {
    by_token: Mutex<HashMap<String, (Instant, WorkerIdentity)>>,
    by_id: Mutex<HashMap<String, (Instant, WorkerIdentity)>>,
    leases: Mutex<HashMap<String, (Instant, usize)>>,
    seen: Mutex<HashMap<String, Instant>>,
}

fn get<T: Clone>(map: &Mutex<HashMap<String, (Instant, T)>>, key: &str, ttl: Duration) -> Option<T> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
}

fn put<T>(map: &Mutex<HashMap<String, (Instant, T)>>, key: String, value: T, ttl: Duration) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= SWEEP_AT {
        map.retain(|_, (at, _)| at.elapsed() < ttl);
    }
    map.insert(key, (Instant::now(), value));
}

impl PollCache {
    /// The worker a token hash belongs to, if known.
    pub fn worker_by_token(&self, token_hash: &str) -> Option<WorkerIdentity> {
        get(&self.by_token, token_hash, IDENTITY_TTL)
    }

    /// Remembers a token hash's worker.
    pub fn remember_token(&self, token_hash: String, worker: WorkerIdentity) {
        put(&self.by_token, token_hash, worker, IDENTITY_TTL);
    }

    /// A worker by id, if known.
    pub fn worker_by_id(&self, id: &WorkerId) -> Option<WorkerIdentity> {
        get(&self.by_id, id.as_str(), IDENTITY_TTL)
    }

    /// Remembers a worker by id.
    pub fn remember_worker(&self, worker: WorkerIdentity) {
        put(&self.by_id, worker.id.to_string(), worker, IDENTITY_TTL);
    }

    /// The number of live leases of a worker, if known.
    pub fn lease_count(&self, id: &WorkerId) -> Option<usize> {
        get(&self.leases, id.as_str(), LEASES_TTL)
    }

    /// Remembers a worker's live lease count.
    pub fn remember_lease_count(&self, id: &WorkerId, count: usize) {
        put(&self.leases, id.to_string(), count, LEASES_TTL);
    }

    /// Forgets everything about a worker (it changed here).
    pub fn forget(&self, id: &WorkerId) {
        self.by_token.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (_, w)| &w.id != id);
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).remove(id.as_str());
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(id.as_str());
    }

    /// Whether `last_seen_at` of a worker is due to be written by this replica
    /// (and, if so, marks it written).
    pub fn seen_due(&self, id: &WorkerId) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(id.as_str()) {
            Some(at) if at.elapsed() < SEEN_EVERY => false,
            _ => {
                if seen.len() >= SWEEP_AT {
                    seen.retain(|_, at| at.elapsed() < SEEN_EVERY);
                }
                seen.insert(id.to_string(), Instant::now());
                true
            }
        }
    }
}
