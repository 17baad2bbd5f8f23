//! The `diagnostic_reports` table (`freeagent doctor` reports of workers).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::StoreError;
use crate::model::WorkerId;

/// One stored report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Report {
    /// Its id.
    pub id: Uuid,
    /// The reporting worker.
    pub worker_id: String,
    /// `healthy`, `warning` or `critical`.
    pub status: String,
    /// Server time of receipt.
    pub run_at: DateTime<Utc>,
    /// How long the checks took on the worker.
    pub duration_ms: i64,
    /// Whether the doctor fixed something by itself.
    pub auto_fixed: bool,
    /// The checks, as sent.
    pub checks: serde_json::Value,
}

/// A report to store.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    /// The reporting worker.
    pub worker_id: &'a WorkerId,
    /// `healthy`, `warning` or `critical`.
    pub status: &'a str,
    /// How long the checks took.
    pub duration_ms: i64,
    /// Whether something was fixed.
    pub auto_fixed: bool,
    /// The checks array.
    pub checks: &'a serde_json::Value,
}

/// Stores a report; returns its id.
pub async fn insert(db: impl PgExecutor<'_>, report: &NewReport<'_>) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO diagnostic_reports (id, worker_id, status, duration_ms, auto_fixed, checks)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(report.worker_id.as_str())
    .bind(report.status)
    .bind(report.duration_ms)
    .bind(report.auto_fixed)
    .bind(report.checks)
    .execute(db)
    .await?;
    Ok(id)
}

/// A worker's reports, newest first, at most `limit`.
pub async fn list(db: impl PgExecutor<'_>, worker: &WorkerId, limit: i64) -> Result<Vec<Report>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, worker_id, status, run_at, duration_ms, auto_fixed, checks FROM diagnostic_reports
         WHERE worker_id = $1 ORDER BY run_at DESC, id DESC LIMIT $2",
    )
    .bind(worker.as_str())
    .bind(limit)
    .fetch_all(db)
    .await?)
}
