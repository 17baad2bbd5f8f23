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
    add_layer_answers(&mut doc);
    doc
}

/// Adds the answers the layers around every route give (see `startup.rs`): 413 from
/// the JSON body limit to every operation that takes a body, and 429 from the
/// failed-authentication limit to every operation that takes a credential.
fn add_layer_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let answers = &mut operation.responses.responses;
            if operation.request_body.is_some() {
                answers.entry("413".into()).or_insert_with(|| error("The body is over its size limit"));
            }
            let takes_credentials = operation
                .security
                .as_ref()
                .is_some_and(|alternatives| alternatives.iter().any(|r| *r != Default::default()));
            if takes_credentials {
                answers.entry("429".into()).or_insert_with(|| {
                    error("Too many failed authentications from this client address; see `Retry-After`")
                });
            }
        }
    }
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
