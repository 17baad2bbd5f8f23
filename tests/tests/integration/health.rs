use freeagent_tests::spawn_app;
use reqwest::Method;

#[tokio::test]
async fn health_answers_without_credentials_with_compact_queue_counts() {
    let app = spawn_app().await;
    app.submit_ok(b"zip").await;
    for path in ["/health", "/api/health"] {
        let response = app.anon(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        // The upstream scripts grep `"pending":<digits>` in compact JSON.
        assert!(text.contains("\"pending\":1"), "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["queue"]["active"], 0);
        assert_eq!(body["queue"]["total"], 1);
        assert!(body["storage"].is_object());
    }
    // A key, right or wrong, is ignored.
    let response = app.anon(Method::GET, "/health").header("X-API-Key", "wrong-key-wrong-key").send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_answer_404_with_an_error_body() {
    let app = spawn_app().await;
    let response = app.admin(Method::GET, "/api/nothing/here").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "error": "Not found" }));
    let response = app.admin(Method::DELETE, "/api/builds/submit").send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn the_api_role_does_not_serve_bridge_routes_and_the_bridge_role_not_api_routes() {
    use freeagent::cli::Role;
    let api_only = freeagent_tests::spawn_app_with(|s| s.role = Role::Api).await;
    api_only.insert_worker("w1", "Mac", "idle").await;
    assert_eq!(api_only.admin(Method::GET, "/api/workers/w1/stats").send().await.unwrap().status(), 404);
    assert_eq!(api_only.admin(Method::GET, "/api/builds").send().await.unwrap().status(), 200);
    api_only.stop().await;

    let bridge_only = freeagent_tests::spawn_app_with(|s| s.role = Role::Bridge).await;
    bridge_only.insert_worker("w1", "Mac", "idle").await;
    assert_eq!(bridge_only.admin(Method::GET, "/api/workers/w1/stats").send().await.unwrap().status(), 200);
    assert_eq!(bridge_only.admin(Method::GET, "/api/builds").send().await.unwrap().status(), 404);
    bridge_only.stop().await;
}
