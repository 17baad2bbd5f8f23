//! Credentials as extractors.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::{BridgeError, BridgeState};

/// Proof that the request carries the fleet API key (401 missing, 403 wrong).
#[derive(Debug, Clone, Copy)]
pub struct AdminKey;

impl FromRequestParts<BridgeState> for AdminKey {
    type Rejection = BridgeError;

    async fn from_request_parts(parts: &mut Parts, state: &BridgeState) -> Result<Self, BridgeError> {
        match parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            None => Err(BridgeError::Unauthorized("Missing X-API-Key header")),
            Some(key) if state.api_key.verify(key) => Ok(AdminKey),
            Some(_) => Err(BridgeError::Forbidden("Invalid API key")),
        }
    }
}
