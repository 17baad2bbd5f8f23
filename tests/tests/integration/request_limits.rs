//! Request size limits: an oversized body on any JSON route is refused with 413
//! and a JSON error (and changes nothing), and hyper's header limits refuse heads
//! with too many or too large header fields.

use std::time::Duration;

use freeagent_tests::{TestApp, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 4096;

fn oversized() -> Value {
    json!({ "build_id": "x", "message": "a".repeat(LIMIT * 2), "otp": "b".repeat(LIMIT) })
}

async fn assert_too_large(route: &str, response: reqwest::Response) {
    assert_eq!(response.status(), 413, "{route}");
    assert_eq!(response.headers()["content-type"], "application/json", "{route}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{route}: {body}");
}

/// A leased build, its worker and the VM token of its attempt.
async fn leased(app: &TestApp) -> (String, freeagent_tests::WorkerClient, String) {
    let (id, _) = app.submit_ok(b"zip").await;
    let worker = app.register_worker("mac", &["ios"]).await;
    let job = worker.poll(0.0).await.expect("a job");
    let vm: Value = app
        .anon(Method::POST, &format!("/api/builds/{id}/authenticate"))
        .json(&json!({ "otp": job["otp"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, worker, vm["vm_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_oversized_body_on_every_json_route_gets_413_with_a_json_error_and_changes_nothing() {
    let app = spawn_app_with(|s| s.request_limits.max_json_bytes = LIMIT).await;
    let (id, worker, vm_token) = leased(&app).await;
    // A first sign of life moves the build to building (and logs that).
    let alive = app.anon(Method::POST, &format!("/api/builds/{id}/heartbeat")).header("X-VM-Token", &vm_token);
    assert_eq!(alive.json(&json!({})).send().await.unwrap().status(), 200);
    let logs_before = app.log_count(&id).await;
    let key = |m, p: &str| app.admin(m, p);
    let token = |m, p: &str| worker.request(m, p);
    let vm = |m, p: &str| app.anon(m, p).header("X-VM-Token", &vm_token);
    let routes: Vec<(String, reqwest::RequestBuilder)> = vec![
        ("webhooks".into(), key(Method::POST, "/api/webhooks")),
        ("diagnostics".into(), key(Method::POST, "/api/diagnostics/report")),
        ("register".into(), key(Method::POST, "/api/workers/register")),
        ("worker heartbeat".into(), token(Method::POST, "/api/workers/heartbeat")),
        ("fail".into(), token(Method::POST, "/api/workers/fail")),
        ("abandon".into(), token(Method::POST, "/api/workers/abandon")),
        ("logs".into(), vm(Method::POST, &format!("/api/builds/{id}/logs"))),
        ("telemetry".into(), vm(Method::POST, &format!("/api/builds/{id}/telemetry"))),
        ("build heartbeat".into(), vm(Method::POST, &format!("/api/builds/{id}/heartbeat"))),
        ("authenticate".into(), app.anon(Method::POST, &format!("/api/builds/{id}/authenticate"))),
    ];
    for (route, request) in routes {
        assert_too_large(&route, request.json(&oversized()).send().await.unwrap()).await;
    }
    // Without a length up front (chunked), the limit applies while reading.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; LIMIT / 2])));
    let streamed = vm(Method::POST, &format!("/api/builds/{id}/logs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_too_large("logs, chunked", streamed).await;

    // No refused body failed, abandoned or logged anything.
    assert_eq!(app.stored_status(&id).await, "building");
    assert_eq!(app.stored_owner(&id).await.as_deref(), Some(worker.id.as_str()));
    assert_eq!(app.log_count(&id).await, logs_before);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks").fetch_one(app.pool()).await.unwrap();
    assert_eq!(rows, 0);
    // Just under the limit is fine.
    let fits = vm(Method::POST, &format!("/api/builds/{id}/logs"))
        .json(&json!({ "level": "info", "message": "a".repeat(LIMIT - 100) }))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn framework_rejections_are_json_errors_too() {
    let app = spawn_app_with(|_| {}).await;
    let path = format!("/api/webhooks/{}/deliveries?limit=lots", uuid::Uuid::now_v7());
    let response = app.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    app.stop().await;
}

/// Sends a raw request head and returns the status code of the answer.
async fn raw_status(app: &TestApp, head: String) -> u16 {
    let address = app.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut read, mut write) = stream.split();
    let send = async {
        // The server may answer and close before it read everything.
        let _ = write.write_all(head.as_bytes()).await;
    };
    let mut answer = Vec::new();
    let receive = async {
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(send, receive) }).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status line: {text:?}"))
}

fn head_with(headers: &[(String, String)]) -> String {
    let mut head = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_owned();
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test]
async fn too_many_or_too_large_header_fields_are_refused_with_431() {
    let app = spawn_app_with(|_| {}).await;
    let many = |n: usize| (0..n).map(|i| (format!("x-field-{i}"), "v".to_owned())).collect::<Vec<_>>();
    assert_eq!(raw_status(&app, head_with(&many(90))).await, 200, "90 fields are fine");
    assert_eq!(raw_status(&app, head_with(&many(101))).await, 431, "more than 100 fields");
    let big = |n: usize| vec![("x-big".to_owned(), "b".repeat(n))];
    assert_eq!(raw_status(&app, head_with(&big(64 * 1024))).await, 200, "a 64 KiB field is fine");
    assert_eq!(raw_status(&app, head_with(&big(1024 * 1024))).await, 431, "a head still incomplete at 408 KiB");
    app.stop().await;
}
