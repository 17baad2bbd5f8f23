//! Server-Sent Events: a build's events and its log, live, from any replica.
//!
//! `GET /api/builds/{id}/events` and `GET /api/builds/{id}/logs/stream` (same
//! credentials as `/status`) send the history first, then what happens, and close
//! after the build reached a terminal state. Each SSE `id` is a cursor: reconnect
//! with `Last-Event-ID` (or `?last_event_id=`) to resume without gaps or repeats.
//! Postgres holds the record; NATS only wakes the stream early (whichever replica
//! committed the change), with a one-second poll as the fallback.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use dispatcher::events::cloud_event;
use dispatcher::model::BuildId;
use dispatcher::store;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::extract::{BuildAccess, Query};
use crate::wire::{ErrorBody, EventStreamBody, LogEntry};
use crate::{ApiError, ApiState};

/// Rows sent per database read.
const PAGE: i64 = 500;
/// Fallback poll when no NATS wake-up arrives.
const POLL: Duration = Duration::from_secs(1);
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of the stream routes.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    last_event_id: Option<String>,
}

type EventStream =
    Sse<axum::response::sse::KeepAliveStream<std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>>>;

fn cursor_text(headers: &HeaderMap, query: &StreamQuery) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone())
        .filter(|c| !c.trim().is_empty())
}

fn into_sse(rx: mpsc::Receiver<Event>) -> EventStream {
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(stream.boxed()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The build's CloudEvents as Server-Sent Events, history first, then live.
///
/// Each event's `id` is the CloudEvent id; reconnect with `Last-Event-ID` (or
/// `?last_event_id=`) to resume without gaps or repeats.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/events",
    operation_id = "build_events_stream",
    tag = "streams",
    security(("api_key" = []), ("build_token" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("last_event_id" = Option<String>, Query, format = Uuid, description = "Resume after this event"),
        ("Last-Event-ID" = Option<String>, Header, format = Uuid, description = "Resume after this event (wins over the query)"),
    ),
    responses(
        (status = 200, description = "The stream; it ends with an `end` event once the build is terminal", body = inline(EventStreamBody), content_type = "text/event-stream"),
        (status = 400, description = "The cursor is not one of this stream", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<ApiState>,
    access: BuildAccess,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<EventStream, ApiError> {
    let build = access.load(&state).await?;
    let cursor = match cursor_text(&headers, &query) {
        None => 0,
        Some(text) => {
            let id = uuid::Uuid::parse_str(text.trim())
                .map_err(|_| ApiError::BadRequest("Last-Event-ID is not an event id of this stream".into()))?;
            store::outbox::seq_of(&state.backend.pool, id)
                .await?
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID is not an event id of this stream".into()))?
        }
    };
    let subject = format!("{}.events.build.{}.>", state.backend.queue.names().namespace(), build.id);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(state, build.id, subject, cursor, tx, Kind::Events));
    Ok(into_sse(rx))
}

/// The build's log as Server-Sent Events (`log` events), history first, then live.
///
/// Each event's `id` is the line's number in the log; reconnect with
/// `Last-Event-ID` (or `?last_event_id=`) to resume.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/logs/stream",
    operation_id = "build_logs_stream",
    tag = "streams",
    security(("api_key" = []), ("build_token" = [])),
    params(
        ("id" = String, Path, description = "Build id"),
        ("last_event_id" = Option<i64>, Query, description = "Resume after this line"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this line (wins over the query)"),
    ),
    responses(
        (status = 200, description = "The stream; it ends with an `end` event once the build is terminal", body = inline(EventStreamBody), content_type = "text/event-stream"),
        (status = 400, description = "The cursor is not one of this stream", body = ErrorBody),
        (status = 401, description = "Neither `X-API-Key` nor `X-Build-Token`", body = ErrorBody),
        (status = 403, description = "Wrong key or token", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<ApiState>,
    access: BuildAccess,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<EventStream, ApiError> {
    let build = access.load(&state).await?;
    let cursor = match cursor_text(&headers, &query) {
        None => 0,
        Some(text) => {
            text.trim().parse::<i64>().map_err(|_| ApiError::BadRequest("Last-Event-ID is not a log line id".into()))?
        }
    };
    let subject = state.backend.queue.names().log_subject(&build.id);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(pump(state, build.id, subject, cursor, tx, Kind::Logs));
    Ok(into_sse(rx))
}

#[derive(Clone, Copy)]
enum Kind {
    Events,
    Logs,
}

/// Sends rows after `cursor` until the build is terminal and everything was sent.
async fn pump(state: ApiState, id: BuildId, subject: String, mut cursor: i64, tx: mpsc::Sender<Event>, kind: Kind) {
    let mut wake = match state.backend.queue.client().subscribe(subject).await {
        Ok(subscription) => Some(subscription),
        Err(e) => {
            tracing::warn!(build.id = %id, error = %e, "live wake-ups unavailable; polling");
            None
        }
    };
    loop {
        // The status is read before the rows: a terminal state commits together
        // with its last events and log lines, so they are in this read.
        let status = match store::builds::get_build(&state.backend.pool, &id).await {
            Ok(Some(build)) => build.status,
            _ => return,
        };
        let sent = match kind {
            Kind::Events => send_events(&state, &id, &mut cursor, &tx).await,
            Kind::Logs => send_logs(&state, &id, &mut cursor, &tx).await,
        };
        let Ok(sent) = sent else { return };
        if sent == PAGE as usize {
            continue;
        }
        if status.is_terminal() {
            let end = Event::default().event("end").data(json!({ "status": status.wire() }).to_string());
            let _ = tx.send(end).await;
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(POLL) => {}
            _ = async {
                match wake.as_mut() {
                    Some(subscription) => { subscription.next().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

async fn send_events(state: &ApiState, id: &BuildId, cursor: &mut i64, tx: &mpsc::Sender<Event>) -> Result<usize, ()> {
    let rows =
        store::outbox::list_for(&state.backend.pool, "build", id.as_str(), *cursor, PAGE).await.map_err(|_| ())?;
    let namespace = state.backend.queue.names().namespace();
    for (seq, event) in &rows {
        let body = serde_json::to_string(&cloud_event(namespace, event)).map_err(|_| ())?;
        let sse = Event::default().id(event.id.to_string()).event(format!("build.{}", event.event_type)).data(body);
        tx.send(sse).await.map_err(|_| ())?;
        *cursor = *seq;
    }
    Ok(rows.len())
}

async fn send_logs(state: &ApiState, id: &BuildId, cursor: &mut i64, tx: &mpsc::Sender<Event>) -> Result<usize, ()> {
    let rows = store::logs::list_after(&state.backend.pool, id, *cursor, PAGE).await.map_err(|_| ())?;
    for line in &rows {
        let body = LogEntry {
            timestamp: line.ts.timestamp_millis(),
            level: line.level.clone(),
            message: line.message.clone(),
        };
        let body = serde_json::to_string(&body).map_err(|_| ())?;
        let sse = Event::default().id(line.id.to_string()).event("log").data(body);
        tx.send(sse).await.map_err(|_| ())?;
        *cursor = line.id;
    }
    Ok(rows.len())
}
