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
