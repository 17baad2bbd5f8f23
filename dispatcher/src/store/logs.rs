//! The `build_logs` table: append-only, read back whole in insertion order.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreError;
use crate::model::{BuildId, LogLevel};

/// One stored log line.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogLine {
    /// Insertion order (also the SSE event id later on).
    pub id: i64,
    /// When it was received.
    pub ts: DateTime<Utc>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// Appends one line to a build's log.
pub async fn append(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    level: LogLevel,
    message: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO build_logs (build_id, level, message) VALUES ($1, $2, $3)")
        .bind(build.as_str())
        .bind(level.as_str())
        .bind(message)
        .execute(db)
        .await?;
    Ok(())
}

/// A build's whole log, oldest first.
pub async fn list(db: impl PgExecutor<'_>, build: &BuildId) -> Result<Vec<LogLine>, StoreError> {
    Ok(sqlx::query_as("SELECT id, ts, level, message FROM build_logs WHERE build_id = $1 ORDER BY id")
        .bind(build.as_str())
        .fetch_all(db)
        .await?)
}

/// Appends several lines to a build's log in one statement, in order.
pub async fn append_many(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    lines: &[(LogLevel, String)],
) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let levels: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    let messages: Vec<&str> = lines.iter().map(|(_, m)| m.as_str()).collect();
    sqlx::query(
        "INSERT INTO build_logs (build_id, level, message)
         SELECT $1, level, message FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(level, message, n)
         ORDER BY n",
    )
    .bind(build.as_str())
    .bind(&levels)
    .bind(&messages)
    .execute(db)
    .await?;
    Ok(())
}

/// Stores one CPU/memory sample of a build's VM.
pub async fn add_cpu_snapshot(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    cpu_percent: f64,
    memory_mb: f64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO cpu_snapshots (build_id, cpu_percent, memory_mb) VALUES ($1, $2, $3)")
        .bind(build.as_str())
        .bind(cpu_percent)
        .bind(memory_mb)
        .execute(db)
        .await?;
    Ok(())
}

/// A build's log lines after row `after_id`, oldest first, at most `limit`.
pub async fn list_after(
    db: impl PgExecutor<'_>,
    build: &BuildId,
    after_id: i64,
    limit: i64,
) -> Result<Vec<LogLine>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, ts, level, message FROM build_logs WHERE build_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(build.as_str())
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await?)
}
