//! Request size limits at the HTTP edge.
//!
//! - Bodies: every route that reads its body whole (the JSON routes) reads at most
//!   `FREEAGENT_MAX_JSON_BYTES`; more is answered `413 {"error":...}` while the
//!   body is read, so an oversized body is never buffered past the limit. The
//!   upload routes (submit, result, artifact) stream and set their own, larger
//!   limits from the upload settings.
//! - Framework rejections (a body over the limit seen by an optional extractor, a
//!   malformed query string, ...) are plain text in axum; [`json_errors`] turns
//!   them into the `{"error":"..."}` body every answer of the contract has.
//! - Headers: hyper refuses a request head with more than 100 header fields, or
//!   one still incomplete once 408 KiB are buffered (its `max_buf_size`, 8 KiB +
//!   100 × 4 KiB), with `431 Request Header Fields Too Large` (no body) and closes
//!   the connection.
//!   `axum::serve` does not expose hyper's builder, so these are fixed.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use clap::Args;

/// Largest framework rejection text that is read to be rewrapped as JSON.
const MAX_REJECTION_TEXT: usize = 16 * 1024;

/// Body limit of the JSON routes.
#[derive(Debug, Clone, Args)]
pub struct RequestLimitArgs {
    /// Largest request body of a route that reads its body whole (every JSON
    /// route), in bytes; larger bodies get 413. Uploads have their own limits.
    #[arg(long, env = "FREEAGENT_MAX_JSON_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_json_bytes: usize,
}

/// Rewrites a plain-text error answer (an axum extractor's rejection) as
/// `{"error":"<text>"}`, keeping its status. Answers of the services' own error
/// types are JSON already and pass untouched, and so does every success.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REJECTION_TEXT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => status.canonical_reason().unwrap_or("Request refused").to_owned(),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": text })).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}
