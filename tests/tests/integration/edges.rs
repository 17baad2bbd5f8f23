//! Inputs that once broke the contract (found by requests generated from the
//! OpenAPI document and by schemathesis): each is answered as documented.

use freeagent_tests::spawn_app;
use reqwest::Method;

#[tokio::test]
async fn undecodable_paths_and_query_strings_are_refused_with_a_json_error() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let cases = [
        (app.admin(Method::GET, "/api/webhooks/x/deliveries?limit=abc"), 400),
        (app.admin(Method::GET, "/api/builds?limit=1&limit=2"), 400),
        (app.admin(Method::GET, "/api/diagnostics/%FF"), 404),
        (worker.request(Method::GET, "/api/workers/poll?wait=0&wait=1"), 400),
        (worker.request(Method::POST, "/api/builds/%FF/vm-ready"), 404),
        (app.admin(Method::GET, "/api/workers/%C3%28/stats"), 404),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn text_with_nul_characters_is_stored_without_them() {
    let app = spawn_app().await;
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&serde_json::json!({ "name": "Mac\u{0}mini", "capabilities": { "platforms": ["ios"], "note\u{0}": "a\u{0}b" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let stats: serde_json::Value =
        app.admin(Method::GET, &format!("/api/workers/{id}/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["workerName"], "Mac\u{FFFD}mini");

    let report = serde_json::json!({
        "worker_id": id, "status": "healthy", "duration_ms": 1,
        "checks": [{ "name": "disk\u{0}", "status": "pass", "message": "", "duration_ms": 1, "auto_fixed": false }],
    });
    let response = app.admin(Method::POST, "/api/diagnostics/report").json(&report).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let response = app
        .admin(Method::POST, "/api/webhooks")
        .json(&serde_json::json!({ "url": "http://127.0.0.1:9/a\u{0}b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "a URL with a control character is refused");
    app.stop().await;
}

#[tokio::test]
async fn the_deliveries_of_a_deleted_webhook_are_not_found() {
    let app = spawn_app().await;
    let created: serde_json::Value = app
        .admin(Method::POST, "/api/webhooks")
        .json(&serde_json::json!({ "url": "http://127.0.0.1:9/hook" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/webhooks/{id}/deliveries");
    assert_eq!(app.admin(Method::GET, &path).send().await.unwrap().status(), 200);
    let deleted = app.admin(Method::DELETE, &format!("/api/webhooks/{id}")).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let response = app.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "Webhook not found");
    app.stop().await;
}

/// Postgres prints a JSONB number in full (`-1.7976931348623157e308` comes back as
/// 310 digits); reading it must give the same number, not "number out of range".
#[tokio::test]
async fn extreme_numbers_in_stored_json_read_back_unchanged() {
    let app = spawn_app().await;
    let extremes = serde_json::json!([f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, -9007199254740992.0]);
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&serde_json::json!({ "name": "Mac", "capabilities": { "platforms": ["ios"], "extremes": extremes } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let (id, token) = (body["id"].as_str().unwrap().to_owned(), body["access_token"].as_str().unwrap().to_owned());
    let poll =
        app.client.get(format!("{}/api/workers/poll", app.url)).header("X-Worker-Token", &token).send().await.unwrap();
    assert_eq!(poll.status(), 200, "the worker row reads back");

    let report = serde_json::json!({
        "worker_id": id, "status": "healthy", "duration_ms": 1,
        "checks": [{ "name": "disk", "status": "pass", "message": "", "duration_ms": 1, "auto_fixed": false, "details": extremes }],
    });
    let response = app.admin(Method::POST, "/api/diagnostics/report").json(&report).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let history = app.admin(Method::GET, &format!("/api/diagnostics/{id}")).send().await.unwrap();
    assert_eq!(history.status(), 200);
    let history: serde_json::Value = history.json().await.unwrap();
    assert_eq!(history["reports"][0]["checks"][0]["details"], extremes);
    app.stop().await;
}
