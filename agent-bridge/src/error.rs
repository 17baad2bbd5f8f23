//! The bridge's one error type, mapped to `{"error":"..."}` responses in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatcher::lease::{LeaseError, Refusal};

use crate::wire::ErrorBody;

/// Every way a bridge request can fail.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a required credential is missing, unknown or expired.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the credential is valid but not for this, or the API key is wrong.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403: an authenticated worker (or its VM) acting on a build it does not hold.
    /// Not a failed authentication: the limiter does not count it.
    #[error("{0}")]
    NotAssignee(&'static str),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// 409: the lease was lost, or the build was cancelled or already finished.
    #[error("{0}")]
    Conflict(&'static str),
    /// 413: an upload passed its limit.
    #[error("{0}")]
    TooLarge(&'static str),
    /// 422: a stored file cannot be used (a certificate bundle that is not one).
    #[error("{0}")]
    Unprocessable(String),
    /// 500: a bug or a failed dependency; the cause is logged, the body is opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Refusal> for BridgeError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound => BridgeError::NotFound(refusal.message()),
            Refusal::NotAssignee => BridgeError::NotAssignee(refusal.message()),
            Refusal::Cancelled | Refusal::Finished | Refusal::LeaseLost => BridgeError::Conflict(refusal.message()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for BridgeError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return BridgeError::TooLarge("Request body too large");
        }
        BridgeError::BadRequest(format!("Invalid JSON body: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for BridgeError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        BridgeError::BadRequest(format!("Invalid query string: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for BridgeError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        tracing::debug!(error = %e.body_text(), "undecodable path parameter");
        BridgeError::NotFound("No such resource: the path does not decode")
    }
}

impl From<dispatcher::store::StoreError> for BridgeError {
    fn from(e: dispatcher::store::StoreError) -> Self {
        BridgeError::Internal(e.into())
    }
}

impl From<LeaseError> for BridgeError {
    fn from(e: LeaseError) -> Self {
        BridgeError::Internal(e.into())
    }
}

impl IntoResponse for BridgeError {
    fn into_response(self) -> Response {
        let status = match &self {
            BridgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BridgeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            BridgeError::Forbidden(_) | BridgeError::NotAssignee(_) => StatusCode::FORBIDDEN,
            BridgeError::NotFound(_) => StatusCode::NOT_FOUND,
            BridgeError::Conflict(_) => StatusCode::CONFLICT,
            BridgeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BridgeError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BridgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            BridgeError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "Internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        if matches!(self, BridgeError::Unauthorized(_) | BridgeError::Forbidden(_)) {
            response.extensions_mut().insert(dispatcher::auth::AuthFailure);
        }
        response
    }
}
