//! The JSON bodies of the worker and VM routes, with their wire names.
//!
//! Handlers answer with these types, and the OpenAPI document derives its schemas
//! from them, so what is documented is what is sent. The casing is mixed on
//! purpose (`baseImageId`, the camelCase worker statistics and certificate
//! material, snake_case elsewhere): every Swift worker generation decodes exactly
//! these names. Request types describe what the handlers read from a body; the
//! handlers parse leniently (unknown keys are ignored) so that every client
//! generation keeps working and every refusal gets the contract's message.

use dispatcher::model::{BuildId, Platform, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;

/// Every 4xx and 5xx answer: `{"error":"<message>"}` (5xx messages are opaque).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people and logs; no client parses it.
    #[schema(example = "Build not found")]
    pub error: String,
}

/// The body of `POST /api/workers/register`. Unknown keys (the installer's
/// `publicIdentifier`, `apiKey`, ...) are ignored.
#[derive(Debug, ToSchema)]
pub struct RegisterRequest {
    /// Display name (not blank; cut to 200 characters).
    #[schema(pattern = "\\S")]
    pub name: String,
    /// What the machine offers; stored as sent.
    pub capabilities: Capabilities,
    /// The id to re-register under, as `[A-Za-z0-9_-]{1,64}`; another value (or the
    /// installer's `pending-registration`) gets a fresh id.
    pub id: Option<String>,
    /// Builds the worker is running; `0` on a known worker gives its leases back.
    pub active_build_count: Option<i64>,
}

/// A worker's capabilities; keys besides these are stored and otherwise ignored.
#[derive(Debug, ToSchema)]
pub struct Capabilities {
    /// Platforms it builds (none known means all).
    pub platforms: Option<Vec<Platform>>,
    /// The installer's single platform.
    pub platform: Option<String>,
    /// Builds it runs at once (clamped to 1..=64; default 1).
    #[serde(rename = "maxConcurrentBuilds")]
    pub max_concurrent_builds: Option<i64>,
}

/// `POST /api/workers/register`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The worker's id (the one sent, or a new one).
    pub id: WorkerId,
    /// `registered` or `re-registered`.
    #[schema(example = "registered")]
    pub status: &'static str,
    /// The VM template to build in.
    #[serde(rename = "baseImageId")]
    pub base_image_id: String,
    /// The worker token (`X-Worker-Token`); replaces the previous one after a
    /// grace period.
    pub access_token: String,
    /// For people.
    pub message: &'static str,
}

/// `GET /api/workers/poll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PollAnswer {
    /// The job, or null when nothing waits.
    pub job: Option<Job>,
    /// The worker's current token (token-authenticated polls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub access_token: Option<String>,
}

/// A build handed to a worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    /// The build.
    pub id: BuildId,
    /// Its platform.
    pub platform: Platform,
    /// Where to download the source (relative to the controller).
    pub source_url: String,
    /// Where to download the certificates, or null when there are none.
    pub certs_url: Option<String>,
    /// The VM template to build in.
    #[serde(rename = "baseImageId")]
    pub base_image_id: String,
    /// The attempt's one-time code; the VM exchanges it for a VM token.
    pub otp: String,
    /// Submission time in milliseconds since the epoch.
    pub submitted_at: i64,
}

/// The multipart form of `POST /api/workers/upload`.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The build.
    pub build_id: String,
    /// The reporting worker (required with `X-API-Key`; with a token it must be
    /// the token's worker if sent).
    #[schema(nullable = false)]
    pub worker_id: Option<String>,
    /// `true` with a `result` file completes the build; anything else fails it.
    #[schema(nullable = false, example = "true")]
    pub success: Option<String>,
    /// Why the build failed.
    #[schema(nullable = false)]
    pub error_message: Option<String>,
    /// The artifact (`.ipa` or `.apk`).
    #[schema(value_type = Option<String>, format = Binary, nullable = false)]
    pub result: Option<Vec<u8>>,
}

/// `POST /api/workers/upload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAnswer {
    /// `success` (completed) or `failed`.
    #[schema(example = "success")]
    pub status: &'static str,
    /// Always `true`: the report was accepted.
    pub success: bool,
}

/// The body of `POST /api/workers/heartbeat` and `POST /api/workers/fail`.
#[derive(Debug, ToSchema)]
pub struct BuildReport {
    /// The build.
    pub build_id: String,
    /// The reporting worker (with `X-API-Key`; or `X-Worker-Id`).
    pub worker_id: Option<String>,
    /// Why it failed (`fail` only; default `Build failed`).
    pub error: Option<String>,
}

/// The body of `POST /api/workers/abandon`.
#[derive(Debug, ToSchema)]
pub struct AbandonRequest {
    /// The caller's build.
    pub build_id: String,
    /// Why (cut to 500 characters).
    pub reason: String,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    /// Always `true`.
    pub success: bool,
}

/// `{"success": true, "message": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessMessage {
    /// Always `true`.
    pub success: bool,
    /// What happened.
    pub message: &'static str,
}

/// Unregistering a worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unregistered {
    /// Always `true`.
    pub success: bool,
    /// `Worker unregistered`.
    pub message: &'static str,
    /// Builds given back to the queue.
    pub builds_reassigned: usize,
}

/// One item of `GET /api/workers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerSummary {
    /// The worker.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// `idle`, `building` or `offline`.
    pub status: String,
    /// Platforms it accepts.
    pub platforms: Vec<String>,
    /// First registration (ISO 8601).
    pub registered_at: String,
    /// Last authenticated request (ISO 8601).
    pub last_seen_at: String,
    /// Builds it completed.
    pub builds_completed: i64,
    /// Builds it failed.
    pub builds_failed: i64,
}

/// `GET /api/workers/{id}/stats` (camelCase, as the Swift app decodes it).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// Completed plus failed.
    pub total_builds: i64,
    /// Completed builds.
    pub successful_builds: i64,
    /// Failed builds.
    pub failed_builds: i64,
    /// Display name.
    pub worker_name: String,
    /// `idle`, `building` or `offline`.
    pub status: String,
    /// Since registration: `Nd Nh`, `Nh Nm`, `Nm Ns` or `Ns`.
    #[schema(example = "3h 2m")]
    pub uptime: String,
}

/// The body of `POST /api/builds/{id}/logs`: one line or a batch.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum LogsRequest {
    /// One line (V0 scripts, the failure line of V2).
    One(LogLineRequest),
    /// Up to 1000 lines (V2 batches of 50); lines with another level are skipped.
    Batch(LogBatch),
}

/// One log line sent by a worker or its VM.
#[derive(Debug, ToSchema)]
pub struct LogLineRequest {
    /// `info`, `warn` or `error`.
    #[schema(pattern = "^(info|warn|error)$", example = "info")]
    pub level: String,
    /// The text (cut to 16 KiB).
    pub message: String,
}

/// A batch of log lines.
#[derive(Debug, ToSchema)]
pub struct LogBatch {
    /// The lines.
    #[schema(max_items = 1000)]
    pub logs: Vec<LogLineRequest>,
}

/// `POST /api/builds/{id}/logs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsAccepted {
    /// Always `true`.
    pub success: bool,
    /// Entries received (batches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub count: Option<usize>,
}

/// The body of `POST /api/builds/{id}/telemetry` (VM and host monitors).
#[derive(Debug, ToSchema)]
pub struct TelemetryRequest {
    /// `monitor_started`, `heartbeat`, `cpu_snapshot` or another kind (logged).
    #[serde(rename = "type")]
    #[schema(example = "cpu_snapshot")]
    pub kind: String,
    /// When it was taken (ISO 8601; any JSON value is accepted).
    #[schema(value_type = String)]
    pub timestamp: serde_json::Value,
    /// The sample: `{cpu_percent, memory_mb}` for `cpu_snapshot`,
    /// `{heartbeat_count, stage, metrics, uptime_seconds}` for `heartbeat`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `{"status": "ok"}` of telemetry.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOk {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The optional body of `POST /api/builds/{id}/heartbeat`.
#[derive(Debug, ToSchema)]
pub struct HeartbeatRequest {
    /// Percent done; logged as `Build progress: N%`.
    pub progress: Option<f64>,
}

/// `POST /api/builds/{id}/heartbeat`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Server time in milliseconds since the epoch.
    pub timestamp: i64,
}

/// The body of `POST /api/builds/{id}/authenticate`.
#[derive(Debug, ToSchema)]
pub struct AuthenticateRequest {
    /// The attempt's one-time code (`job.otp`).
    #[schema(min_length = 1)]
    pub otp: String,
}

/// `POST /api/builds/{id}/authenticate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmToken {
    /// The VM token (`X-VM-Token`) for this build and attempt.
    pub vm_token: String,
    /// When it expires (ISO 8601).
    pub expires_at: String,
}

/// `POST /api/builds/{id}/vm-ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmReady {
    /// Always `true`.
    pub success: bool,
    /// When the VM said so (ISO 8601).
    pub vm_ready_at: String,
}

/// `GET /api/builds/{id}/vm-status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmStatus {
    /// Whether the VM signalled ready.
    pub vm_ready: bool,
    /// A token of the worker's own for the build's heartbeats (when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub vm_token: Option<String>,
    /// When the VM signalled ready (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub vm_ready_at: Option<String>,
}

/// The multipart form of `POST /api/builds/{id}/artifact`; other parts are ignored.
#[derive(Debug, ToSchema)]
pub struct ArtifactForm {
    /// The artifact (`.ipa` or `.apk`).
    #[schema(value_type = String, format = Binary)]
    pub artifact: Vec<u8>,
}

/// A zip answer (source or certificate bundle), streamed.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ZipBody(pub Vec<u8>);
