//! Credentials of workers, their VMs and operators.
//!
//! - `X-Worker-Token`: a registered worker (current token, or the previous one
//!   inside its grace period). Unknown → 401.
//! - `X-API-Key` with a worker id (`X-Worker-Id`, `?worker_id=` or a form field):
//!   the oldest workers and VM scripts. Wrong key → 403. Can be turned off.
//! - `X-API-Key` alone: operators (worker statistics, unregister by id).
//!
//! [`Path`] and [`Query`] are axum's, refusing with a JSON error body.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use dispatcher::auth::hash_token;
use dispatcher::model::WorkerId;
use dispatcher::store::{self, workers::WorkerIdentity};

use crate::{BridgeError, BridgeState};

/// Header of the fleet API key.
pub const API_KEY: &str = "x-api-key";
/// Header of a worker token.
pub const WORKER_TOKEN: &str = "x-worker-token";
/// Header of the legacy worker id.
pub const WORKER_ID: &str = "x-worker-id";
/// Header binding a VM request to the build in its path.
pub const BUILD_ID: &str = "x-build-id";
/// Header of a build VM's job-scoped token.
pub const VM_TOKEN: &str = "x-vm-token";

/// A header as text, if present and valid.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `axum::extract::Path` refusing with the BridgeError's `{"error": ...}` body: a
/// path parameter that does not decode (not UTF-8) names nothing, so 404.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(BridgeError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` refusing with the BridgeError's `{"error": ...}` body (400).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(BridgeError))]
pub struct Query<T>(pub T);

/// A JSON request body, its text made storable (no U+0000, which Postgres cannot
/// hold); a body that is not JSON is a 400.
pub fn json_body(
    body: Result<axum::Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<serde_json::Value, BridgeError> {
    Ok(dispatcher::model::storable_json(body?.0))
}

/// Proof that the request carries the fleet API key (401 missing, 403 wrong).
#[derive(Debug, Clone, Copy)]
pub struct AdminKey;

impl FromRequestParts<BridgeState> for AdminKey {
    type Rejection = BridgeError;

    async fn from_request_parts(parts: &mut Parts, state: &BridgeState) -> Result<Self, BridgeError> {
        check_key(state, header(&parts.headers, API_KEY)).map(|()| AdminKey)
    }
}

/// Checks the fleet key: 401 when missing, 403 when wrong.
pub fn check_key(state: &BridgeState, key: Option<&str>) -> Result<(), BridgeError> {
    match key {
        None => Err(BridgeError::Unauthorized("Missing X-API-Key header")),
        Some(key) if state.api_key.verify(key) => Ok(()),
        Some(_) => Err(BridgeError::Forbidden("Invalid API key")),
    }
}

/// A worker authenticated by its token.
#[derive(Debug, Clone)]
pub struct TokenWorker {
    /// Who it is.
    pub identity: WorkerIdentity,
    /// The token it presented (echoed in poll answers; only its hash is stored).
    pub token: String,
}

/// Resolves a worker token; 401 when unknown or past its grace period.
pub async fn worker_by_token(state: &BridgeState, token: &str) -> Result<TokenWorker, BridgeError> {
    let hash = hash_token(token);
    if let Some(identity) = state.cache.worker_by_token(&hash) {
        return Ok(TokenWorker { identity, token: token.to_owned() });
    }
    match store::workers::find_by_token_hash(&state.backend.pool, &hash).await? {
        Some(identity) => {
            state.cache.remember_token(hash, identity.clone());
            Ok(TokenWorker { identity, token: token.to_owned() })
        }
        None => Err(BridgeError::Unauthorized("Invalid or expired worker token")),
    }
}

/// The legacy path is allowed and the key is right (403 when wrong).
pub fn check_legacy_key(state: &BridgeState, key: &str) -> Result<(), BridgeError> {
    if !state.config.legacy_worker_auth {
        return Err(BridgeError::Unauthorized(
            "Legacy worker authentication (X-API-Key with a worker id) is disabled: register for an X-Worker-Token",
        ));
    }
    check_key(state, Some(key))
}

/// Who is acting on a build: a worker id proven by a token, or claimed next to the
/// fleet key. Ownership is checked against the build's lease afterwards.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The worker.
    pub worker: WorkerId,
    /// Whether it authenticated with the fleet key (legacy) rather than a token.
    pub by_key: bool,
}

/// Authenticates a worker- or VM-side request on `build`: the build's
/// `X-VM-Token` (acting for the attempt's worker), `X-Worker-Token`, or
/// `X-API-Key` with `X-Worker-Id` (or `?worker_id=`, passed as `query_worker`).
pub async fn build_actor(
    state: &BridgeState,
    headers: &HeaderMap,
    query_worker: Option<&str>,
    build: Option<&dispatcher::model::BuildId>,
) -> Result<Actor, BridgeError> {
    if let (Some(token), Some(build)) = (header(headers, VM_TOKEN), build) {
        let owner = store::leases::vm_token_owner(&state.backend.pool, build, &hash_token(token))
            .await?
            .ok_or(BridgeError::Unauthorized("Invalid or expired VM token"))?;
        let claimed = header(headers, WORKER_ID).or(query_worker);
        if claimed.is_some_and(|c| c != owner.as_str()) {
            return Err(BridgeError::Forbidden("Build not assigned to this worker"));
        }
        return Ok(Actor { worker: owner, by_key: false });
    }
    if let Some(token) = header(headers, WORKER_TOKEN) {
        let worker = worker_by_token(state, token).await?;
        let claimed = header(headers, WORKER_ID).or(query_worker);
        if claimed.is_some_and(|c| c != worker.identity.id.as_str()) {
            return Err(BridgeError::Forbidden("Worker not authorized for this build"));
        }
        return Ok(Actor { worker: worker.identity.id, by_key: false });
    }
    let Some(key) = header(headers, API_KEY) else {
        return Err(BridgeError::Unauthorized("Missing credentials: X-Worker-Token, or X-API-Key with X-Worker-Id"));
    };
    check_legacy_key(state, key)?;
    let Some(claimed) = header(headers, WORKER_ID).or(query_worker) else {
        return Err(BridgeError::Unauthorized("Missing X-Worker-Id header"));
    };
    let worker =
        WorkerId::parse(claimed).map_err(|_| BridgeError::Forbidden("Worker not authorized for this build"))?;
    Ok(Actor { worker, by_key: true })
}
