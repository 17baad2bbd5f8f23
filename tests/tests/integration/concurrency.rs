use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use freeagent_tests::spawn_app;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_builds_twenty_pollers_two_replicas_each_build_leased_once_completed_once() {
    let app = spawn_app().await;
    let replica = app.another_replica().await;
    const BUILDS: usize = 200;
    const POLLERS: usize = 20;

    let mut workers = Vec::new();
    for i in 0..POLLERS {
        let worker = app.register_worker(&format!("worker-{i}"), &["ios", "android"]).await;
        // Half the workers talk to each replica.
        workers.push(if i % 2 == 0 { worker } else { worker.via(&replica.url) });
    }
    let deliveries: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let accepted: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut tasks = Vec::new();
    for worker in workers {
        let (deliveries, accepted, done) = (deliveries.clone(), accepted.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let Some(job) = worker.poll(0.5).await else { continue };
                let id = job["id"].as_str().unwrap().to_owned();
                deliveries.lock().await.entry(id.clone()).or_default().push(worker.id.clone());
                let artifact = format!("artifact of {id}");
                let (status, body) = worker.upload(&id, Some(artifact.as_bytes())).await;
                assert_eq!(status, 200, "{body}");
                *accepted.lock().await.entry(id).or_default() += 1;
            }
        }));
    }
    let submitter = {
        let app_url = app.url.clone();
        let key = app.key.clone();
        let replica_url = replica.url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            for i in 0..BUILDS {
                let url = if i % 2 == 0 { &app_url } else { &replica_url };
                let platform = if i % 3 == 0 { "android" } else { "ios" };
                let form = reqwest::multipart::Form::new()
                    .part(
                        "source",
                        reqwest::multipart::Part::bytes(format!("source {i}").into_bytes()).file_name("p.zip"),
                    )
                    .text("platform", platform);
                let response = client
                    .post(format!("{url}/api/builds/submit"))
                    .header("X-API-Key", &key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                ids.push(body["id"].as_str().unwrap().to_owned());
            }
            ids
        })
    };
    let ids = submitter.await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM builds WHERE status = 'completed'")
            .fetch_one(app.pool())
            .await
            .unwrap();
        if completed as usize == BUILDS {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {completed} of {BUILDS} completed in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let deliveries = deliveries.lock().await;
    let accepted = accepted.lock().await;
    for id in &ids {
        let holders = deliveries.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(holders.len(), 1, "build {id} was leased to {holders:?}");
        assert_eq!(accepted.get(id), Some(&1), "build {id} completed {:?} times", accepted.get(id));
    }
    let completed_by_workers: i64 =
        sqlx::query_scalar("SELECT sum(builds_completed)::bigint FROM workers").fetch_one(app.pool()).await.unwrap();
    assert_eq!(completed_by_workers as usize, BUILDS, "every build counted exactly once");
    let results = app.backend.blobs.list("results").await.unwrap();
    assert_eq!(results.len(), BUILDS);
    assert_eq!(app.queued_jobs().await, 0, "every job acknowledged");
    replica.stop().await;
    app.stop().await;
}
