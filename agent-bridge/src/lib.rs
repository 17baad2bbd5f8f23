//! The worker- and VM-facing HTTP service of Free Agent Dispatcher.
//!
//! Owns `/api/workers/**` and the worker/VM routes under `/api/builds/{id}/`
//! (DESIGN.md §2), so a split deployment routes by path. Workers register, poll
//! for jobs (leases on JetStream messages, decided in Postgres), fetch sources and
//! certificates, stream logs and telemetry, and upload results; the lease rules
//! live in `dispatcher::lease`, this crate is their HTTP edge.
//!
//! # Layout
//!
//! - [`config`]: the service's settings.
//! - `error`: the one error enum and its `{"error":"..."}` response.
//! - `extract`: credentials (worker token, legacy key + worker id, fleet key).
//! - [`certs`]: the certificate-bundle reader behind `certs-secure`.
//! - `routes`: `workers` (register, poll, unregister, abandon, ...), `upload`,
//!   `builds` (source, certs, logs, telemetry, heartbeat), `vm`.
//! - [`wire`]: the JSON bodies the routes send and read.
//! - [`openapi`]: the OpenAPI document of these routes, generated from them.

mod cache;
pub mod certs;
pub mod config;
mod error;
mod extract;
pub mod openapi;
mod routes;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::consumer::PullConsumer;
use axum::Router;
use dispatcher::Backend;
use dispatcher::auth::ApiKey;
use dispatcher::model::Platform;
use dispatcher::signals::JobSignals;
use tokio_util::sync::CancellationToken;

pub use crate::config::BridgeConfig;
pub use crate::error::BridgeError;

/// Shared state of the bridge router: cheap handles only.
#[derive(Clone)]
pub struct BridgeState {
    /// Postgres, JetStream and the object store.
    pub backend: Backend,
    /// The fleet API key.
    pub api_key: ApiKey,
    /// Settings.
    pub config: Arc<BridgeConfig>,
    /// The platform consumers (looked up, never configured here).
    consumers: Arc<HashMap<Platform, PullConsumer>>,
    /// What this replica knows about waiting jobs.
    signals: Arc<JobSignals>,
    /// What this replica remembers about workers for a few seconds.
    cache: Arc<cache::PollCache>,
}

impl BridgeState {
    /// Looks up the consumers and starts the job signals (which stop with `shutdown`).
    pub async fn start(
        backend: Backend,
        api_key: ApiKey,
        config: BridgeConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let consumers = backend.queue.job_consumers().await?;
        let signals = JobSignals::start(&backend.queue, consumers.clone(), shutdown).await?;
        Ok(Self {
            backend,
            api_key,
            config: Arc::new(config),
            consumers: Arc::new(consumers),
            signals,
            cache: Default::default(),
        })
    }
}

/// The router of every worker/VM route (no fallback: the binary adds one).
pub fn router(state: BridgeState) -> Router {
    routes::router(state)
}
