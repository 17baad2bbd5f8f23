//! Network statistics for the landing page, computed in one statement.

use serde::Serialize;
use sqlx::PgExecutor;

use super::StoreError;

/// The seven numbers the landing page shows. Field names are the wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    /// Workers idle or building that were seen in the last two minutes.
    pub nodes_online: i64,
    /// Pending builds.
    pub builds_queued: i64,
    /// Assigned or building builds.
    pub active_builds: i64,
    /// Builds completed since UTC midnight.
    pub builds_today: i64,
    /// Finished builds (completed, failed or cancelled).
    pub total_builds: i64,
    /// Sum of (finished − assigned) over finished builds that had a worker.
    pub total_build_time_ms: i64,
    /// Average VM CPU use × total build seconds (CPU-seconds at 100 %).
    pub total_cpu_cycles: i64,
}

/// Computes the statistics from the tables (never invented numbers).
pub async fn network_stats(db: impl PgExecutor<'_>) -> Result<NetworkStats, StoreError> {
    Ok(sqlx::query_as(
        "WITH b AS (
            SELECT
              count(*) FILTER (WHERE status = 'pending') AS builds_queued,
              count(*) FILTER (WHERE status IN ('assigned', 'building')) AS active_builds,
              count(*) FILTER (WHERE status = 'completed'
                               AND completed_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS builds_today,
              count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS total_builds,
              COALESCE(sum(EXTRACT(EPOCH FROM (completed_at - assigned_at)) * 1000)
                FILTER (WHERE status IN ('completed', 'failed', 'cancelled') AND assigned_at IS NOT NULL
                        AND completed_at >= assigned_at), 0)::bigint AS total_build_time_ms
            FROM builds
          ),
          w AS (
            SELECT count(*) AS nodes_online FROM workers
            WHERE status IN ('idle', 'building') AND last_seen_at > now() - interval '2 minutes'
          ),
          c AS (SELECT COALESCE(avg(cpu_percent), 0) AS avg_cpu FROM cpu_snapshots)
         SELECT w.nodes_online, b.builds_queued, b.active_builds, b.builds_today, b.total_builds,
                b.total_build_time_ms,
                round(c.avg_cpu / 100.0 * b.total_build_time_ms / 1000.0)::bigint AS total_cpu_cycles
         FROM b, w, c",
    )
    .fetch_one(db)
    .await?)
}
