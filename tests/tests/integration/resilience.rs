use std::time::Duration;

use dispatcher::model::{BuildId, Platform};
use freeagent_tests::{OwnNats, eventually, spawn_app, spawn_app_with};

#[tokio::test]
async fn submissions_accepted_while_nats_is_down_are_published_exactly_once_after_it_returns() {
    let mut nats = OwnNats::start();
    let app = spawn_app_with(|s| {
        s.nats.nats_url = nats.url.clone();
        s.nats.publish_timeout_ms = 300;
    })
    .await;
    nats.stop();

    let mut ids = Vec::new();
    for i in 0..3 {
        let response = app.submit(format!("project {i}").as_bytes(), "ios", None).await;
        assert_eq!(response.status(), 200, "accepted although NATS is down");
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM builds WHERE queue_seq IS NULL").fetch_one(app.pool()).await.unwrap();
    assert_eq!(unpublished, 3);

    nats.restart();
    let published = eventually(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM builds WHERE queue_seq IS NOT NULL")
            .fetch_one(app.pool())
            .await
            .ok()?;
        (n == 3).then_some(())
    })
    .await;
    assert!(published.is_some(), "the republisher published every build");
    // Let any publish the client buffered while disconnected land too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.queued_jobs().await, 3, "each build exactly once");
    let stream = app.backend.queue.jobs_stream().await.unwrap();
    let mut in_stream = Vec::new();
    for seq in 1..=stream.cached_info().state.last_sequence.max(3) {
        if let Ok(message) = stream.get_raw_message(seq).await {
            let job: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            in_stream.push(job["build_id"].as_str().unwrap().to_owned());
        }
    }
    in_stream.sort();
    ids.sort();
    assert_eq!(in_stream, ids);
    app.stop().await;
}

#[tokio::test]
async fn a_build_committed_by_a_replica_that_died_before_publishing_is_published() {
    let app = spawn_app().await;
    // What a crash between the commit and the publish leaves behind.
    let id = BuildId::generate();
    dispatcher::store::builds::insert_build(
        app.pool(),
        &dispatcher::store::builds::NewBuild {
            id: &id,
            platform: Platform::Android,
            token_hash: &dispatcher::auth::hash_token("t"),
            source_bytes: 3,
            certs_bytes: None,
            retry_of: None,
        },
    )
    .await
    .unwrap();
    let seq = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<i64>>("SELECT queue_seq FROM builds WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(app.pool())
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("republished");
    let stream = app.backend.queue.jobs_stream().await.unwrap();
    let message = stream.get_raw_message(seq as u64).await.unwrap();
    assert_eq!(message.subject.as_str(), app.backend.queue.names().job_subject(Platform::Android));
    assert_eq!(app.queued_jobs().await, 1);

    // Running the step again publishes nothing twice.
    let again = dispatcher::background::republish_step(&app.backend, Duration::ZERO).await.unwrap();
    assert_eq!(again, 0);
    assert_eq!(app.queued_jobs().await, 1);
    app.stop().await;
}
