use freeagent_tests::spawn_app;
use reqwest::Method;

#[tokio::test]
async fn stats_are_real_numbers_computed_from_the_tables() {
    let app = spawn_app().await;
    let empty: serde_json::Value = app.anon(Method::GET, "/api/stats").send().await.unwrap().json().await.unwrap();
    assert_eq!(
        empty,
        serde_json::json!({
            "nodesOnline": 0, "buildsQueued": 0, "activeBuilds": 0, "buildsToday": 0,
            "totalBuilds": 0, "totalBuildTimeMs": 0, "totalCpuCycles": 0
        }),
        "no invented demo numbers on an empty network"
    );

    app.insert_worker("w1", "idle now", "idle").await;
    app.insert_worker("w2", "building now", "building").await;
    app.insert_worker("w3", "idle long ago", "idle").await;
    app.insert_worker("w4", "offline", "offline").await;
    sqlx::query("UPDATE workers SET last_seen_at = now() - interval '10 minutes' WHERE id = 'w3'")
        .execute(app.pool())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.submit_ok(format!("source {i}").as_bytes()).await.0);
    }
    app.lease_to(&ids[1], "w2").await;
    let pool = app.pool();
    for (id, status, secs) in [(&ids[2], "completed", 60), (&ids[3], "failed", 30)] {
        sqlx::query(
            "UPDATE builds SET status = $2, worker_id = 'w1', completed_at = now(),
                    assigned_at = now() - make_interval(secs => $3) WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(f64::from(secs))
        .execute(pool)
        .await
        .unwrap();
    }
    let cancel = app.admin(Method::POST, &format!("/api/builds/{}/cancel", ids[4])).send().await.unwrap();
    assert_eq!(cancel.status(), 200);
    for cpu in [50.0f64, 100.0] {
        sqlx::query("INSERT INTO cpu_snapshots (build_id, cpu_percent, memory_mb) VALUES ($1, $2, 1024)")
            .bind(&ids[2])
            .bind(cpu)
            .execute(pool)
            .await
            .unwrap();
    }

    for path in ["/api/stats", "/public/stats"] {
        let response = app.anon(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let stats: serde_json::Value = response.json().await.unwrap();
        assert_eq!(stats["nodesOnline"], 2, "{stats}");
        assert_eq!(stats["buildsQueued"], 1);
        assert_eq!(stats["activeBuilds"], 1);
        assert_eq!(stats["buildsToday"], 1);
        assert_eq!(stats["totalBuilds"], 3);
        assert_eq!(stats["totalBuildTimeMs"], 90_000);
        // 75 % average CPU over 90 s of building.
        assert_eq!(stats["totalCpuCycles"], 68);
    }
    app.stop().await;
}

#[tokio::test]
async fn stats_allow_the_landing_page_from_any_origin() {
    let app = spawn_app().await;
    let response =
        app.anon(Method::GET, "/api/stats").header("Origin", "https://freeagent.example").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://freeagent.example");
    assert_eq!(response.headers()["access-control-allow-credentials"], "true");

    let preflight = app
        .anon(Method::OPTIONS, "/api/stats")
        .header("Origin", "https://freeagent.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let methods = preflight.headers()["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("GET") && methods.contains("POST"), "{methods}");
    app.stop().await;
}
