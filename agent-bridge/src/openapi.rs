//! The OpenAPI document of the worker and VM routes, generated from the
//! handlers' `#[utoipa::path]` annotations and the [`crate::wire`] types.
//!
//! `/api/workers/result` serves the upload handler under a second path (the
//! Elixir controller's name); it is documented once per path.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::routes::{builds, upload, vm, workers};

/// Security scheme of the fleet API key (`X-API-Key`).
pub const API_KEY_SCHEME: &str = "api_key";
/// Security scheme of a worker token (`X-Worker-Token`).
pub const WORKER_TOKEN_SCHEME: &str = "worker_token";
/// Security scheme of the legacy worker id (`X-Worker-Id`, with the API key).
pub const WORKER_ID_SCHEME: &str = "worker_id";
/// Security scheme of a build VM's token (`X-VM-Token`).
pub const VM_TOKEN_SCHEME: &str = "vm_token";

/// Paths served by the same handler as another path: `(documented, alias)`.
const ALIASES: [(&str, &str); 1] = [("/api/workers/upload", "/api/workers/result")];

#[derive(OpenApi)]
#[openapi(
    paths(
        workers::list,
        workers::register,
        workers::poll,
        upload::upload,
        workers::heartbeat,
        workers::fail,
        workers::unregister,
        workers::abandon,
        workers::unregister_by_id,
        workers::stats,
        builds::source,
        builds::certs,
        builds::certs_secure,
        builds::logs,
        builds::telemetry,
        builds::heartbeat,
        vm::authenticate,
        vm::vm_ready,
        vm::vm_status,
        vm::artifact,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "workers", description = "Worker registration, polling and results"),
        (name = "worker builds", description = "What a build's worker and its VM fetch and report"),
        (name = "vm", description = "Job-scoped VM credentials and the VM's own reports"),
    )
)]
struct BridgeDoc;

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
            WORKER_TOKEN_SCHEME,
            header("X-Worker-Token", "A registered worker's token (`access_token` of register)."),
        );
        components.add_security_scheme(
            WORKER_ID_SCHEME,
            header(
                "X-Worker-Id",
                "The oldest workers' and VM scripts' claim of a worker id; with `X-API-Key`, or alone on the \
                 host monitor's telemetry. Can be turned off.",
            ),
        );
        components.add_security_scheme(
            VM_TOKEN_SCHEME,
            header("X-VM-Token", "A build VM's token (from `authenticate`), for that build and attempt only."),
        );
    }
}

/// The OpenAPI document of every worker and VM route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = BridgeDoc::openapi();
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
