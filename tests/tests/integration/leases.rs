use std::time::Duration;

use freeagent_tests::{eventually, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

fn short_leases(ttl: u64) -> impl FnOnce(&mut freeagent::cli::ServeArgs) {
    move |s| {
        s.lease.lease_ttl_secs = ttl;
        s.lease.reaper_interval_ms = 200;
    }
}

async fn consumer_ack_pending(app: &freeagent_tests::TestApp) -> usize {
    let consumers = app.backend.queue.job_consumers().await.unwrap();
    let mut consumer = consumers[&dispatcher::model::Platform::Ios].clone();
    consumer.info().await.unwrap().num_ack_pending
}

#[tokio::test]
async fn a_silent_worker_loses_its_build_and_its_late_requests_change_nothing() {
    let app = spawn_app_with(short_leases(2)).await;
    let silent = app.register_worker("Silent", &["ios"]).await;
    let other = app.register_worker("Other", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    assert_eq!(silent.poll(0.0).await.unwrap()["id"], id.as_str());

    let job = other.poll(10.0).await.expect("the lost lease passes to the next poller");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(app.stored_owner(&id).await.as_deref(), Some(other.id.as_str()));
    let attempt: i32 =
        sqlx::query_scalar("SELECT attempt FROM builds WHERE id = $1").bind(&id).fetch_one(app.pool()).await.unwrap();
    assert_eq!(attempt, 2);

    let logs_before = app.log_count(&id).await;
    assert_eq!(silent.heartbeat(&id).await, 403);
    let log = silent
        .request(Method::POST, &format!("/api/builds/{id}/logs"))
        .json(&json!({ "level": "info", "message": "late" }));
    assert_eq!(log.send().await.unwrap().status(), 403);
    assert_eq!(silent.request(Method::GET, &format!("/api/builds/{id}/source")).send().await.unwrap().status(), 403);
    let (status, body) = silent.upload(&id, Some(b"late artifact")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = silent.upload(&id, None).await;
    assert_eq!(status, 403);

    assert_eq!(app.log_count(&id).await, logs_before, "no log line");
    assert_eq!(app.blob_count().await, 1, "only the source");
    assert!(app.backend.blobs.list("uploads").await.unwrap().is_empty());
    assert_eq!(app.stored_status(&id).await, "assigned");
    assert_eq!(app.queued_jobs().await, 1, "no ack: the job is still there");
    assert_eq!(consumer_ack_pending(&app).await, 1, "still held by the new owner");

    let (status, _) = other.upload(&id, Some(b"the real artifact")).await;
    assert_eq!(status, 200);
    let bytes =
        app.admin(Method::GET, &format!("/api/builds/{id}/download")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), b"the real artifact");
    app.stop().await;
}

#[tokio::test]
async fn a_worker_that_keeps_reporting_keeps_its_build_past_the_ack_deadline() {
    let app = spawn_app_with(short_leases(2)).await;
    let busy = app.register_worker("Busy", &["ios"]).await;
    let hungry = app.register_worker("Hungry", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    busy.poll(0.0).await.unwrap();
    let thief = {
        let hungry = hungry.clone();
        tokio::spawn(async move { hungry.poll(6.0).await })
    };
    for _ in 0..15 {
        assert_eq!(busy.heartbeat(&id).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(thief.await.unwrap().is_none(), "nobody else got the build");
    assert_eq!(app.stored_owner(&id).await.as_deref(), Some(busy.id.as_str()));
    assert_eq!(app.stored_status(&id).await, "building");
    let (status, _) = busy.upload(&id, Some(b"ipa")).await;
    assert_eq!(status, 200);
    assert_eq!(app.stored_status(&id).await, "completed");
    app.stop().await;
}

#[tokio::test]
async fn a_cancel_during_a_lease_stops_the_worker_and_refuses_its_upload() {
    let app = spawn_app_with(short_leases(30)).await;
    let worker = app.register_worker("Mac", &["ios"]).await;
    let (id, token) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    assert_eq!(worker.heartbeat(&id).await, 200);
    let response = app
        .anon(Method::POST, &format!("/api/builds/{id}/cancel"))
        .header("X-Build-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = worker
        .request(Method::POST, &format!("/api/builds/{id}/heartbeat?worker_id={}", worker.id))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "Build was cancelled");
    let (status, _) = worker.upload(&id, Some(b"too late")).await;
    assert_eq!(status, 409);
    assert!(app.backend.blobs.list("uploads").await.unwrap().is_empty());
    assert!(app.backend.blobs.list("results").await.unwrap().is_empty());
    let settled = eventually(Duration::from_secs(5), || async { (app.queued_jobs().await == 0).then_some(()) }).await;
    assert!(settled.is_some(), "the leased job was terminated");
    let status: String = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
        .bind(&worker.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(status, "idle");
    app.stop().await;
}

#[tokio::test]
async fn a_build_that_loses_all_its_leases_fails_with_a_clear_message() {
    let app = spawn_app_with(|s| {
        s.lease.lease_ttl_secs = 1;
        s.lease.max_attempts = 2;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let first = app.register_worker("First", &["ios"]).await;
    let second = app.register_worker("Second", &["ios"]).await;
    let third = app.register_worker("Third", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    first.poll(0.0).await.unwrap();
    let job = second.poll(10.0).await.expect("second attempt");
    assert_eq!(job["id"], id.as_str());
    assert!(third.poll(4.0).await.is_none(), "no third attempt");
    let failed = eventually(Duration::from_secs(10), || async {
        let status: Value =
            app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.ok()?.json().await.ok()?;
        (status["status"] == "failed").then_some(status)
    })
    .await
    .expect("failed");
    assert_eq!(failed["error_message"], "Build failed after 2 attempts: the worker stopped responding");
    let settled = eventually(Duration::from_secs(5), || async { (app.queued_jobs().await == 0).then_some(()) }).await;
    assert!(settled.is_some(), "its job was removed");
    app.stop().await;
}

#[tokio::test]
async fn the_reaper_requeues_an_expired_lease_that_nobody_picked_up() {
    let app = spawn_app_with(short_leases(1)).await;
    let silent = app.register_worker("Silent", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    silent.poll(0.0).await.unwrap();
    let requeued =
        eventually(Duration::from_secs(10), || async { (app.stored_status(&id).await == "pending").then_some(()) })
            .await;
    assert!(requeued.is_some(), "requeued by the reaper");
    let logs: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().json().await.unwrap();
    assert!(logs.to_string().contains("Lease expired: the worker stopped responding; build requeued"));
    let status: Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/status")).send().await.unwrap().json().await.unwrap();
    assert!(status["worker_id"].is_null() && status["started_at"].is_null(), "assignment cleared: {status}");
    let fresh = app.register_worker("Fresh", &["ios"]).await;
    let job = fresh.poll(5.0).await.expect("queued again");
    assert_eq!(job["id"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_build_over_the_maximum_build_time_fails() {
    let app = spawn_app_with(|s| {
        s.lease.max_build_secs = 1;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let worker = app.register_worker("Slow", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    let failed =
        eventually(Duration::from_secs(10), || async { (app.stored_status(&id).await == "failed").then_some(()) })
            .await;
    assert!(failed.is_some());
    let message: Option<String> = sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(&id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(message.as_deref(), Some("Build exceeded the maximum build time of 1 s"));
    assert_eq!(worker.heartbeat(&id).await, 409);
    app.stop().await;
}

#[tokio::test]
async fn quiet_idle_workers_go_offline_and_come_back_when_they_poll() {
    let app = spawn_app_with(|s| {
        s.lease.worker_offline_secs = 1;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let worker = app.register_worker("Sleepy", &["ios"]).await;
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM workers WHERE id = $1")
            .bind(&worker.id)
            .fetch_one(app.pool())
            .await
            .unwrap()
    };
    let offline = eventually(Duration::from_secs(10), || async { (status().await == "offline").then_some(()) }).await;
    assert!(offline.is_some());
    worker.poll(0.0).await;
    assert_eq!(status().await, "idle");
    app.stop().await;
}
