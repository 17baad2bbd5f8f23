//! The JSON bodies of the api routes, with their wire names.
//!
//! Handlers answer with these types, and the OpenAPI document derives its schemas
//! from them, so what is documented is what is sent. The casing is mixed on
//! purpose: it is the original controller's (`createdAt` in the list, camelCase
//! statistics, snake_case elsewhere). Request types describe what the handlers
//! read from a body; the handlers themselves parse leniently so that every
//! client generation keeps working and every refusal gets the contract's message.

use dispatcher::model::{BuildId, Platform, WireStatus, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every 4xx and 5xx answer: `{"error":"<message>"}` (5xx messages are opaque).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people and logs; no client parses it.
    #[schema(example = "Build not found")]
    pub error: String,
}

/// `GET /health`: queue counts from Postgres; scripts grep `"pending":<digits>`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the answer is 200.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Builds waiting and held by workers.
    pub queue: QueueCounts,
    /// Where blobs are kept.
    pub storage: Storage,
    /// `connected` or `disconnected`: this replica's NATS connection.
    #[schema(example = "connected")]
    pub nats: &'static str,
}

/// Queue counts of the health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCounts {
    /// Pending builds.
    pub pending: i64,
    /// Assigned or building builds.
    pub active: i64,
    /// `pending + active`.
    pub total: i64,
}

/// Object store of the health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Storage {
    /// The store's URL without credentials (`file:///...` or `s3://bucket`).
    pub url: String,
}

/// One item of `GET /api/builds` (a bare array, newest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildListItem {
    /// The build.
    pub id: BuildId,
    /// Its status.
    pub status: WireStatus,
    /// Its platform.
    pub platform: Platform,
    /// Submission time, ISO 8601 with milliseconds.
    #[serde(rename = "createdAt")]
    #[schema(example = "2026-01-28T12:00:00.000Z")]
    pub created_at: String,
    /// Completion time, ISO 8601; absent (not null) until the build finished.
    #[serde(rename = "completedAt", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub completed_at: Option<String>,
}

/// `GET /api/builds/active`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveBuilds {
    /// Builds a worker holds.
    pub builds: Vec<ActiveBuild>,
}

/// One build a worker holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveBuild {
    /// The build.
    pub id: BuildId,
    /// `assigned` or `building`.
    pub status: WireStatus,
    /// Its platform.
    pub platform: Platform,
    /// The worker holding it.
    pub worker_id: Option<WorkerId>,
    /// Assignment time in milliseconds since the epoch.
    pub started_at: Option<i64>,
}

/// `GET /api/builds/{id}/status`; timestamps are milliseconds since the epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildStatusBody {
    /// The build.
    pub id: BuildId,
    /// Its status (a cancelled build shows `failed`).
    pub status: WireStatus,
    /// Its platform.
    pub platform: Platform,
    /// The worker holding it or that finished it.
    pub worker_id: Option<WorkerId>,
    /// Submission time.
    pub submitted_at: i64,
    /// Assignment time of the current or last attempt.
    pub started_at: Option<i64>,
    /// Completion time.
    pub completed_at: Option<i64>,
    /// Why it failed (`Build cancelled by user` for a cancelled build).
    pub error_message: Option<String>,
}

/// `GET /api/builds/{id}/logs`: the whole log in insertion order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildLogs {
    /// The build.
    pub build_id: BuildId,
    /// Every line; the CLI's follow mode prints those past the previous count.
    pub logs: Vec<LogEntry>,
}

/// One log line (also the `data` of a `log` Server-Sent Event).
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntry {
    /// Receipt time in milliseconds since the epoch.
    pub timestamp: i64,
    /// `debug`, `info`, `warn` or `error`.
    #[schema(example = "info")]
    pub level: String,
    /// The text.
    pub message: String,
}

/// `POST /api/builds/submit` and the new build of `POST /api/builds/{id}/retry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The new build.
    pub id: BuildId,
    /// Always `pending`.
    pub status: WireStatus,
    /// Submission time in milliseconds since the epoch.
    pub submitted_at: i64,
    /// The build token (`X-Build-Token`), shown once.
    pub access_token: String,
    /// The build this one retries (retry only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub original_build_id: Option<BuildId>,
}

/// `POST /api/builds/{id}/cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Always `cancelled`.
    #[schema(example = "cancelled")]
    pub status: &'static str,
}

/// The multipart form of `POST /api/builds/submit`. Parts other than these (the
/// CLI also sends `profile`, `appleId`, `applePassword`) are read and ignored.
#[derive(Debug, ToSchema)]
pub struct SubmitForm {
    /// The zipped project (any file name and content type).
    #[schema(value_type = String, format = Binary)]
    pub source: Vec<u8>,
    /// `ios` or `android`.
    pub platform: Platform,
    /// Optional signing bundle: a zip of a `.p12`, `password.txt` and
    /// `.mobileprovision` files.
    #[schema(value_type = Option<String>, format = Binary, nullable = false)]
    pub certs: Option<Vec<u8>>,
}

/// The body of `POST /api/diagnostics/report` (`freeagent doctor`).
#[derive(Debug, ToSchema)]
pub struct ReportRequest {
    /// A registered worker.
    pub worker_id: WorkerId,
    /// `healthy`, `warning` or `critical`.
    #[schema(pattern = "^(healthy|warning|critical)$", example = "healthy")]
    pub status: String,
    /// How long the checks took, in milliseconds (non-negative).
    #[schema(minimum = 0)]
    pub duration_ms: f64,
    /// Whether the doctor fixed something by itself.
    pub auto_fixed: Option<bool>,
    /// When the checks ran on the worker (kept as sent; the server records receipt).
    pub run_at: Option<String>,
    /// The checks, stored as sent.
    pub checks: Vec<DiagnosticCheck>,
}

/// One check of a diagnostics report, as the worker's doctor sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticCheck {
    /// Check name.
    pub name: String,
    /// Its outcome.
    pub status: String,
    /// What it found.
    pub message: String,
    /// How long it took.
    pub duration_ms: f64,
    /// Whether it fixed something.
    pub auto_fixed: bool,
    /// Anything else the check reports.
    pub details: Option<serde_json::Value>,
}

/// `POST /api/diagnostics/report`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportStored {
    /// The report.
    pub id: Uuid,
    /// Always `stored`.
    #[schema(example = "stored")]
    pub status: &'static str,
}

/// One stored diagnostics report.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticReport {
    /// The report.
    pub id: Uuid,
    /// The reporting worker.
    pub worker_id: String,
    /// `healthy`, `warning` or `critical`.
    pub status: String,
    /// Receipt time in milliseconds since the epoch.
    pub run_at: i64,
    /// How long the checks took.
    pub duration_ms: i64,
    /// Whether the doctor fixed something by itself.
    pub auto_fixed: bool,
    /// The checks, as sent.
    #[schema(value_type = Vec<Object>)]
    pub checks: serde_json::Value,
}

/// `GET /api/diagnostics/{worker_id}`: newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticHistory {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its reports.
    pub reports: Vec<DiagnosticReport>,
}

/// The body of `POST /api/webhooks`.
#[derive(Debug, ToSchema)]
pub struct WebhookRequest {
    /// An `http://` or `https://` URL (at most 2000 characters, no whitespace or
    /// control characters).
    #[schema(
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/\\s]\\S*$",
        max_length = 2000,
        example = "https://ci.example.com/hooks/freeagent"
    )]
    pub url: String,
    /// Event types (`build.completed`, ...), `build.*`, `worker.*` or `*` (default).
    #[schema(min_items = 1)]
    pub events: Option<Vec<String>>,
    /// The signing secret (at least 16 characters); generated when absent.
    #[schema(min_length = 16)]
    pub secret: Option<String>,
}

/// A webhook and its health.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    /// The webhook.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Event type patterns it receives.
    pub events: Vec<String>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Since when every attempt failed (ISO 8601).
    pub failing_since: Option<String>,
    /// When it was disabled for failing too long (ISO 8601).
    pub disabled_at: Option<String>,
    /// Why.
    pub disabled_reason: Option<String>,
    /// Registration time (ISO 8601).
    pub created_at: String,
    /// The signing secret: only in the answer to the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

/// One delivery of `GET /api/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// The delivery.
    pub id: Uuid,
    /// The event delivered.
    pub event_id: Uuid,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The next attempt (ISO 8601).
    pub next_attempt_at: String,
    /// When it succeeded (ISO 8601).
    pub delivered_at: Option<String>,
    /// Every attempt: `{attempted_at, status_code, error, duration_ms}`.
    #[schema(value_type = Vec<Object>)]
    pub history: serde_json::Value,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    /// Always `true`.
    pub success: bool,
}

/// A file answer (`application/octet-stream` or `application/zip`), streamed.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBody(pub Vec<u8>);

/// A `text/event-stream`: `id:`, `event:` and `data:` lines per event.
#[derive(Debug, ToSchema)]
#[schema(value_type = String)]
pub struct EventStreamBody(pub String);
