//! The OpenAPI document of the api routes, generated from the handlers'
//! `#[utoipa::path]` annotations and the [`crate::wire`] types.
//!
//! Routes that serve one handler under two paths (`/health` and `/api/health`,
//! `/api/stats` and `/public/stats`) are documented once per path.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::routes::{builds, diagnostics, health, stats, stream, submit, webhooks};

/// Security scheme of the fleet API key (`X-API-Key`).
pub const API_KEY_SCHEME: &str = "api_key";
/// Security scheme of a submitter's build token (`X-Build-Token`).
pub const BUILD_TOKEN_SCHEME: &str = "build_token";

/// Paths served by the same handler as another path: `(documented, alias)`.
const ALIASES: [(&str, &str); 2] = [("/health", "/api/health"), ("/api/stats", "/public/stats")];

#[derive(OpenApi)]
#[openapi(
    paths(
        health::health,
        stats::network_stats,
        stats::preflight,
        builds::list,
        builds::active,
        submit::submit,
        builds::status,
        builds::logs,
        stream::logs,
        stream::events,
        builds::download,
        builds::download_kind,
        builds::cancel,
        builds::retry,
        diagnostics::report,
        diagnostics::history,
        diagnostics::latest,
        webhooks::list,
        webhooks::create,
        webhooks::delete,
        webhooks::enable,
        webhooks::deliveries,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness and queue counts"),
        (name = "stats", description = "The landing page's public statistics"),
        (name = "builds", description = "Submitting builds and following them"),
        (name = "streams", description = "Server-Sent Events of a build"),
        (name = "diagnostics", description = "Worker diagnostics reports (`freeagent doctor`)"),
        (name = "webhooks", description = "Signed HTTP callbacks on build and worker events"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, description)))
        };
        components.add_security_scheme(
            API_KEY_SCHEME,
            header("X-API-Key", "The fleet API key: operators, the CLI and the oldest workers."),
        );
        components.add_security_scheme(
            BUILD_TOKEN_SCHEME,
            header(
                "X-Build-Token",
                "A submitter's build token (`access_token` of submit or retry), for that build only.",
            ),
        );
    }
}

/// The OpenAPI document of every api route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for (documented, alias) in ALIASES {
        add_alias(&mut doc, documented, alias);
    }
    doc
}

/// Documents `alias` as a second path of `documented`'s operations (with their own
/// operation ids, which must be unique in a document).
fn add_alias(doc: &mut utoipa::openapi::OpenApi, documented: &str, alias: &str) {
    let Some(item) = doc.paths.paths.get(documented) else {
        panic!("{documented} is not documented, so {alias} cannot be its alias");
    };
    let mut item = item.clone();
    let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.options];
    for operation in operations.into_iter().flatten() {
        if let Some(id) = &operation.operation_id {
            operation.operation_id =
                Some(format!("{id}_at_{}", alias.trim_start_matches('/').replace(['/', '-'], "_")));
        }
    }
    doc.paths.paths.insert(alias.to_owned(), item);
}
