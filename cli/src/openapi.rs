//! The OpenAPI document of the whole HTTP surface, served at
//! `GET /api/openapi.json` by every role.
//!
//! It merges the api's and the agent bridge's documents, which both routers
//! generate from their handlers; a replica of either role serves the combined
//! document, since clients see one origin (DESIGN.md §2).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::{ContactBuilder, InfoBuilder, LicenseBuilder};

/// The combined document, serialized once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| document().to_json().expect("an OpenAPI document always serializes to JSON"));

#[derive(OpenApi)]
#[openapi(paths(serve), tags((name = "meta", description = "This document")))]
struct MetaDoc;

/// The combined OpenAPI 3.1 document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = MetaDoc::openapi();
    doc.info = InfoBuilder::new()
        .title("Free Agent Dispatcher")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The Expo Free Agent controller: submitters and the CLI (api), workers and their build VMs \
             (agent bridge). Wire-compatible with every generation of the original controller's clients, \
             including its mixed JSON casing. Every error answer is `{\"error\":\"<message>\"}`.",
        ))
        .license(Some(LicenseBuilder::new().name(env!("CARGO_PKG_LICENSE")).build()))
        .contact(Some(ContactBuilder::new().name(Some("Free Agent Dispatcher")).build()))
        .build();
    doc.merge(api::openapi::openapi());
    doc.merge(agent_bridge::openapi::openapi());
    doc
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}
