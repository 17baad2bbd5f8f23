//! Core of Free Agent Dispatcher, the controller of Expo Free Agent.
//!
//! Submitters upload zipped Expo projects; the controller hands each build to
//! exactly one worker (a volunteer's Mac running the build in a throw-away VM),
//! collects logs and the artifact, and serves it back. This crate holds everything
//! but HTTP: the two services (`api`, `agent-bridge`) and the `freeagent` binary
//! build on it.
//!
//! # Layout
//!
//! - [`model`]: identifiers, platforms, build states and their legal transitions (pure).
//! - [`store`]: every SQL statement, grouped by table.
//! - [`queue`]: JetStream names, topology, job publishing and lease verbs.
//! - [`signals`]: in-memory job availability (idle polls cost no round trip; long polls wake).
//! - [`blobs`]: the object store (sources, certificates, artifacts), streamed.
//! - [`events`]: CloudEvents built from the transactional outbox.
//! - [`lease`]: the lease protocol: grant, extend, complete, fail, requeue, reap.
//! - [`ops`]: submitter use cases (enqueue, cancel, retry).
//! - [`background`]: loops every replica runs (republisher, outbox publisher).
//! - [`webhooks`]: signed, retried HTTP deliveries of events to operators' endpoints.
//! - [`auth`]: API key, tokens and their hashed storage.
//! - [`crypto`]: encryption at rest (certificate bundles, webhook secrets).
//! - [`config`], [`db`], [`telemetry`]: configuration fragments, Postgres setup, logging.

pub mod auth;
pub mod background;
pub mod blobs;
pub mod config;
pub mod crypto;
pub mod db;
pub mod events;
pub mod lease;
pub mod model;
pub mod ops;
pub mod queue;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod webhooks;

use std::time::Duration;

use sqlx::PgPool;

use crate::blobs::Blobs;
use crate::config::{BlobArgs, DatabaseArgs, LeaseArgs, NatsArgs};
use crate::crypto::EncryptionKey;
use crate::queue::Queue;

/// The shared handles of a replica: Postgres, JetStream and the object store.
/// Cheap to clone; every service state holds one.
#[derive(Clone)]
pub struct Backend {
    /// Postgres pool (the source of truth).
    pub pool: PgPool,
    /// JetStream (delivery and the ack-deadline clock).
    pub queue: Queue,
    /// Object store.
    pub blobs: Blobs,
    /// The fleet's encryption key (secrets at rest: certificate bundles in the
    /// object store, webhook secrets in Postgres).
    pub encryption: EncryptionKey,
    /// Wakes this replica's outbox publisher right after a commit wrote events,
    /// so subscribers hear of a transition within milliseconds.
    pub outbox_nudge: std::sync::Arc<tokio::sync::Notify>,
}

impl Backend {
    /// Connects everything, creating the database, applying migrations and
    /// ensuring the JetStream topology (what `freeagent migrate` does, plus blobs),
    /// then encrypts any secret still stored in clear from before encryption at rest.
    pub async fn setup(
        db: &DatabaseArgs,
        nats: &NatsArgs,
        blobs: &BlobArgs,
        lease: &LeaseArgs,
        events_max_age: Duration,
        encryption: EncryptionKey,
    ) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(db).await?;
        let queue = Queue::connect(nats, Duration::from_secs(10)).await?;
        queue.ensure_topology(lease, events_max_age).await?;
        let blobs = Blobs::from_args(blobs, encryption.clone())?;
        store::webhooks::seal_plaintext_secrets(&pool, &encryption).await?;
        blobs.seal_plaintext_certs().await?;
        Ok(Self { pool, queue, blobs, encryption, outbox_nudge: Default::default() })
    }

    /// Tells the outbox publisher that a commit wrote events.
    pub fn events_committed(&self) {
        self.outbox_nudge.notify_one();
    }
}
