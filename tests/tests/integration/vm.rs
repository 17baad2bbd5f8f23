//! Job-scoped VM credentials and the W3/V1 and W4/V2 flows.

use std::io::Write;
use std::time::Duration;

use freeagent_tests::{TestApp, WorkerClient, spawn_app, spawn_app_with};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn bundle() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("cert.p12", options).unwrap();
    zip.write_all(b"P12").unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

async fn authenticate(app: &TestApp, build: &str, otp: &str) -> (u16, Value) {
    let response = app
        .anon(Method::POST, &format!("/api/builds/{build}/authenticate"))
        .json(&json!({ "otp": otp }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn vm(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.anon(method, path).header("X-VM-Token", token)
}

#[tokio::test]
async fn w3_worker_with_v1_scripts_completes_a_build_without_the_key_in_the_vm() {
    let app = spawn_app().await;
    let worker = app.register_worker("W3", &["ios"]).await;
    let source = vec![3u8; 5000];
    let response = app.submit(&source, "ios", Some(&bundle())).await;
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // W3 (26aadbb): poll with the token only; the job must carry `otp`.
    let body: Value = worker.request(Method::GET, "/api/workers/poll").send().await.unwrap().json().await.unwrap();
    let otp = body["job"]["otp"].as_str().expect("W3 requires otp").to_owned();
    // b6dd9f0: source with the worker token only.
    let zip = worker.request(Method::GET, &format!("/api/builds/{id}/source")).send().await.unwrap();
    assert_eq!(zip.bytes().await.unwrap().as_ref(), source.as_slice());
    // V1 bootstrap: authenticate with the OTP from build-config.json.
    let (status, auth) = authenticate(&app, &id, &otp).await;
    assert_eq!(status, 200);
    let token = auth["vm_token"].as_str().unwrap().to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(auth["expires_at"].as_str().unwrap()).is_ok());
    let certs = vm(&app, &token, Method::GET, &format!("/api/builds/{id}/certs-secure")).await.send().await.unwrap();
    assert_eq!(certs.status(), 200);
    assert!(certs.json::<Value>().await.unwrap()["p12"].is_string());
    // V1 monitor: VM token plus the two ids.
    let response = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/telemetry"))
        .await
        .header("X-Worker-Id", &worker.id)
        .header("X-Build-Id", &id)
        .json(&json!({ "type": "monitor_started", "timestamp": "2026-01-31T00:00:00Z", "data": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/logs"))
        .await
        .json(&json!({ "level": "info", "message": "building in the VM" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // W3 still uploads with the key and its worker id.
    let artifact = vec![7u8; 3000];
    let form = Form::new()
        .text("build_id", id.clone())
        .text("worker_id", worker.id.clone())
        .text("success", "true")
        .part("result", Part::bytes(artifact.clone()).file_name("App.ipa"));
    let response = app.admin(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let download = app.admin(Method::GET, &format!("/api/builds/{id}/download")).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), artifact.as_slice());
    // The VM token dies with the build: a late VM learns it ended.
    let late = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/logs"))
        .await
        .json(&json!({ "level": "info", "message": "late" }));
    assert_eq!(late.send().await.unwrap().status(), 409);
    app.stop().await;
}

#[tokio::test]
async fn w4_worker_with_the_v2_bootstrap_completes_a_build() {
    let app = spawn_app_with(|s| s.bridge.open_vm_status = true).await;
    let worker = app.register_worker("W4", &["ios"]).await;
    let (id, _) = app.submit_ok(b"the project zip").await;
    let job = worker.poll(0.0).await.unwrap();
    let otp = job["otp"].as_str().unwrap();
    // The worker waits for the VM: not ready yet.
    let status: Value =
        app.anon(Method::GET, &format!("/api/builds/{id}/vm-status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status, json!({ "vm_ready": false }));

    // V2: authenticate, certs-secure (none for this build: 404 is fatal only when
    // certificates are needed), vm-ready with an empty JSON body, source, logs.
    let (status, auth) = authenticate(&app, &id, otp).await;
    assert_eq!(status, 200);
    let token = auth["vm_token"].as_str().unwrap().to_owned();
    let certs = vm(&app, &token, Method::GET, &format!("/api/builds/{id}/certs-secure")).await.send().await.unwrap();
    assert_eq!(certs.status(), 404);
    let ready = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/vm-ready"))
        .await
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["success"], true);
    assert!(ready["vm_ready_at"].is_string());
    let source = vm(&app, &token, Method::GET, &format!("/api/builds/{id}/source")).await.send().await.unwrap();
    assert_eq!(source.bytes().await.unwrap().as_ref(), b"the project zip");
    let batch: Vec<Value> = (0..50).map(|i| json!({ "level": "info", "message": format!("line {i}") })).collect();
    let logs = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/logs")).await.json(&json!({ "logs": batch }));
    assert_eq!(logs.send().await.unwrap().json::<Value>().await.unwrap()["count"], 50);

    // 927aa78 asks vm-status without credentials (opened by the setting) and
    // heartbeats with the VM token it got.
    let status: Value =
        app.anon(Method::GET, &format!("/api/builds/{id}/vm-status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["vm_ready"], true);
    let worker_vm_token = status["vm_token"].as_str().unwrap().to_owned();
    let beat = vm(&app, &worker_vm_token, Method::POST, &format!("/api/builds/{id}/heartbeat?worker_id={}", worker.id))
        .await
        .json(&json!({ "progress": 40 }));
    let beat = beat.send().await.unwrap();
    assert_eq!(beat.status(), 200);
    let beat: Value = beat.json().await.unwrap();
    assert_eq!(beat["status"], "ok");
    assert!(beat["timestamp"].is_i64());
    assert_eq!(app.stored_status(&id).await, "building");

    // The VM uploads the artifact; the worker's file-less success is a no-op.
    let artifact = vec![4u8; 100_000];
    let form = Form::new().part("artifact", Part::bytes(artifact.clone()).file_name("App.ipa"));
    let response = vm(&app, &token, Method::POST, &format!("/api/builds/{id}/artifact"))
        .await
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "success": true }));
    let form = Form::new().text("build_id", id.clone()).text("worker_id", worker.id.clone()).text("success", "true");
    let response = app.admin(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "success");
    let download = app.admin(Method::GET, &format!("/api/builds/{id}/download")).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), artifact.as_slice());
    let logs = app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().text().await.unwrap();
    assert!(
        logs.contains("VM authenticated with OTP")
            && logs.contains("VM signaled ready")
            && logs.contains("Build progress: 40%")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_vm_token_of_an_earlier_attempt_is_refused_after_reassignment() {
    let app = spawn_app_with(|s| {
        s.lease.lease_ttl_secs = 1;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let first = app.register_worker("First", &["ios"]).await;
    let second = app.register_worker("Second", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    let otp1 = first.poll(0.0).await.unwrap()["otp"].as_str().unwrap().to_owned();
    let (_, auth) = authenticate(&app, &id, &otp1).await;
    let vm1 = auth["vm_token"].as_str().unwrap().to_owned();
    let job = second.poll(10.0).await.expect("reassigned");
    let otp2 = job["otp"].as_str().unwrap().to_owned();
    let logs = |token: String| {
        let app = &app;
        let id = id.clone();
        async move {
            vm(app, &token, Method::POST, &format!("/api/builds/{id}/logs"))
                .await
                .json(&json!({ "level": "info", "message": "x" }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(logs(vm1.clone()).await, 401, "attempt 1's VM token");
    let (status, body) = authenticate(&app, &id, &otp1).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("Invalid OTP")), "attempt 1's code");
    let (status, auth) = authenticate(&app, &id, &otp2).await;
    assert_eq!(status, 200);
    assert_eq!(logs(auth["vm_token"].as_str().unwrap().to_owned()).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn one_time_codes_are_checked_and_vm_tokens_are_bound_to_their_build() {
    let app = spawn_app_with(|s| s.lease.otp_ttl_secs = 1).await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (a, _) = app.submit_ok(b"a").await;
    let (b, _) = app.submit_ok(b"b").await;
    let otp_a = worker.poll(0.0).await.unwrap()["otp"].as_str().unwrap().to_owned();
    // The pending build holds no code.
    let (status, body) = authenticate(&app, &b, &otp_a).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("No OTP configured for this build")));
    let (status, body) = authenticate(&app, &a, "not-the-code").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("Invalid OTP")));
    let response =
        app.anon(Method::POST, &format!("/api/builds/{a}/authenticate")).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "Missing required parameter: otp");
    let (status, _) = authenticate(&app, "AAAAAAAAAAAAAAAAAAAAA", &otp_a).await;
    assert_eq!(status, 404);
    // A retry after a lost answer still works; the newest token replaces the first.
    let (status, first) = authenticate(&app, &a, &otp_a).await;
    assert_eq!(status, 200);
    let (status, second) = authenticate(&app, &a, &otp_a).await;
    assert_eq!(status, 200);
    let token = second["vm_token"].as_str().unwrap().to_owned();
    let old = first["vm_token"].as_str().unwrap().to_owned();
    let on = |build: &str, token: &str| {
        app.anon(Method::POST, &format!("/api/builds/{build}/logs"))
            .header("X-VM-Token", token)
            .json(&json!({ "level": "info", "message": "x" }))
    };
    assert_eq!(on(&a, &token).send().await.unwrap().status(), 200);
    assert_eq!(on(&a, &old).send().await.unwrap().status(), 401, "replaced");
    assert_eq!(on(&b, &token).send().await.unwrap().status(), 401, "a token of build a on build b");
    // The code expires.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = authenticate(&app, &a, &otp_a).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("OTP expired")));
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT otp_hash, vm_token_hash FROM builds WHERE id = $1")
            .bind(&a)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_ne!(stored.0.as_deref(), Some(otp_a.as_str()), "codes are stored hashed");
    assert_ne!(stored.1.as_deref(), Some(token.as_str()), "tokens are stored hashed");
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_build_answers_the_w4_heartbeat_with_409() {
    let app = spawn_app().await;
    let worker = app.register_worker("W4", &["ios"]).await;
    let (id, token) = app.submit_ok(b"zip").await;
    let otp = worker.poll(0.0).await.unwrap()["otp"].as_str().unwrap().to_owned();
    let (_, auth) = authenticate(&app, &id, &otp).await;
    let vm_token = auth["vm_token"].as_str().unwrap().to_owned();
    let beat = || async {
        vm(&app, &vm_token, Method::POST, &format!("/api/builds/{id}/heartbeat?worker_id={}", worker.id))
            .await
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(beat().await, 200);
    app.anon(Method::POST, &format!("/api/builds/{id}/cancel")).header("X-Build-Token", &token).send().await.unwrap();
    assert_eq!(beat().await, 409);
    app.stop().await;
}

#[tokio::test]
async fn vm_status_tells_only_the_assigned_worker_unless_opened() {
    let app = spawn_app().await;
    let owner: WorkerClient = app.register_worker("Owner", &["ios"]).await;
    let other = app.register_worker("Other", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    owner.poll(0.0).await.unwrap();
    let path = format!("/api/builds/{id}/vm-status");
    assert_eq!(app.anon(Method::GET, &path).send().await.unwrap().status(), 401);
    assert_eq!(other.request(Method::GET, &path).send().await.unwrap().status(), 403);
    assert_eq!(owner.request(Method::GET, &path).send().await.unwrap().status(), 200);
    let legacy = app.admin(Method::GET, &format!("{path}?worker_id={}", owner.id)).send().await.unwrap();
    assert_eq!(legacy.status(), 200);
    assert_eq!(
        app.anon(Method::GET, "/api/builds/AAAAAAAAAAAAAAAAAAAAA/vm-status").send().await.unwrap().status(),
        404
    );
    app.stop().await;
}
