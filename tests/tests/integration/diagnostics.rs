use freeagent_tests::spawn_app;
use reqwest::Method;
use serde_json::json;

fn report(worker: &str, status: &str) -> serde_json::Value {
    json!({
        "worker_id": worker,
        "status": status,
        "run_at": "2026-01-01T00:00:00Z",
        "duration_ms": 1234,
        "auto_fixed": true,
        "checks": [{ "name": "tart", "status": "pass", "message": "ok", "duration_ms": 12, "auto_fixed": false }],
    })
}

#[tokio::test]
async fn reports_are_stored_and_listed_newest_first() {
    let app = spawn_app().await;
    app.insert_worker("w1", "Mac", "idle").await;
    let mut ids = Vec::new();
    for status in ["healthy", "warning", "critical"] {
        let response =
            app.admin(Method::POST, "/api/diagnostics/report").json(&report("w1", status)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "stored");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let body: serde_json::Value =
        app.admin(Method::GET, "/api/diagnostics/w1?limit=2").send().await.unwrap().json().await.unwrap();
    assert_eq!(body["worker_id"], "w1");
    let reports = body["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["id"], ids[2]);
    assert_eq!(reports[0]["status"], "critical");
    assert!(reports[0]["run_at"].is_i64());
    assert_eq!(reports[0]["duration_ms"], 1234);
    assert_eq!(reports[0]["auto_fixed"], true);
    assert_eq!(reports[0]["checks"][0]["name"], "tart");

    let latest: serde_json::Value =
        app.admin(Method::GET, "/api/diagnostics/w1/latest").send().await.unwrap().json().await.unwrap();
    assert_eq!(latest["id"], ids[2]);
    app.stop().await;
}

#[tokio::test]
async fn bad_reports_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.insert_worker("w1", "Mac", "idle").await;
    let mut missing = report("w1", "healthy");
    missing.as_object_mut().unwrap().remove("checks");
    let mut not_array = report("w1", "healthy");
    not_array["checks"] = json!("all good");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.admin(Method::POST, "/api/diagnostics/report").json(&missing),
            400,
            "Missing required fields: worker_id, status, duration_ms, checks",
        ),
        (
            app.admin(Method::POST, "/api/diagnostics/report").json(&report("w1", "sick")),
            400,
            "Invalid status. Must be: healthy, warning, or critical",
        ),
        (app.admin(Method::POST, "/api/diagnostics/report").json(&not_array), 400, "checks must be an array"),
        (app.admin(Method::POST, "/api/diagnostics/report").json(&report("ghost", "healthy")), 404, "Worker not found"),
        (
            app.anon(Method::POST, "/api/diagnostics/report").json(&report("w1", "healthy")),
            401,
            "Missing X-API-Key header",
        ),
    ];
    for (request, status, message) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{message}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], message);
    }
    // Malformed JSON.
    let response = app
        .admin(Method::POST, "/api/diagnostics/report")
        .header("Content-Type", "application/json")
        .body("{\"worker_id\": \"w1\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("Invalid JSON body"));

    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM diagnostic_reports").fetch_one(app.pool()).await.unwrap();
    assert_eq!(stored, 0);

    let response = app.admin(Method::GET, "/api/diagnostics/w1/latest").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "No diagnostic reports found");
    let response = app.admin(Method::GET, "/api/diagnostics/ghost").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = app.admin(Method::GET, "/api/diagnostics/w1?limit=abc").send().await.unwrap();
    assert_eq!(response.status(), 400);
    app.stop().await;
}
