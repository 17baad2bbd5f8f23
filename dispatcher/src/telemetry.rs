//! Logging setup: one `init` for the binary.
//!
//! Field conventions: dotted names (`build.id`, `worker.id`); never a token, key,
//! OTP or certificate in a log line. `RUST_LOG` filters; `FREEAGENT_LOG_FORMAT=json`
//! switches to JSON lines for log collectors.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber. Safe to call more than once (later calls are
/// no-ops), so tests may call it too.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
