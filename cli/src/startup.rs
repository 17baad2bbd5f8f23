//! Building and running the controller: what `freeagent serve` does, and what
//! the tests start on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use dispatcher::Backend;
use dispatcher::auth::{ApiKey, KeySource, load_or_generate_api_key};
use dispatcher::crypto::{EncryptionKey, load_or_generate_key};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth_limit::{FailedAuthLimiter, limit_failed_auth};
use crate::cli::ServeArgs;
use crate::request_limits::json_errors;

/// A controller that is bound to its port and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    backend: Backend,
    api_key: ApiKey,
    key_source: KeySource,
    settings: ServeArgs,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects Postgres (creating and migrating the database), NATS (ensuring the
    /// streams and consumers) and the object store, loads or generates the API key,
    /// builds the routers of the configured role and binds the listening socket.
    pub async fn build(settings: ServeArgs) -> anyhow::Result<Self> {
        let (api_key, key_source) = load_or_generate_api_key(settings.api_key.as_deref(), &settings.blobs.data_dir)?;
        let (encryption, encryption_source) =
            load_or_generate_key(settings.blobs.encryption_key.as_ref(), &settings.blobs.data_dir)?;
        log_encryption_key(&encryption, &encryption_source);
        let backend = Backend::setup(
            &settings.database,
            &settings.nats,
            &settings.blobs,
            &settings.lease,
            Duration::from_secs(settings.events_max_age_secs),
            encryption,
        )
        .await?;

        let shutdown = CancellationToken::new();
        let mut router = Router::new();
        if settings.role.serves_api() {
            let config = api::ApiConfig::from(&settings.api);
            router = router.merge(api::router(api::ApiState::new(backend.clone(), api_key.clone(), config)));
        }
        if settings.role.serves_bridge() {
            let config = agent_bridge::BridgeConfig::new(&settings.bridge, &settings.lease);
            let state =
                agent_bridge::BridgeState::start(backend.clone(), api_key.clone(), config, shutdown.clone()).await?;
            router = router.merge(agent_bridge::router(state));
        }
        // Every role serves the whole document: clients see one origin.
        let router = router.route("/api/openapi.json", axum::routing::get(crate::openapi::serve));
        let limiter = Arc::new(FailedAuthLimiter::new(&settings.auth_limit));
        let router = router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(limiter, limit_failed_auth))
            // Upload routes set their own, larger limit (an inner layer wins).
            .layer(DefaultBodyLimit::max(settings.request_limits.max_json_bytes))
            .layer(axum::middleware::from_fn(json_errors))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &Request<_>| {
                        // Path only: no query string, no headers (credentials live there).
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                    })
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
            );

        let addr: SocketAddr = format!("{}:{}", settings.host, settings.port)
            .parse()
            .with_context(|| format!("HOST/PORT {}:{} is not a socket address", settings.host, settings.port))?;
        let listener = bind(addr, settings.listen_backlog).with_context(|| format!("cannot listen on {addr}"))?;
        Ok(Self { listener, router, backend, api_key, key_source, settings, shutdown })
    }

    /// The port the controller listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The API key in use.
    pub fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    /// Where the API key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Shared handles (tests inspect Postgres, NATS and blobs through them).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// A token that stops the controller gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, Ctrl-C or the shutdown token; in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let min_age = self.settings.nats.publish_timeout();
        let background = tokio::spawn(dispatcher::background::run(
            self.backend.clone(),
            self.settings.loops.clone(),
            min_age,
            shutdown.clone(),
        ));
        let reaper = tokio::spawn(dispatcher::background::run_reaper(
            self.backend.clone(),
            dispatcher::lease::LeaseSettings::from(&self.settings.lease),
            std::time::Duration::from_millis(self.settings.lease.reaper_interval_ms.max(10)),
            shutdown.clone(),
        ));
        let webhooks = tokio::spawn(dispatcher::webhooks::run(
            self.backend.clone(),
            self.settings.webhooks.clone(),
            shutdown.clone(),
        ));
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = termination_signal() => {
                        tracing::info!("shutting down: finishing in-flight requests");
                        shutdown.cancel();
                    }
                }
            }
        };
        // A make-service resolves the router once; serving a `Router` directly
        // rebuilds its route table for every connection (about 70 KiB each). The
        // peer address is what the failed-authentication limiter counts by.
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, service).with_graceful_shutdown(signal).await;
        shutdown.cancel();
        background.await.ok();
        reaper.await.ok();
        webhooks.await.ok();
        served.context("the HTTP server failed")
    }
}

/// Says where the encryption key came from (its id, never the key: replicas that
/// log different ids do not share a key).
fn log_encryption_key(key: &EncryptionKey, source: &KeySource) {
    let id = key.id();
    match source {
        KeySource::Configured => tracing::info!(key.id = %id, "using the encryption key from FREEAGENT_ENCRYPTION_KEY"),
        KeySource::File(path) => {
            tracing::info!(key.id = %id, path = %path.display(), "using the encryption key kept in the data directory");
        }
        KeySource::Generated(path) => tracing::warn!(
            key.id = %id,
            path = %path.display(),
            "generated a new encryption key and kept it in the data directory; every replica must use this same key \
             (FREEAGENT_ENCRYPTION_KEY) and losing it loses the stored certificates and webhook secrets"
        ),
    }
}

fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn termination_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

async fn not_found() -> (StatusCode, axum::Json<serde_json::Value>) {
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": "Not found" })))
}

async fn method_not_allowed() -> (StatusCode, axum::Json<serde_json::Value>) {
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(serde_json::json!({ "error": "Method not allowed" })))
}
