//! The submitter and admin HTTP service of Free Agent Dispatcher.
//!
//! Serves the routes the CLI, CI systems, test scripts, the landing page and
//! operators call: submit, list, status, logs, download, cancel, retry, health,
//! statistics and worker diagnostics. The worker- and VM-facing routes live in the
//! `agent-bridge` crate; both routers sit under one origin (see DESIGN.md §2).
//!
//! # Layout
//!
//! - [`config`]: the service's settings (upload limits, caches).
//! - `error`: the one error enum and its `{"error":"..."}` response.
//! - `extract`: credentials as extractors (`X-API-Key`, `X-Build-Token`).
//! - `routes`: one file per group of routes.
//! - [`wire`]: the JSON bodies the routes send and read.
//! - [`openapi`]: the OpenAPI document of these routes, generated from them.

pub mod config;
mod error;
mod extract;
pub mod openapi;
mod routes;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use dispatcher::Backend;
use dispatcher::auth::ApiKey;

pub use crate::config::ApiConfig;
pub use crate::error::ApiError;

/// Shared state of the api router: cheap handles only.
#[derive(Clone)]
pub struct ApiState {
    /// Postgres, JetStream and the object store.
    pub backend: Backend,
    /// The fleet API key.
    pub api_key: ApiKey,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Short-lived cache of the public statistics (the landing page polls them).
    stats_cache: routes::stats::StatsCache,
}

impl ApiState {
    /// Builds the state.
    pub fn new(backend: Backend, api_key: ApiKey, config: ApiConfig) -> Self {
        Self { backend, api_key, config: Arc::new(config), stats_cache: Default::default() }
    }
}

/// The router of every submitter/admin route (no fallback: the binary adds one
/// after merging the bridge's router).
pub fn router(state: ApiState) -> Router {
    routes::router(state)
}
