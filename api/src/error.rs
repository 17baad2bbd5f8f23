//! The api's one error type, mapped to `{"error":"..."}` responses in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::wire::ErrorBody;

/// Every way an api request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a required credential is missing, unknown or expired.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the credential is valid but not for this, or the API key is wrong.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// 413: an upload passed its limit.
    #[error("{0}")]
    TooLarge(&'static str),
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500: a bug or a failed dependency; the cause is logged, the body is opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge("Request body too large");
        }
        ApiError::BadRequest(format!("Invalid JSON body: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(format!("Invalid query string: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        tracing::debug!(error = %e.body_text(), "undecodable path parameter");
        ApiError::NotFound("No such resource: the path does not decode")
    }
}

impl From<dispatcher::store::StoreError> for ApiError {
    fn from(e: dispatcher::store::StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<dispatcher::ops::OpsError> for ApiError {
    fn from(e: dispatcher::ops::OpsError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "Internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        if matches!(self, ApiError::Unauthorized(_) | ApiError::Forbidden(_)) {
            response.extensions_mut().insert(dispatcher::auth::AuthFailure);
        }
        response
    }
}
