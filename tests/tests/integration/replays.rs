//! Request-by-request replays of the existing clients (api-contract.md §1).

use std::io::Write;

use freeagent_tests::spawn_app;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn certs_bundle() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("cert.p12", options).unwrap();
    zip.write_all(b"P12").unwrap();
    zip.start_file("password.txt", options).unwrap();
    zip.write_all(b"pw").unwrap();
    zip.start_file("profile.mobileprovision", options).unwrap();
    zip.write_all(b"PROFILE").unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

/// The CLI's submit: a zip sent as `project.tar.gz`, platform ios, certs.
async fn cli_submit(app: &freeagent_tests::TestApp, source: &[u8]) -> (String, String) {
    let form = Form::new()
        .part("source", Part::bytes(source.to_vec()).file_name("project.tar.gz").mime_str("application/gzip").unwrap())
        .text("platform", "ios")
        .part("certs", Part::bytes(certs_bundle()).file_name("certs.zip"));
    let response = app.admin(Method::POST, "/api/builds/submit").multipart(form).send().await.unwrap();
    assert!(response.status().is_success());
    let body: Value = response.json().await.unwrap();
    (body["id"].as_str().unwrap().to_owned(), body["access_token"].as_str().unwrap().to_owned())
}

async fn assert_completed_like_the_e2e_script(app: &freeagent_tests::TestApp, id: &str, artifact: &[u8]) {
    let status =
        app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap().text().await.unwrap();
    assert!(status.contains("\"status\":\"completed\""), "{status}");
    let download = app.admin(Method::GET, &format!("/api/builds/{id}/download")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let bytes = download.bytes().await.unwrap();
    assert!(bytes.len() >= 100);
    assert_eq!(bytes.as_ref(), artifact);
    let logs = app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().text().await.unwrap();
    assert!(logs.contains("Build submitted") && logs.contains("completed successfully"), "{logs}");
    let health = app.anon(Method::GET, "/health").send().await.unwrap().text().await.unwrap();
    assert!(health.contains("\"pending\":0"), "{health}");
}

#[tokio::test]
async fn the_old_swift_worker_with_the_v0_vm_scripts_completes_a_build() {
    let app = spawn_app().await;
    let key = app.key.clone();
    // W0 start: register with the key; it reads only `id`.
    let body: Value = app
        .admin(Method::POST, "/api/workers/register")
        .header("Content-Type", "application/json")
        .json(&json!({ "name": "Seth's Mac", "capabilities": {
            "platforms": ["ios"], "maxConcurrentBuilds": 1, "maxMemoryGB": 16, "maxCPUPercent": 80, "xcode_version": "15.0" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let worker = body["id"].as_str().unwrap().to_owned();
    assert!(worker.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "VM-safe id");

    let source: Vec<u8> = (0..50_000u32).map(|i| (i % 256) as u8).collect();
    let (id, _) = cli_submit(&app, &source).await;

    // Poll with key + ?worker_id=.
    let response = app.admin(Method::GET, &format!("/api/workers/poll?worker_id={worker}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let job = &body["job"];
    for field in ["id", "platform", "source_url"] {
        assert!(job[field].is_string(), "{field}");
    }
    assert!(job["certs_url"].is_string() && job["baseImageId"].is_string());

    // Source with key + X-Worker-Id.
    let zip = app
        .admin(Method::GET, job["source_url"].as_str().unwrap())
        .header("X-Worker-Id", &worker)
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.bytes().await.unwrap().as_ref(), source.as_slice());

    // Host VMResourceMonitor: only the two ids.
    let host = app
        .anon(Method::POST, &format!("/api/builds/{id}/telemetry"))
        .header("X-Worker-Id", &worker)
        .header("X-Build-Id", &id)
        .json(&json!({ "type": "cpu_snapshot", "timestamp": "2026-01-28T12:00:00Z", "data": { "cpu_percent": 42.0, "memory_mb": 3000.0 } }));
    assert_eq!(host.send().await.unwrap().status(), 200);

    // V0 bootstrap: certs-secure with key, X-Worker-Id, X-Build-Id.
    let certs = app
        .anon(Method::GET, &format!("/api/builds/{id}/certs-secure"))
        .header("X-API-Key", &key)
        .header("X-Worker-Id", &worker)
        .header("X-Build-Id", &id)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(certs.status(), 200);
    let certs: Value = certs.json().await.unwrap();
    for field in ["p12", "p12Password", "keychainPassword"] {
        assert!(certs[field].is_string(), "{field}");
    }
    assert!(certs["provisioningProfiles"].is_array());

    // vm-monitor.sh: monitor_started, then heartbeats.
    for (kind, data) in [
        ("monitor_started", json!({})),
        (
            "heartbeat",
            json!({ "heartbeat_count": 1, "stage": "build", "metrics": { "cpu_percent": 90, "memory_mb": 5000, "disk_percent": 50, "processes": 200 }, "uptime_seconds": 30 }),
        ),
    ] {
        let response = app
            .anon(Method::POST, &format!("/api/builds/{id}/telemetry"))
            .header("X-API-Key", &key)
            .header("X-Worker-Id", &worker)
            .header("X-Build-Id", &id)
            .json(&json!({ "type": kind, "timestamp": "2026-01-28T12:00:30Z", "data": data }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // free-agent-run-job: one request per log line.
    for line in ["npm install", "eas build --local", "Build succeeded"] {
        let response = app
            .anon(Method::POST, &format!("/api/builds/{id}/logs"))
            .header("X-API-Key", &key)
            .header("X-Worker-Id", &worker)
            .json(&json!({ "level": "info", "message": line }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Upload: build_id, worker_id, success, result (its own boundary, parts in order).
    let artifact: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
    let form = Form::new().text("build_id", id.clone()).text("worker_id", worker.clone()).text("success", "true").part(
        "result",
        Part::bytes(artifact.clone()).file_name("App.ipa").mime_str("application/octet-stream").unwrap(),
    );
    let response = app.admin(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "success");
    // Stop: the W0 unregister path.
    let response = app.admin(Method::POST, &format!("/api/workers/{worker}/unregister")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    assert_completed_like_the_e2e_script(&app, &id, &artifact).await;
    app.stop().await;
}

#[tokio::test]
async fn the_token_swift_worker_w2_completes_a_build() {
    let app = spawn_app().await;
    let register = |id: Option<&str>| {
        let mut body = json!({ "name": "W2", "active_build_count": 0,
            "capabilities": { "platforms": ["ios"], "maxConcurrentBuilds": 1, "xcode_version": "15.2" } });
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        app.admin(Method::POST, "/api/workers/register").json(&body).send()
    };
    let response = register(None).await.unwrap();
    assert_eq!(response.status(), 200, "W2 requires exactly 200");
    let body: Value = response.json().await.unwrap();
    let worker = body["id"].as_str().unwrap().to_owned();
    let mut token = body["access_token"].as_str().unwrap().to_owned();
    // An app restart re-registers with the stored id.
    let body: Value = register(Some(&worker)).await.unwrap().json().await.unwrap();
    assert_eq!(body["id"], worker.as_str());
    token = body["access_token"].as_str().map(str::to_owned).unwrap_or(token);

    let (id, _) =
        cli_submit(&app, b"a zipped project, at least a hundred bytes long .........................................")
            .await;
    let response = app.admin(Method::GET, "/api/workers/poll").header("X-Worker-Token", &token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    if let Some(t) = body["access_token"].as_str() {
        token = t.to_owned();
    }
    assert_eq!(body["job"]["id"], id.as_str());
    let source = app
        .admin(Method::GET, body["job"]["source_url"].as_str().unwrap())
        .header("X-Worker-Id", &worker)
        .send()
        .await
        .unwrap();
    assert_eq!(source.status(), 200);
    let artifact = vec![9u8; 4096];
    let form = Form::new()
        .text("build_id", id.clone())
        .text("worker_id", worker.clone())
        .text("success", "true")
        .part("result", Part::bytes(artifact.clone()).file_name("App.ipa"));
    let response = app.admin(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response =
        app.admin(Method::POST, "/api/workers/unregister").header("X-Worker-Token", &token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.unwrap()["builds_reassigned"].is_i64());
    assert_completed_like_the_e2e_script(&app, &id, &artifact).await;
    app.stop().await;
}

#[tokio::test]
async fn the_upstream_mock_worker_completes_a_build_uploading_the_file_first() {
    let app = spawn_app().await;
    let body: Value = app
        .admin(Method::POST, "/api/workers/register")
        .json(&json!({ "name": "mock-worker", "capabilities": { "platforms": ["ios"], "xcode_version": "15.0" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let worker = body["id"].as_str().unwrap().to_owned();
    let (id, _) = cli_submit(&app, &vec![b'z'; 500]).await;
    let response = app.admin(Method::GET, &format!("/api/workers/poll?worker_id={worker}")).send().await.unwrap();
    assert!(response.status().is_success());
    let job = response.json::<Value>().await.unwrap()["job"].clone();
    for url in ["source_url", "certs_url"] {
        let response =
            app.admin(Method::GET, job[url].as_str().unwrap()).header("X-Worker-Id", &worker).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
    }
    // The mock appends the file before the ids.
    let artifact = vec![1u8; 2048];
    let form = Form::new()
        .part("result", Part::bytes(artifact.clone()).file_name(format!("{id}.ipa")))
        .text("build_id", id.clone())
        .text("worker_id", worker.clone())
        .text("success", "true");
    let response = app.admin(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_completed_like_the_e2e_script(&app, &id, &artifact).await;
    assert!(app.backend.blobs.list("uploads").await.unwrap().is_empty());
    app.stop().await;
}
