//! Credentials as extractors.
//!
//! - [`AdminKey`]: a valid `X-API-Key` (401 missing, 403 wrong; constant-time).
//! - [`BuildAccess`]: a valid `X-API-Key`, or the build's own `X-Build-Token`.
//! - [`Path`] and [`Query`]: axum's, refusing with a JSON error body.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use dispatcher::auth::token_matches;
use dispatcher::model::BuildId;
use dispatcher::store::{self, builds::Build};

use crate::{ApiError, ApiState};

/// Header of the fleet API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header of a submitter's build token.
pub const BUILD_TOKEN_HEADER: &str = "x-build-token";

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `axum::extract::Path` refusing with the ApiError's `{"error": ...}` body: a
/// path parameter that does not decode (not UTF-8) names nothing, so 404.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` refusing with the ApiError's `{"error": ...}` body (400).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A JSON request body, its text made storable (no U+0000, which Postgres cannot
/// hold); a body that is not JSON is a 400.
pub fn json_body(
    body: Result<axum::Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<serde_json::Value, ApiError> {
    Ok(dispatcher::model::storable_json(body?.0))
}

/// Proof that the request carries the fleet API key.
#[derive(Debug, Clone, Copy)]
pub struct AdminKey;

impl FromRequestParts<ApiState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match header(parts, API_KEY_HEADER) {
            None => Err(ApiError::Unauthorized("Missing X-API-Key header")),
            Some(key) if state.api_key.verify(key) => Ok(AdminKey),
            Some(_) => Err(ApiError::Forbidden("Invalid API key")),
        }
    }
}

/// Access to the build named in the path: by API key or by that build's token.
#[derive(Debug)]
pub struct BuildAccess {
    /// The build.
    pub id: BuildId,
    /// The build row when the token check already loaded it.
    loaded: Option<Build>,
}

impl BuildAccess {
    /// The build row (404 when it does not exist).
    pub async fn load(self, state: &ApiState) -> Result<Build, ApiError> {
        match self.loaded {
            Some(build) => Ok(build),
            None => store::builds::get_build(&state.backend.pool, &self.id)
                .await?
                .ok_or(ApiError::NotFound("Build not found")),
        }
    }
}

impl FromRequestParts<ApiState> for BuildAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let key = header(parts, API_KEY_HEADER).map(str::to_owned);
        let token = header(parts, BUILD_TOKEN_HEADER).map(str::to_owned);
        if key.is_none() && token.is_none() {
            return Err(ApiError::Unauthorized("Missing X-API-Key or X-Build-Token header"));
        }
        let key_ok = key.as_deref().is_some_and(|k| state.api_key.verify(k));
        let axum::extract::Path(params) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("Build not found"))?;
        let raw = params.get("id").cloned().unwrap_or_default();
        if key_ok {
            let id = BuildId::parse(&raw).map_err(|_| ApiError::NotFound("Build not found"))?;
            return Ok(BuildAccess { id, loaded: None });
        }
        let Some(token) = token else {
            return Err(ApiError::Forbidden("Invalid API key"));
        };
        let id = BuildId::parse(&raw).map_err(|_| ApiError::NotFound("Build not found"))?;
        let build =
            store::builds::get_build(&state.backend.pool, &id).await?.ok_or(ApiError::NotFound("Build not found"))?;
        if token_matches(&build.token_hash, &token) {
            Ok(BuildAccess { id, loaded: Some(build) })
        } else {
            Err(ApiError::Forbidden("Invalid or expired build token"))
        }
    }
}
