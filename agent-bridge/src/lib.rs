//! The worker- and VM-facing HTTP service of Free Agent Dispatcher.
//!
//! Owns `/api/workers/**` and the worker/VM routes under `/api/builds/{id}/`
//! (DESIGN.md §2), so a split deployment routes by path. Today it serves the
//! worker statistics the Swift app shows; the lease protocol builds on this crate.
//!
//! # Layout
//!
//! - [`config`]: the service's settings.
//! - `error`: the one error enum and its `{"error":"..."}` response.
//! - `extract`: credentials as extractors.
//! - `routes`: one file per group of routes.

pub mod config;
mod error;
mod extract;
mod routes;

use std::sync::Arc;

use axum::Router;
use dispatcher::Backend;
use dispatcher::auth::ApiKey;

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
}

impl BridgeState {
    /// Builds the state.
    pub fn new(backend: Backend, api_key: ApiKey, config: BridgeConfig) -> Self {
        Self { backend, api_key, config: Arc::new(config) }
    }
}

/// The router of every worker/VM route (no fallback: the binary adds one).
pub fn router(state: BridgeState) -> Router {
    routes::router(state)
}
