use std::time::{Duration, Instant};

use freeagent_tests::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn register_answers_every_field_the_clients_decode() {
    let app = spawn_app().await;
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&json!({ "name": "Studio", "capabilities": { "platforms": ["ios"], "maxConcurrentBuilds": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["id"].as_str().unwrap().len(), 21);
    assert_eq!(body["status"], "registered");
    assert_eq!(body["baseImageId"], "ghcr.io/sethwebster/expo-free-agent-base:0.1.23");
    assert_eq!(body["access_token"].as_str().unwrap().len(), 43);
    assert_eq!(body["message"], "Worker registered successfully");
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM workers").fetch_one(app.pool()).await.unwrap();
    assert_ne!(stored, body["access_token"].as_str().unwrap(), "only the hash is stored");

    // The installer's body: key also in the body, platform singular, and on failure
    // the placeholder id that must never be honoured.
    let installer = json!({
        "name": "Mac mini", "publicIdentifier": "x", "apiKey": app.key,
        "capabilities": { "cpuCores": 8, "memoryGB": 16, "diskGB": 500, "platform": "macos", "architecture": "arm64" },
        "id": "pending-registration",
    });
    let body: Value =
        app.admin(Method::POST, "/api/workers/register").json(&installer).send().await.unwrap().json().await.unwrap();
    assert_ne!(body["id"], "pending-registration");
    assert_eq!(body["status"], "registered");

    for (request, status) in [
        (app.anon(Method::POST, "/api/workers/register").json(&json!({ "name": "x", "capabilities": {} })), 401),
        (
            app.anon(Method::POST, "/api/workers/register")
                .header("X-API-Key", "wrong-wrong-wrong-wrong")
                .json(&json!({ "name": "x", "capabilities": {} })),
            403,
        ),
        (app.admin(Method::POST, "/api/workers/register").json(&json!({ "name": "x" })), 400),
        (
            app.admin(Method::POST, "/api/workers/register").header("Content-Type", "application/json").body("{nope"),
            400,
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn re_registration_rotates_the_token_and_keeps_the_old_one_for_a_grace_period() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&json!({ "id": worker.id, "name": "Mac", "capabilities": { "platforms": ["ios"] }, "active_build_count": 0 }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], worker.id.as_str());
    assert_eq!(body["status"], "re-registered");
    let new_token = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, worker.token);
    // Both tokens work during the grace period; polls never rotate.
    assert_eq!(worker.request(Method::GET, "/api/workers/poll").send().await.unwrap().status(), 200);
    let mut renewed = worker.clone();
    renewed.token = new_token.clone();
    let body: Value = renewed.request(Method::GET, "/api/workers/poll").send().await.unwrap().json().await.unwrap();
    assert_eq!(body["access_token"], new_token.as_str());
    // After the grace period the old token is refused with 401 (the worker re-registers).
    // Here the grace is cut short behind the controller's back, so wait out the few
    // seconds a replica trusts a token it has just seen.
    sqlx::query("UPDATE workers SET prev_token_expires_at = now() - interval '1 second'")
        .execute(app.pool())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await;
    assert_eq!(worker.request(Method::GET, "/api/workers/poll").send().await.unwrap().status(), 401);
    assert_eq!(renewed.request(Method::GET, "/api/workers/poll").send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn poll_hands_out_a_job_with_every_field_and_only_once() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let other = app.register_worker("Other", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    let response = worker.request(Method::GET, "/api/workers/poll").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["access_token"], worker.token.as_str());
    let job = &body["job"];
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["platform"], "ios");
    assert_eq!(job["source_url"], format!("/api/builds/{id}/source"));
    assert!(job["certs_url"].is_null());
    assert_eq!(job["baseImageId"], "ghcr.io/sethwebster/expo-free-agent-base:0.1.23");
    assert_eq!(job["otp"].as_str().unwrap().len(), 43);
    assert!(job["submitted_at"].is_i64());
    assert_eq!(app.stored_status(&id).await, "assigned");
    assert_eq!(app.stored_owner(&id).await.as_deref(), Some(worker.id.as_str()));
    let worker_status: String = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
        .bind(&worker.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(worker_status, "building");
    let status: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["status"], "assigned");
    assert!(status["started_at"].is_i64());

    // Nobody else gets it; its owner, polling again after a restart, gets it again.
    assert!(other.poll(0.0).await.is_none());
    let again = worker.poll(0.0).await.expect("re-delivered to its owner");
    assert_eq!(again["id"], id.as_str());
    assert_ne!(again["otp"], job["otp"], "a fresh one-time code");
    app.stop().await;
}

#[tokio::test]
async fn workers_only_get_jobs_of_their_platforms() {
    let app = spawn_app().await;
    let ios = app.register_worker("Mac", &["ios"]).await;
    let android = app.register_worker("Linux", &["android"]).await;
    let response = app.submit(b"zip", "android", Some(b"certs")).await;
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert!(ios.poll(0.0).await.is_none());
    let job = android.poll(0.0).await.expect("the android job");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["certs_url"], format!("/api/builds/{id}/certs"));
    app.stop().await;
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_matching_build_is_submitted() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    assert!(worker.poll(0.0).await.is_none(), "nothing queued yet");
    let waiting = {
        let worker = worker.clone();
        tokio::spawn(async move {
            let job = worker.poll(10.0).await;
            (job, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (id, _) = app.submit_ok(b"zip").await;
    let submitted = Instant::now();
    let (job, got) = waiting.await.unwrap();
    assert_eq!(job.expect("woken by the submission")["id"], id.as_str());
    assert!(got.duration_since(submitted) < Duration::from_secs(3), "{:?}", got.duration_since(submitted));

    // Without `wait` the answer is immediate.
    let started = Instant::now();
    assert!(worker.poll(0.0).await.is_some(), "its own build again");
    let other = app.register_worker("Other", &["ios"]).await;
    assert!(other.poll(0.0).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(2));
    let response = other.request(Method::GET, "/api/workers/poll?wait=abc").send().await.unwrap();
    assert_eq!(response.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn the_owner_downloads_source_and_certs_and_the_vm_gets_its_signing_material() {
    use std::io::Write;
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let mut bundle = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip_writer(&mut bundle);
        zip.start_file("dist.p12", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"P12").unwrap();
        zip.start_file("password.txt", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"secret\n").unwrap();
        zip.start_file("app.mobileprovision", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"PROFILE").unwrap();
        zip.finish().unwrap();
    }
    let bundle = bundle.into_inner();
    let source: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let response = app.submit(&source, "ios", Some(&bundle)).await;
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let job = worker.poll(0.0).await.unwrap();

    let response = worker.request(Method::GET, job["source_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(response.headers()["content-disposition"], format!("attachment; filename=\"{id}.zip\"").as_str());
    assert_eq!(response.bytes().await.unwrap().as_ref(), source.as_slice());

    let response = worker.request(Method::GET, job["certs_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), bundle.as_slice());

    // The V0 VM: key + X-Worker-Id + X-Build-Id.
    let secure = |build_header: Option<&str>| {
        let mut r = app
            .anon(Method::GET, &format!("/api/builds/{id}/certs-secure"))
            .header("X-API-Key", &app.key)
            .header("X-Worker-Id", &worker.id)
            .header("Accept", "application/json");
        if let Some(b) = build_header {
            r = r.header("X-Build-Id", b);
        }
        r
    };
    let response = secure(Some(&id)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let material: Value = response.json().await.unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(material["p12"].as_str().unwrap()).unwrap(), b"P12");
    assert_eq!(material["p12Password"], "secret");
    assert_eq!(b64.decode(material["keychainPassword"].as_str().unwrap()).unwrap().len(), 24);
    assert_eq!(b64.decode(material["provisioningProfiles"][0].as_str().unwrap()).unwrap(), b"PROFILE");
    assert_eq!(secure(None).send().await.unwrap().status(), 401);
    assert_eq!(secure(Some("AAAAAAAAAAAAAAAAAAAAA")).send().await.unwrap().status(), 403);
    app.stop().await;
}

fn zip_writer<W: std::io::Write + std::io::Seek>(w: W) -> zip::ZipWriter<W> {
    zip::ZipWriter::new(w)
}

#[tokio::test]
async fn a_raw_p12_uploaded_as_certs_is_a_clear_error_for_the_vm() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    app.submit(b"zip", "ios", Some(b"not a zip, a raw p12")).await;
    let job = worker.poll(0.0).await.unwrap();
    let id = job["id"].as_str().unwrap();
    let response = worker.request(Method::GET, &format!("/api/builds/{id}/certs-secure")).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("Failed to process certs file"));
    app.stop().await;
}

#[tokio::test]
async fn logs_from_the_worker_and_vm_are_stored_in_order_and_validated() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    let path = format!("/api/builds/{id}/logs");
    let single =
        worker.request(Method::POST, &path).json(&json!({ "level": "info", "message": "one" })).send().await.unwrap();
    assert_eq!(single.status(), 200);
    assert_eq!(single.json::<Value>().await.unwrap(), json!({ "success": true }));
    let batch = json!({ "logs": [
        { "level": "info", "message": "two" }, { "level": "bogus", "message": "skipped" },
        { "level": "warn", "message": "three" }, { "level": "error", "message": "four" } ] });
    let response = worker.request(Method::POST, &path).json(&batch).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "success": true, "count": 4 }));
    // V0 run-job: key + X-Worker-Id.
    let response = app
        .anon(Method::POST, &path)
        .header("X-API-Key", &app.key)
        .header("X-Worker-Id", &worker.id)
        .json(&json!({ "level": "info", "message": "five" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (body, message) in [
        (json!({ "level": "loud", "message": "x" }), "Invalid log level. Must be: info, warn, or error"),
        (json!({ "text": "x" }), "Invalid body. Expected { level, message } or { logs: [...] }"),
    ] {
        let response = worker.request(Method::POST, &path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.json::<Value>().await.unwrap()["error"], message);
    }
    let logs: Value = app.admin(Method::GET, &path).send().await.unwrap().json().await.unwrap();
    let messages: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    let tail: Vec<&str> = messages.iter().copied().skip_while(|m| *m != "one").collect();
    assert_eq!(tail, ["one", "two", "three", "four", "five"]);
    app.stop().await;
}

#[tokio::test]
async fn telemetry_from_the_vm_monitor_and_the_keyless_host_monitor_counts() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    let path = format!("/api/builds/{id}/telemetry");
    let v0 = |body: Value| {
        app.anon(Method::POST, &path)
            .header("X-API-Key", &app.key)
            .header("X-Worker-Id", &worker.id)
            .header("X-Build-Id", &id)
            .json(&body)
    };
    let response =
        v0(json!({ "type": "monitor_started", "timestamp": "2026-01-01T00:00:00Z", "data": {} })).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "ok" }));
    let beat = json!({ "type": "heartbeat", "timestamp": "2026-01-01T00:00:30Z", "data": {
        "heartbeat_count": 1, "stage": "building",
        "metrics": { "cpu_percent": 55.5, "memory_mb": 2048, "disk_percent": 40, "processes": 120 }, "uptime_seconds": 30 } });
    assert_eq!(v0(beat).send().await.unwrap().status(), 200);
    assert_eq!(app.stored_status(&id).await, "building", "first activity starts the build");
    // The host monitor: only the two ids, no key.
    let host = app
        .anon(Method::POST, &path)
        .header("X-Worker-Id", &worker.id)
        .header("X-Build-Id", &id)
        .json(&json!({ "type": "cpu_snapshot", "timestamp": "2026-01-01T00:00:05Z", "data": { "cpu_percent": 80.0, "memory_mb": 4096.0 } }));
    assert_eq!(host.send().await.unwrap().status(), 200);
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM cpu_snapshots").fetch_one(app.pool()).await.unwrap();
    assert_eq!(samples, 1);
    let response = v0(json!({ "type": "heartbeat" })).send().await.unwrap();
    assert_eq!(response.status(), 400);
    // Someone else's ids.
    let stranger = app
        .anon(Method::POST, &path)
        .header("X-Worker-Id", "someone-else")
        .header("X-Build-Id", &id)
        .json(&json!({ "type": "cpu_snapshot", "timestamp": "x", "data": {} }));
    assert_eq!(stranger.send().await.unwrap().status(), 403);
    let logs: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().json().await.unwrap();
    let text = logs.to_string();
    assert!(text.contains("[VM] Monitor started") && text.contains("[VM] Stage: building | CPU: 55.5% | Mem: 2048MB"));
    app.stop().await;
}

#[tokio::test]
async fn a_completed_build_downloads_byte_identical_and_a_retried_upload_changes_nothing() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (id, token) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    assert_eq!(worker.heartbeat(&id).await, 200);
    let artifact: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let (status, body) = worker.upload(&id, Some(&artifact)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let status: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["status"], "completed");
    assert!(status["completed_at"].is_i64());
    let download = app
        .anon(Method::GET, &format!("/api/builds/{id}/download"))
        .header("X-Build-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), artifact.as_slice());
    assert_eq!(app.queued_jobs().await, 0, "the job was acknowledged");

    // The same upload again (a lost answer): 200, no change, no second blob.
    let (status, body) = worker.upload(&id, Some(b"different bytes")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")));
    // W4's file-less success after the VM uploaded the artifact: a no-op.
    let form = reqwest::multipart::Form::new()
        .text("build_id", id.clone())
        .text("worker_id", worker.id.clone())
        .text("success", "true");
    let response = worker.request(Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let download = app.admin(Method::GET, &format!("/api/builds/{id}/download")).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().as_ref(), artifact.as_slice());
    assert_eq!(app.backend.blobs.list("results").await.unwrap().len(), 1);
    assert_eq!(app.backend.blobs.list("uploads").await.unwrap().len(), 0);
    let stats: Value = app
        .admin(Method::GET, &format!("/api/workers/{}/stats", worker.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["successfulBuilds"], 1);
    assert_eq!(stats["status"], "idle");
    let logs: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().json().await.unwrap();
    assert!(logs.to_string().contains("Build completed successfully"));
    app.stop().await;
}

#[tokio::test]
async fn a_failure_report_fails_the_build_with_its_message() {
    let app = spawn_app().await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    let (status, body) = worker.upload(&id, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("failed")));
    let status: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error_message"], "Build failed. See logs for details.");
    assert_eq!(app.queued_jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn unregister_gives_the_workers_builds_back_to_the_queue() {
    let app = spawn_app().await;
    let leaving = app.register_worker("Leaving", &["ios"]).await;
    let staying = app.register_worker("Staying", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    leaving.poll(0.0).await.unwrap();
    let response =
        leaving.request(Method::POST, "/api/workers/unregister").header("X-API-Key", &app.key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "success": true, "message": "Worker unregistered", "builds_reassigned": 1 }));
    assert_eq!(app.stored_status(&id).await, "pending");
    let status: String = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
        .bind(&leaving.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(status, "offline");
    let job = staying.poll(5.0).await.expect("requeued to another worker");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(app.queued_jobs().await, 1, "the old delivery was terminated, one message remains");

    // The W0 path: key + worker id in the path.
    let old = app.register_worker("Old", &["ios"]).await;
    let response = app.admin(Method::POST, &format!("/api/workers/{}/unregister", old.id)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["builds_reassigned"], 0);
    assert_eq!(app.admin(Method::POST, "/api/workers/nobody/unregister").send().await.unwrap().status(), 404);
    assert_eq!(app.anon(Method::POST, "/api/workers/unregister").send().await.unwrap().status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn abandon_requeues_only_the_callers_own_build() {
    let app = spawn_app().await;
    let owner = app.register_worker("Owner", &["ios"]).await;
    let thief = app.register_worker("Thief", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    owner.poll(0.0).await.unwrap();
    let body = json!({ "build_id": id, "worker_id": thief.id, "reason": "test" });
    let response = thief.request(Method::POST, "/api/workers/abandon").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(app.stored_owner(&id).await.as_deref(), Some(owner.id.as_str()));
    let response =
        owner.request(Method::POST, "/api/workers/abandon").json(&json!({ "build_id": id })).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = owner
        .request(Method::POST, "/api/workers/abandon")
        .json(&json!({ "build_id": id, "reason": "VM failed to boot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "success": true, "message": "Build requeued successfully" })
    );
    assert_eq!(app.stored_status(&id).await, "pending");
    let job = thief.poll(5.0).await.expect("requeued");
    assert_eq!(job["id"], id.as_str());
    let response = owner
        .request(Method::POST, "/api/workers/abandon")
        .json(&json!({ "build_id": "AAAAAAAAAAAAAAAAAAAAA", "reason": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}
