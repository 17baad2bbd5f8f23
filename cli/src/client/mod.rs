//! The client commands of `freeagent`: submit, status, logs, download, cancel,
//! retry, list, workers. Human output by default, `--json` for scripts.
//!
//! Exit codes: 0 success; 1 the operation failed (for example the build failed);
//! 2 bad usage or input; 3 not found; 4 not authorized; 5 the controller cannot be
//! reached.

pub mod commands;
pub mod config;
pub mod pack;

use std::fmt;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// A failure with the exit code it maps to and what to do about it.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Exit code.
    pub code: i32,
}

impl CliError {
    /// An error with an exit code.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, code }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

/// Exit code: the operation failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage or input.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: not found.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit code: not authorized.
pub const EXIT_AUTH: i32 = 4;
/// Exit code: the controller cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 5;

/// A connection to a controller with the caller's credentials.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Base URL.
    pub url: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Controller {
    /// Resolves URL and key (see [`config`]).
    pub fn new(url: Option<&str>, key: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("freeagent-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without special settings builds");
        Self { url: config::resolve_url(url), key: config::resolve_key(key), http }
    }

    /// A request with the API key and, for build routes, the build's token.
    pub fn request(&self, method: Method, path: &str, build: Option<&str>) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = &self.key {
            request = request.header("X-API-Key", key);
        }
        if let Some(token) = build.and_then(|b| config::load_tokens().get(b).cloned()) {
            request = request.header("X-Build-Token", token);
        }
        request
    }

    /// Whether any credential is known for a call.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Sends and maps transport failures and error statuses to [`CliError`]s.
    pub async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refused(response, what).await)
    }

    /// Sends and decodes a JSON answer.
    pub async fn json(&self, request: RequestBuilder, what: &str) -> Result<Value, CliError> {
        let response = self.send(request, what).await?;
        response
            .json()
            .await
            .map_err(|e| CliError::new(EXIT_FAILED, format!("the controller sent an unreadable answer: {e}")))
    }

    /// The error for a controller that cannot be reached.
    pub fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::new(EXIT_UNREACHABLE, format!("cannot reach the controller at {}: {e}", self.url))
            .hint("check --url / EXPO_CONTROLLER_URL, and that `freeagent serve` is running there")
    }

    /// The error for a refused request.
    pub async fn refused(&self, response: Response, what: &str) -> CliError {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or("no details").to_owned();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let hint = if self.key.is_none() {
                    "no API key found: pass --api-key or set EXPO_CONTROLLER_API_KEY (a local controller keeps its key in ./data/api-key)"
                } else {
                    "check the API key (--api-key / EXPO_CONTROLLER_API_KEY) against the controller's CONTROLLER_API_KEY"
                };
                CliError::new(EXIT_AUTH, format!("{what}: not authorized ({status}: {message})")).hint(hint)
            }
            StatusCode::NOT_FOUND => CliError::new(EXIT_NOT_FOUND, format!("{what}: {message}"))
                .hint("check the build id (`freeagent list` shows recent builds)"),
            StatusCode::PAYLOAD_TOO_LARGE => CliError::new(EXIT_USAGE, format!("{what}: {message}"))
                .hint("the controller's FREEAGENT_MAX_SOURCE_BYTES / FREEAGENT_MAX_CERTS_BYTES limit it"),
            s if s.is_client_error() => CliError::new(EXIT_USAGE, format!("{what}: {message}")),
            _ => CliError::new(EXIT_FAILED, format!("{what}: the controller answered {status}: {message}")),
        }
    }
}
