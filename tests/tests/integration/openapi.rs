//! The OpenAPI document at `/api/openapi.json`: it lists exactly the routes the
//! routers register, every documented operation reaches a handler, and requests
//! generated from it (valid and invalid, ten thousand and more) get no server
//! error, only documented statuses, `{"error": "..."}` refusals and answers
//! that match their schemas.
//!
//! The generator's seed is printed; `OPENAPI_FUZZ_SEED=<n>` replays the same
//! sequence of choices and `OPENAPI_FUZZ_PER_OPERATION=<n>` changes the volume.

mod generate;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use freeagent_tests::{TestApp, spawn_app, spawn_app_with};
use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use generate::{BuildFixture, Fixtures, Generated, WorkerFixture};
use schema::{Operation, operations, validate};

/// The sources that register routes, read at compile time.
const ROUTER_SOURCES: [(&str, &str); 3] = [
    ("api/src/routes/mod.rs", include_str!("../../../api/src/routes/mod.rs")),
    ("agent-bridge/src/routes/mod.rs", include_str!("../../../agent-bridge/src/routes/mod.rs")),
    ("cli/src/startup.rs", include_str!("../../../cli/src/startup.rs")),
];

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "options", "head"];

/// `(METHOD, path)` of every `.route("<path>", get(..).post(..)...)` in `source`.
fn routes_in(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route(...) call");
        let args = &rest[..end];
        let mut quoted = args.splitn(3, '"');
        let (Some(_), Some(path), Some(handlers)) = (quoted.next(), quoted.next(), quoted.next()) else {
            panic!("a .route(...) whose path is not a string literal: {args}");
        };
        let bytes = handlers.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts_word {
                for method in METHODS {
                    if handlers[i..].starts_with(&format!("{method}(")) {
                        found.push((method.to_uppercase(), path.to_owned()));
                    }
                }
            }
            i += 1;
        }
        rest = &rest[end..];
    }
    found
}

fn routed_operations() -> BTreeSet<(String, String)> {
    ROUTER_SOURCES.iter().flat_map(|(_, source)| routes_in(source)).collect()
}

async fn fetch_document(app: &TestApp) -> Value {
    let response = app.anon(Method::GET, "/api/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    response.json().await.unwrap()
}

#[test]
fn the_route_reader_sees_every_method_of_a_route_and_nothing_else() {
    let source = r#"
        Router::new()
            .route("/a", get(a::list).post(a::create).layer(limit(&state)))
            .route("/b/{id}", axum::routing::delete(b::delete))
            .route("/c", post(c::upload).layer(body_limit(&state)))
            .merge(other)
    "#;
    let found: BTreeSet<(String, String)> = routes_in(source).into_iter().collect();
    let expected: BTreeSet<(String, String)> = [("GET", "/a"), ("POST", "/a"), ("DELETE", "/b/{id}"), ("POST", "/c")]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_routers_register() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");

    let documented: BTreeSet<(String, String)> =
        operations(&doc).iter().map(|op| (op.method.to_string(), op.path.clone())).collect();
    let routed = routed_operations();
    assert!(routed.len() >= 45, "the route reader found only {} routes: {routed:?}", routed.len());
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let not_routed: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && not_routed.is_empty(),
        "routes missing from the document: {undocumented:?}; documented but not routed: {not_routed:?}"
    );

    let ids: Vec<String> =
        operations(&doc).iter().map(|op| op.spec["operationId"].as_str().unwrap_or("").to_owned()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids are missing or repeated: {ids:?}");
    app.stop().await;
}

/// Whether an answer came from the server's fallbacks (no route, or no method).
fn from_fallback(status: u16, body: &str) -> bool {
    status == 405
        || (status == 404 && serde_json::from_str::<Value>(body).ok() == Some(json!({ "error": "Not found" })))
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    // The detector itself: an unknown path and an unknown method are recognised.
    for (method, path) in [(Method::GET, "/api/no-such-route"), (Method::DELETE, "/health")] {
        let response = app.anon(method.clone(), path).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(from_fallback(status, &response.text().await.unwrap()), "{method} {path} answered {status}");
    }
    for op in operations(&doc) {
        let mut target = op.path.replace("{kind}", "source");
        for param in op.params("path") {
            target = target.replace(&format!("{{{}}}", param["name"].as_str().unwrap()), "x");
        }
        if op.path == "/api/workers/poll" {
            target.push_str("?wait=0");
        }
        let response = app.anon(op.method.clone(), &target).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(!from_fallback(status, &body), "{} is documented but not routed: {status} {body}", op.name());
        assert!(op.documents_status(status), "{} answered {status}, which it does not document: {body}", op.name());
    }
    app.stop().await;
}

/// Rounds of requests; fixtures (a fresh leased build, a webhook) are renewed
/// before each, since the requests cancel, fail, complete and delete things.
const ROUNDS: usize = 10;
/// Requests per operation by default: 47 operations × 230 > 10,000.
const DEFAULT_PER_OPERATION: usize = 230;
/// Requests in flight.
const CONCURRENCY: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_generated_from_the_document_find_no_server_error() {
    let app = spawn_app_with(|s| {
        // Generated webhook URLs are loopback only, and are never called anyway.
        s.webhooks.webhook_interval_ms = 24 * 3600 * 1000;
        s.bridge.max_poll_wait_secs = 1;
        s.database.db_pool_size = 16;
    })
    .await;
    let doc = fetch_document(&app).await;
    let ops = operations(&doc);
    let seed: u64 =
        std::env::var("OPENAPI_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    let per_operation: usize =
        std::env::var("OPENAPI_FUZZ_PER_OPERATION").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_PER_OPERATION);
    println!("openapi fuzz: seed {seed} (replay with OPENAPI_FUZZ_SEED={seed}), {} operations", ops.len());
    let _ = std::io::stdout().flush();
    let mut rng = StdRng::seed_from_u64(seed);

    let mut fx = initial_fixtures(&app).await;
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for round in 0..ROUNDS {
        arm(&app, &mut fx).await;
        let count = per_operation / ROUNDS + usize::from(round < per_operation % ROUNDS);
        let mut batch: Vec<Generated> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            for _ in 0..count {
                batch.push(generate::generate(&doc, index, op, &fx, &mut rng));
            }
        }
        batch.shuffle(&mut rng);
        let client = app.client.clone();
        let url = app.url.clone();
        let results: Vec<Outcome> = futures::stream::iter(batch)
            .map(|request| send(client.clone(), url.clone(), request))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        outcomes.extend(results);
    }
    let elapsed = started.elapsed();

    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    let mut succeeded: BTreeMap<usize, usize> = BTreeMap::new();
    // Failures grouped by operation and kind, with the first example of each.
    let mut failures: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for outcome in &outcomes {
        let op = &ops[outcome.request.operation];
        let key = outcome.status.map_or("no answer".to_owned(), |s| s.to_string());
        *histogram.entry(key).or_default() += 1;
        if let Some(status) = outcome.status
            && (200..300).contains(&status)
        {
            *succeeded.entry(outcome.request.operation).or_default() += 1;
        }
        if let Err(problem) = check(&doc, op, outcome) {
            let kind: String = problem.chars().take_while(|c| *c != ':').collect();
            let entry = failures.entry((op.name(), kind)).or_insert_with(|| {
                let example = format!(
                    "{problem}\n      request: {} {} headers={:?} body={} ({} bytes) {:?}\n      answer: {}",
                    outcome.request.method,
                    outcome.request.target.chars().take(200).collect::<String>(),
                    outcome.request.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                    outcome.request.body_kind,
                    outcome.request.body.as_ref().map_or(0, Vec::len),
                    outcome
                        .request
                        .body
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).chars().take(300).collect::<String>()),
                    outcome.body.chars().take(300).collect::<String>(),
                );
                (0, example)
            });
            entry.0 += 1;
        }
    }
    println!("openapi fuzz: {} requests in {:.1} s (seed {seed})", outcomes.len(), elapsed.as_secs_f64());
    println!("openapi fuzz: statuses {histogram:?}");
    let never: Vec<String> =
        ops.iter().enumerate().filter(|(i, _)| !succeeded.contains_key(i)).map(|(_, op)| op.name()).collect();
    println!(
        "openapi fuzz: {} of {} operations answered 2xx at least once; never: {never:?}",
        ops.len() - never.len(),
        ops.len()
    );
    app.stop().await;

    assert!(outcomes.len() >= ops.len() * per_operation, "fewer requests were sent than generated");
    if per_operation == DEFAULT_PER_OPERATION {
        assert!(outcomes.len() >= 10_000, "only {} requests", outcomes.len());
    }
    let broken: usize = failures.values().map(|(n, _)| n).sum();
    assert!(
        failures.is_empty(),
        "{broken} of {} generated requests broke the contract (seed {seed}):\n{}",
        outcomes.len(),
        failures
            .iter()
            .map(|((op, kind), (n, example))| format!("  {n} × {op} → {kind}\n      e.g. {example}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(never.len() <= ops.len() / 6, "too few operations were reached with valid requests: never {never:?}");
}

/// A sent request and what came back.
struct Outcome {
    request: Generated,
    status: Option<u16>,
    content_type: String,
    body: String,
}

async fn send(client: reqwest::Client, base: String, request: Generated) -> Outcome {
    let mut builder = client.request(request.method.clone(), format!("{base}{}", request.target));
    for (name, value) in &request.headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            builder = builder.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let mut sent = builder.try_clone().expect("bodies are bytes").timeout(Duration::from_secs(30)).send().await;
    if let Err(e) = &sent
        && !e.is_timeout()
    {
        // A pooled keep-alive connection the server had just closed (it closes
        // those whose request body it did not read); once more on a new one.
        sent = builder.timeout(Duration::from_secs(30)).send().await;
    }
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Outcome { request, status: None, content_type: String::new(), body: format!("{e:?}") },
    };
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = if content_type.starts_with("text/event-stream") {
        // A live stream: the first bytes are enough; dropping it closes it.
        let mut stream = response.bytes_stream();
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(chunk))) => String::from_utf8_lossy(&chunk).into_owned(),
            _ => String::new(),
        }
    } else {
        match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<body unreadable: {e}>"),
        }
    };
    Outcome { request, status: Some(status), content_type, body }
}

/// The contract every answer keeps.
fn check(doc: &Value, op: &Operation, outcome: &Outcome) -> Result<(), String> {
    let Some(status) = outcome.status else {
        return Err(format!("no answer: {}", outcome.body));
    };
    if status >= 500 {
        return Err(format!("server error {status}"));
    }
    if from_fallback(status, &outcome.body) {
        return Err(format!("{status} from the fallback: the route did not match"));
    }
    if !op.documents_status(status) {
        return Err(format!("status {status} is not documented for this operation"));
    }
    if (400..500).contains(&status) {
        let body: Value = serde_json::from_str(&outcome.body).map_err(|_| format!("{status} without a JSON body"))?;
        if !body["error"].is_string() {
            return Err(format!("{status} whose body has no \"error\" string"));
        }
        if !outcome.content_type.starts_with("application/json") {
            return Err(format!("{status} with content type {:?}", outcome.content_type));
        }
    }
    if let Some(schema) = op.json_response(status) {
        if !outcome.content_type.starts_with("application/json") {
            return Err(format!("{status} documented as JSON but sent as {:?}", outcome.content_type));
        }
        let body: Value =
            serde_json::from_str(&outcome.body).map_err(|_| format!("{status} with a body that is not JSON"))?;
        validate(doc, schema, &body, "body")?;
    }
    Ok(())
}

fn certs_bundle() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    for (name, content) in [("cert.p12", &b"P12"[..]), ("password.txt", b"pw"), ("app.mobileprovision", b"PROFILE")] {
        zip.start_file(name, options).unwrap();
        zip.write_all(content).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

async fn register(app: &TestApp, name: &str) -> WorkerFixture {
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&json!({ "name": name, "capabilities": { "platforms": ["ios", "android"], "maxConcurrentBuilds": 64 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    WorkerFixture {
        id: body["id"].as_str().unwrap().to_owned(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

async fn initial_fixtures(app: &TestApp) -> Fixtures {
    let workers = vec![register(app, "fuzz-a").await, register(app, "fuzz-b").await];
    let report = json!({
        "worker_id": workers[0].id, "status": "healthy", "duration_ms": 12, "auto_fixed": false,
        "checks": [{ "name": "disk", "status": "pass", "message": "ok", "duration_ms": 1, "auto_fixed": false }],
    });
    let response = app.admin(Method::POST, "/api/diagnostics/report").json(&report).send().await.unwrap();
    assert_eq!(response.status(), 200);
    Fixtures { key: app.key.clone(), workers, builds: Vec::new(), webhooks: Vec::new(), certs: certs_bundle() }
}

/// Renews what the previous round may have used up: builds leased to the first
/// worker (with their one-time codes and VM tokens), a pending build and a webhook.
async fn arm(app: &TestApp, fx: &mut Fixtures) {
    let mut fresh = Vec::new();
    for with_certs in [true, false, true, false] {
        let response = app.submit(b"PK fuzz source", "ios", with_certs.then_some(&fx.certs[..])).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        fresh.push(BuildFixture {
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            otp: None,
            vm_token: None,
        });
    }
    // The first worker leases whatever is queued, up to three of the fresh builds
    // (the last one stays pending). Long polls: a submission's job signal may
    // reach the poll just after it started.
    let worker = fx.workers[0].clone();
    let mut leased = BTreeSet::new();
    for _ in 0..40 {
        if fresh[..3].iter().all(|b| b.vm_token.is_some()) {
            break;
        }
        let response = app
            .anon(Method::GET, "/api/workers/poll?wait=1")
            .header("X-Worker-Token", &worker.token)
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            break;
        }
        let body: Value = response.json().await.unwrap();
        let Some(id) = body["job"]["id"].as_str().map(str::to_owned) else { break };
        if !leased.insert(id.clone()) {
            break; // handed out again: the worker is at capacity
        }
        let otp = body["job"]["otp"].as_str().unwrap().to_owned();
        let response = app
            .anon(Method::POST, &format!("/api/builds/{id}/authenticate"))
            .json(&json!({ "otp": otp }))
            .send()
            .await
            .unwrap();
        let vm_token = if response.status() == 200 {
            response.json::<Value>().await.unwrap()["vm_token"].as_str().map(str::to_owned)
        } else {
            None
        };
        if let Some(build) = fresh.iter_mut().chain(fx.builds.iter_mut()).find(|b| b.id == id) {
            (build.otp, build.vm_token) = (Some(otp), vm_token);
        }
    }
    fx.builds.extend(fresh);
    let keep = fx.builds.len().saturating_sub(8);
    fx.builds.drain(..keep);

    let response = app
        .admin(Method::POST, "/api/webhooks")
        .json(&json!({ "url": "http://127.0.0.1:9/fuzz", "events": ["*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    fx.webhooks.push(id);
}
