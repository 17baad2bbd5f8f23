//! What the simulated clients saw, with the instant they saw it: the ground truth
//! the invariants are checked against.
//!
//! All clients live in one process, so their `Instant`s are comparable. A grant is
//! stamped when the poll answer arrives; an activity when its request is sent. If
//! worker A's request sent after worker B received a build was accepted, while A's
//! own latest grant of that build is older than B's, the server let two workers hold
//! the build at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// One build as the clients saw it.
#[derive(Debug, Default)]
pub struct BuildSeen {
    /// Workers the build was handed to, when the answer arrived.
    pub grants: Vec<(String, Instant)>,
    /// Requests of workers on the build that were accepted (2xx), when they were sent.
    pub accepted: Vec<(String, Instant)>,
    /// Terminal reports accepted by the server: (worker, success).
    pub outcomes: Vec<(String, bool)>,
    /// SHA-256 of every source download.
    pub downloads: Vec<String>,
}

/// The shared record of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Accepted submissions: build id → SHA-256 of the uploaded source.
    submitted: HashMap<String, String>,
    builds: HashMap<String, BuildSeen>,
    finished: usize,
    server_errors: u64,
    rate_limited: u64,
}

impl Ledger {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner)
    }

    /// A submission the server accepted.
    pub fn submitted(&self, id: &str, source_sha: String) {
        self.with(|i| i.submitted.insert(id.to_owned(), source_sha));
    }

    /// A poll answer handing `id` to `worker`.
    pub fn granted(&self, id: &str, worker: &str, at: Instant) {
        self.with(|i| i.builds.entry(id.to_owned()).or_default().grants.push((worker.to_owned(), at)));
    }

    /// A request on `id` sent by `worker` at `sent` was accepted.
    pub fn accepted(&self, id: &str, worker: &str, sent: Instant) {
        self.with(|i| i.builds.entry(id.to_owned()).or_default().accepted.push((worker.to_owned(), sent)));
    }

    /// A terminal report of `worker` on `id` was accepted.
    pub fn finished(&self, id: &str, worker: &str, success: bool) {
        self.with(|i| {
            let seen = i.builds.entry(id.to_owned()).or_default();
            if !seen.outcomes.iter().any(|(w, s)| w == worker && *s == success) {
                seen.outcomes.push((worker.to_owned(), success));
                i.finished += 1;
            }
        });
    }

    /// A source download of `id` hashed to `sha`.
    pub fn downloaded(&self, id: &str, sha: String) {
        self.with(|i| i.builds.entry(id.to_owned()).or_default().downloads.push(sha));
    }

    /// A refusal seen by a client: 5xx (expected while a dependency is down) and
    /// 429 (the failed-authentication limit) are counted.
    pub fn refused(&self, status: reqwest::StatusCode) {
        self.with(|i| {
            if status.is_server_error() {
                i.server_errors += 1;
            } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                i.rate_limited += 1;
            }
        });
    }

    /// Accepted submissions so far.
    pub fn submitted_count(&self) -> usize {
        self.with(|i| i.submitted.len())
    }

    /// Distinct accepted terminal reports so far.
    pub fn finished_count(&self) -> usize {
        self.with(|i| i.finished)
    }

    /// 5xx answers seen so far.
    pub fn server_errors(&self) -> u64 {
        self.with(|i| i.server_errors)
    }

    /// 429 answers seen so far.
    pub fn rate_limited(&self) -> u64 {
        self.with(|i| i.rate_limited)
    }

    /// The accepted submissions (id → source SHA-256).
    pub fn submissions(&self) -> HashMap<String, String> {
        self.with(|i| i.submitted.clone())
    }

    /// Takes everything seen per build, for the final checks.
    pub fn take_builds(&self) -> HashMap<String, BuildSeen> {
        self.with(|i| std::mem::take(&mut i.builds))
    }
}

impl BuildSeen {
    /// Whether a worker's accepted request was sent after another worker had received
    /// the build, while its own latest grant was older than that other grant.
    pub fn double_leased(&self) -> bool {
        self.accepted.iter().any(|(worker, sent)| {
            let own_latest = self.grants.iter().filter(|(w, at)| w == worker && at <= sent).map(|(_, at)| *at).max();
            self.grants.iter().any(|(other, at)| other != worker && at < sent && own_latest.is_none_or(|own| own < *at))
        })
    }

    /// Whether more than one terminal report was accepted.
    pub fn completed_twice(&self) -> bool {
        // A retried identical report is recorded once, so any second entry is a
        // second worker, or the same worker both succeeding and failing.
        self.outcomes.len() > 1
    }
}

/// The artifact a worker uploads for a build: bytes and a length derived from both,
/// so a result stored for the wrong worker, truncated or mixed up shows.
pub fn artifact(build: &str, worker: &str) -> Vec<u8> {
    let seed = Sha256::digest(format!("{build}\n{worker}").as_bytes());
    let len = 512 + usize::from(seed[0]) * 16 + usize::from(seed[1]);
    seed.iter().copied().cycle().take(len).collect()
}

/// Hex SHA-256 of bytes.
pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_late_accepted_request_after_another_grant_is_a_double_lease() {
        let t = Instant::now();
        let mut seen = BuildSeen::default();
        seen.grants.push(("a".into(), at(t, 0)));
        seen.accepted.push(("a".into(), at(t, 10)));
        seen.grants.push(("b".into(), at(t, 100)));
        assert!(!seen.double_leased(), "a's request was sent before b's grant");
        seen.accepted.push(("a".into(), at(t, 150)));
        assert!(seen.double_leased(), "a's request after b's grant was accepted");
    }

    #[test]
    fn a_new_grant_to_the_same_worker_makes_its_later_requests_legitimate() {
        let t = Instant::now();
        let mut seen = BuildSeen::default();
        seen.grants.push(("a".into(), at(t, 0)));
        seen.grants.push(("b".into(), at(t, 100)));
        seen.grants.push(("a".into(), at(t, 200)));
        seen.accepted.push(("a".into(), at(t, 250)));
        seen.accepted.push(("b".into(), at(t, 150)));
        assert!(!seen.double_leased());
        seen.accepted.push(("b".into(), at(t, 260)));
        assert!(seen.double_leased(), "b's request after a took the build back was accepted");
    }

    #[test]
    fn two_workers_with_accepted_results_completed_twice() {
        let mut seen = BuildSeen::default();
        seen.outcomes.push(("a".into(), true));
        assert!(!seen.completed_twice());
        seen.outcomes.push(("b".into(), true));
        assert!(seen.completed_twice());
    }

    #[test]
    fn artifacts_differ_by_worker_and_build() {
        assert_ne!(artifact("b1", "w1"), artifact("b1", "w2"));
        assert_ne!(artifact("b1", "w1"), artifact("b2", "w1"));
        assert_eq!(artifact("b1", "w1"), artifact("b1", "w1"));
    }
}
