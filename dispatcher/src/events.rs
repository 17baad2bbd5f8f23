//! Build and worker events: CloudEvents 1.0 documents published from the outbox.
//!
//! State changes write an outbox row in their own transaction
//! ([`crate::store::outbox::record`]); [`publish_outbox_step`] drains it into the
//! events stream. One replica at a time drains (a transaction-scoped advisory lock),
//! so events leave in commit order; the event id doubles as `Nats-Msg-Id`, so a
//! replica that dies between publishing and marking causes no duplicate.

use async_nats::HeaderMap;
use serde::Serialize;
use sqlx::PgPool;

use crate::queue::Queue;
use crate::store::{StoreError, outbox};

/// Event source URI prefix.
pub const SOURCE_PREFIX: &str = "/freeagent";

/// Events published per step at most.
const BATCH: i64 = 200;

/// A CloudEvents 1.0 JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent<'a> {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// Stable event id.
    pub id: String,
    /// `/freeagent/<namespace>`.
    pub source: String,
    /// e.g. `dev.freeagent.build.submitted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// e.g. `build/<id>`.
    pub subject: String,
    /// Commit time, RFC 3339.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// The payload.
    pub data: &'a serde_json::Value,
}

/// Builds the CloudEvents document of an outbox row.
pub fn cloud_event<'a>(namespace: &str, event: &'a outbox::OutboxEvent) -> CloudEvent<'a> {
    CloudEvent {
        specversion: "1.0",
        id: event.id.to_string(),
        source: format!("{SOURCE_PREFIX}/{namespace}"),
        event_type: format!("dev.freeagent.{}.{}", event.kind, event.event_type),
        subject: format!("{}/{}", event.kind, event.entity_id),
        time: event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        datacontenttype: "application/json",
        data: &event.data,
    }
}

/// Errors of one publishing step.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// JetStream did not acknowledge.
    #[error(transparent)]
    Publish(#[from] crate::queue::PublishError),
}

/// Publishes the oldest unpublished events; returns how many were published.
/// Events published before a failure are marked, the rest wait for the next step.
pub async fn publish_outbox_step(pool: &PgPool, queue: &Queue) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    // Marking events published need not wait for the WAL flush: an event whose
    // mark is lost in a crash is published again with the same Nats-Msg-Id, which
    // JetStream drops as a duplicate.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    let lock_key = advisory_key(queue.names().namespace(), "outbox");
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(lock_key).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(0);
    }
    let events = outbox::lock_unpublished(&mut *tx, BATCH).await?;
    let mut published = Vec::with_capacity(events.len());
    let mut failure = None;
    for event in &events {
        let body = serde_json::to_vec(&cloud_event(queue.names().namespace(), event)).expect("events always serialize");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
        headers.insert("Content-Type", "application/cloudevents+json");
        let subject = queue.names().event_subject(&event.kind, &event.entity_id, &event.event_type);
        match queue.publish_with_ack(subject, headers, body.into()).await {
            Ok(_) => {
                let type_name = format!("{}.{}", event.kind, event.event_type);
                crate::store::webhooks::fan_out(&mut *tx, event.id, &type_name).await?;
                published.push(event.id);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    outbox::mark_published(&mut *tx, &published).await?;
    tx.commit().await?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(published.len()),
    }
}

/// A stable 64-bit advisory-lock key for a purpose within a namespace.
pub fn advisory_key(namespace: &str, purpose: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("freeagent:{namespace}:{purpose}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
