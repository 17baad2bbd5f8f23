use freeagent_tests::{spawn_app, spawn_app_with};
use reqwest::Method;

#[tokio::test]
async fn worker_stats_use_the_swift_apps_camel_case_fields() {
    let app = spawn_app().await;
    app.insert_worker("worker-1", "Studio Mac", "idle").await;
    sqlx::query("UPDATE workers SET builds_completed = 5, builds_failed = 2, registered_at = now() - interval '3 hours 2 minutes' WHERE id = 'worker-1'")
        .execute(app.pool())
        .await
        .unwrap();
    let response = app.admin(Method::GET, "/api/workers/worker-1/stats").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["totalBuilds"], 7);
    assert_eq!(body["successfulBuilds"], 5);
    assert_eq!(body["failedBuilds"], 2);
    assert_eq!(body["workerName"], "Studio Mac");
    assert_eq!(body["status"], "idle");
    assert_eq!(body["uptime"], "3h 2m");
    app.stop().await;
}

#[tokio::test]
async fn worker_stats_need_the_key_and_a_known_worker() {
    let app = spawn_app().await;
    app.insert_worker("worker-1", "Mac", "idle").await;
    let cases = [
        (app.anon(Method::GET, "/api/workers/worker-1/stats"), 401, "Missing X-API-Key header"),
        (
            app.anon(Method::GET, "/api/workers/worker-1/stats").header("X-API-Key", "not-the-key-at-all"),
            403,
            "Invalid API key",
        ),
        (app.admin(Method::GET, "/api/workers/nobody/stats"), 404, "Worker not found"),
        (app.admin(Method::GET, "/api/workers/..%2F..%2Fetc%2Fpasswd/stats"), 404, "Worker not found"),
    ];
    for (request, status, message) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], message);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_absurdly_long_poll_wait_is_capped_instead_of_crashing_the_request() {
    let app = spawn_app_with(|s| s.bridge.max_poll_wait_secs = 1).await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    for wait in ["99999999999999999999999", "1e300"] {
        let started = std::time::Instant::now();
        let response = worker.request(Method::GET, &format!("/api/workers/poll?wait={wait}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "wait={wait}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["job"].is_null());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the server's cap applies");
    }
    app.stop().await;
}

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
async fn a_build_heartbeat_whose_body_is_not_json_still_counts() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (build, _) = app.submit_ok(b"PK source").await;
    let job = worker.poll(5.0).await.expect("the build is handed out");
    assert_eq!(job["id"], build.as_str());
    let response = worker
        .request(Method::POST, &format!("/api/builds/{build}/heartbeat?worker_id={}", worker.id))
        .header("Content-Type", "application/json")
        .body("{\"progress\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
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
