//! The `serve` and `migrate` commands.

use std::time::Duration;

use dispatcher::auth::KeySource;

use crate::cli::{MigrateArgs, ServeArgs};
use crate::startup::Application;

/// `freeagent serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    dispatcher::telemetry::init(args.log_format == "json");
    let app = Application::build(args.clone()).await?;
    match app.key_source() {
        KeySource::Configured => tracing::info!("using the API key from CONTROLLER_API_KEY"),
        KeySource::File(path) => tracing::info!(path = %path.display(), "using the API key kept in the data directory"),
        KeySource::Generated(path) => tracing::info!(
            path = %path.display(),
            "generated a new API key and kept it in the data directory; give it to workers and the CLI (X-API-Key)"
        ),
    }
    tracing::info!(
        role = ?args.role,
        blobs = app.backend().blobs.description(),
        namespace = %args.nats.namespace,
        "listening on http://{}:{}",
        args.host,
        app.port()
    );
    app.run_until_stopped().await
}

/// `freeagent migrate`: schema and JetStream topology, nothing else.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    dispatcher::telemetry::init(false);
    dispatcher::db::connect_and_migrate(&args.database).await?;
    tracing::info!("database schema is up to date");
    let queue = dispatcher::queue::Queue::connect(&args.nats, Duration::from_secs(10)).await?;
    queue.ensure_topology(&args.lease, Duration::from_secs(args.events_max_age_secs)).await?;
    tracing::info!(namespace = %args.nats.namespace, "JetStream streams and consumers are set up");
    Ok(())
}
