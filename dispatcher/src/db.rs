//! Postgres connection, database creation and migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseArgs;

/// The schema migrations in `migrations/`, used by the binary and by the tests.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database when it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let exists =
        Postgres::database_exists(url).await.context("cannot reach Postgres (is it running? check DATABASE_URL)")?;
    if !exists {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!("created the database"),
            // Another replica may have created it at the same moment.
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    Ok(())
}

/// Opens a pool to an existing database.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&args.database_url).context("DATABASE_URL is not a valid Postgres URL")?;
    PgPoolOptions::new()
        .max_connections(args.db_pool_size.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to Postgres (check DATABASE_URL)")
}

/// Creates the database if needed, connects and applies pending migrations.
/// Migrations take an advisory lock, so concurrent replicas are safe.
pub async fn connect_and_migrate(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    create_database_if_missing(&args.database_url).await?;
    let pool = connect(args).await?;
    MIGRATOR.run(&pool).await.context("applying database migrations failed")?;
    Ok(pool)
}
