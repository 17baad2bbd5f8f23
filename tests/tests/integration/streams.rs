//! Build events for subscribers, live streams for people, webhooks for services.

use std::sync::Arc;
use std::time::Duration;

use freeagent_tests::{SseReader, eventually, spawn_app, spawn_app_with};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Every event of a build in the events stream, in stream order.
async fn events_of(app: &freeagent_tests::TestApp, build: &str) -> Vec<(String, Value)> {
    use async_nats::jetstream::consumer;
    let names = app.backend.queue.names();
    let stream = app.backend.queue.jetstream().get_stream(names.events_stream()).await.unwrap();
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("{}.events.build.{build}.>", names.namespace()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer.fetch().max_messages(1000).expires(Duration::from_secs(1)).messages().await.unwrap();
    while let Some(Ok(message)) = batch.next().await {
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).unwrap().to_string();
        out.push((id, serde_json::from_slice(&message.payload).unwrap()));
    }
    out
}

#[tokio::test]
async fn a_subscriber_sees_every_transition_in_order_once_even_from_a_replica_that_died() {
    let app = spawn_app_with(|s| {
        s.lease.lease_ttl_secs = 1;
        s.lease.reaper_interval_ms = 200;
    })
    .await;
    let silent = app.register_worker("Silent", &["ios"]).await;
    let worker = app.register_worker("Worker", &["ios"]).await;
    let (id, _) = app.submit_ok(b"zip").await;
    silent.poll(0.0).await.unwrap();
    worker.poll(10.0).await.expect("lease lost and reassigned");
    assert_eq!(worker.heartbeat(&id).await, 200);
    // A replica commits a transition and dies before publishing its event: the row
    // is there, nobody was woken. Every replica drains the outbox, so it still goes out.
    let mut tx = app.pool().begin().await.unwrap();
    dispatcher::store::outbox::record(&mut *tx, "build", &id, "progress_note", &json!({ "build_id": id }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (status, _) = worker.upload(&id, Some(b"ipa")).await;
    assert_eq!(status, 200);

    let expected = ["submitted", "assigned", "lease_expired", "assigned", "started", "progress_note", "completed"];
    let events = eventually(Duration::from_secs(10), || async {
        let events = events_of(&app, &id).await;
        (events.len() >= expected.len()).then_some(events)
    })
    .await
    .expect("every event published");
    let types: Vec<String> = events
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap().trim_start_matches("dev.freeagent.build.").to_owned())
        .collect();
    assert_eq!(types, expected);
    let mut ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    for (msg_id, event) in &events {
        assert_eq!(event["id"], msg_id.as_str());
        assert_eq!(event["subject"], format!("build/{id}"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected.len(), "each event once");
    app.stop().await;
}

#[tokio::test]
async fn an_sse_client_on_one_replica_follows_logs_posted_to_another_and_resumes_without_gaps() {
    let app = spawn_app().await;
    let replica = app.another_replica().await;
    let worker = app.register_worker("Mac", &["ios"]).await.via(&replica.url);
    let (id, token) = app.submit_ok(b"zip").await;
    worker.poll(0.0).await.unwrap();
    let open = |last: Option<String>| {
        let mut request =
            app.anon(Method::GET, &format!("/api/builds/{id}/logs/stream")).header("X-Build-Token", &token);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send()
    };
    let mut sse = SseReader::new(open(None).await.unwrap());
    let mut seen = Vec::new();
    // History first.
    let first = sse.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("log"));
    seen.push((
        first.id.clone().unwrap(),
        serde_json::from_str::<Value>(&first.data).unwrap()["message"].as_str().unwrap().to_owned(),
    ));
    let post = |message: String| {
        worker
            .request(Method::POST, &format!("/api/builds/{id}/logs"))
            .json(&json!({ "level": "info", "message": message }))
            .send()
    };
    for i in 0..5 {
        assert_eq!(post(format!("live {i}")).await.unwrap().status(), 200);
    }
    // Read until "live 2", then disconnect.
    loop {
        let event =
            tokio::time::timeout(Duration::from_secs(10), sse.next()).await.expect("live line in time").unwrap();
        let message = serde_json::from_str::<Value>(&event.data).unwrap()["message"].as_str().unwrap().to_owned();
        seen.push((event.id.unwrap(), message.clone()));
        if message == "live 2" {
            break;
        }
    }
    drop(sse);
    for i in 5..8 {
        post(format!("live {i}")).await.unwrap();
    }
    let last = seen.last().unwrap().0.clone();
    let mut sse = SseReader::new(open(Some(last)).await.unwrap());
    let (status, _) = worker.upload(&id, Some(b"ipa")).await;
    assert_eq!(status, 200);
    let mut ended = false;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), sse.next()).await.expect("in time") {
        if event.event.as_deref() == Some("end") {
            assert_eq!(serde_json::from_str::<Value>(&event.data).unwrap()["status"], "completed");
            ended = true;
            continue;
        }
        let message = serde_json::from_str::<Value>(&event.data).unwrap()["message"].as_str().unwrap().to_owned();
        seen.push((event.id.unwrap(), message));
    }
    assert!(ended, "the stream ends at completion");
    let messages: Vec<&str> = seen.iter().map(|(_, m)| m.as_str()).collect();
    let live: Vec<&str> = messages.iter().copied().filter(|m| m.starts_with("live")).collect();
    assert_eq!(
        live,
        ["live 0", "live 1", "live 2", "live 3", "live 4", "live 5", "live 6", "live 7"],
        "no gaps, no repeats"
    );
    assert_eq!(messages.last(), Some(&"Build completed successfully"));
    let ids: Vec<i64> = seen.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_events_stream_replays_history_and_ends_when_the_build_does() {
    let app = spawn_app().await;
    let (id, token) = app.submit_ok(b"zip").await;
    let response = app
        .anon(Method::GET, &format!("/api/builds/{id}/events"))
        .header("X-Build-Token", &token)
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    let first = sse.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("build.submitted"));
    let event: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(event["id"], first.id.clone().unwrap().as_str());
    app.admin(Method::POST, &format!("/api/builds/{id}/cancel")).send().await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(5), sse.next()).await.unwrap().unwrap();
    assert_eq!(cancelled.event.as_deref(), Some("build.cancelled"));
    let end = sse.next().await.unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    assert!(sse.next().await.is_none(), "closed");
    // Resuming after the first event gives exactly the rest.
    let response = app
        .admin(Method::GET, &format!("/api/builds/{id}/events"))
        .header("Last-Event-ID", first.id.unwrap())
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.unwrap().event.as_deref(), Some("build.cancelled"));
    assert_eq!(sse.next().await.unwrap().event.as_deref(), Some("end"));
    let bad = app
        .admin(Method::GET, &format!("/api/builds/{id}/events"))
        .header("Last-Event-ID", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let anon = app.anon(Method::GET, &format!("/api/builds/{id}/events")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}

/// A local webhook receiver that fails its first `failures` requests.
async fn receiver(
    failures: usize,
    secret: Arc<Mutex<String>>,
) -> (String, Arc<Mutex<Vec<(u16, bool, String)>>>, Arc<Mutex<Vec<String>>>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    type Shared = (Arc<Mutex<Vec<(u16, bool, String)>>>, Arc<Mutex<Vec<String>>>, Arc<Mutex<String>>, usize);
    let calls: Arc<Mutex<Vec<(u16, bool, String)>>> = Arc::default();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn handle(
        State((calls, accepted, secret, failures)): State<Shared>,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> StatusCode {
        let signature =
            headers.get("x-freeagent-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let valid = signature == dispatcher::webhooks::signature(&secret.lock().await, &body);
        let event_id = headers.get("x-freeagent-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let mut calls = calls.lock().await;
        let status = if calls.len() < failures { 500 } else { 200 };
        calls.push((status, valid, event_id.clone()));
        if status == 200 && valid {
            // The application logic: deduplicate on the event id.
            let mut accepted = accepted.lock().await;
            if !accepted.contains(&event_id) {
                accepted.push(event_id);
            }
        }
        StatusCode::from_u16(status).unwrap()
    }
    let router = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state((
        calls.clone(),
        accepted.clone(),
        secret,
        failures,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, calls, accepted)
}

fn fast_webhooks(s: &mut freeagent::cli::ServeArgs) {
    s.webhooks.webhook_backoff_ms = 50;
    s.webhooks.webhook_max_backoff_ms = 200;
    s.webhooks.webhook_interval_ms = 50;
}

#[tokio::test]
async fn a_webhook_that_fails_twice_gets_three_signed_attempts_and_one_delivery() {
    let app = spawn_app_with(fast_webhooks).await;
    let secret = Arc::new(Mutex::new(String::new()));
    let (url, calls, accepted) = receiver(2, secret.clone()).await;
    let response = app
        .admin(Method::POST, "/api/webhooks")
        .json(&json!({ "url": url, "events": ["build.submitted"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let hook: Value = response.json().await.unwrap();
    *secret.lock().await = hook["secret"].as_str().unwrap().to_owned();
    let hook_id = hook["id"].as_str().unwrap().to_owned();

    let (id, _) = app.submit_ok(b"zip").await;
    let deliveries = eventually(Duration::from_secs(15), || async {
        let list: Value = app
            .admin(Method::GET, &format!("/api/webhooks/{hook_id}/deliveries"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (list[0]["status"] == "delivered").then_some(list)
    })
    .await
    .expect("delivered");
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "only the subscribed type");
    assert_eq!(deliveries[0]["attempts"], 3);
    let history: Vec<i64> =
        deliveries[0]["history"].as_array().unwrap().iter().map(|a| a["status_code"].as_i64().unwrap()).collect();
    assert_eq!(history, [500, 500, 200]);
    let calls = calls.lock().await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(_, valid, _)| *valid), "every attempt signed");
    assert!(
        calls.iter().all(|(_, _, event)| event == deliveries[0]["event_id"].as_str().unwrap()),
        "same event id each time"
    );
    assert_eq!(accepted.lock().await.len(), 1, "delivered once to the application");
    let _ = id;
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_visibly_and_can_be_enabled_again() {
    let app = spawn_app_with(|s| {
        fast_webhooks(s);
        s.webhooks.webhook_disable_after_secs = 1;
    })
    .await;
    let (url, _, _) = receiver(usize::MAX, Arc::default()).await;
    let hook: Value = app
        .admin(Method::POST, "/api/webhooks")
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    app.submit_ok(b"zip").await;
    let disabled = eventually(Duration::from_secs(15), || async {
        let list: Value = app.admin(Method::GET, "/api/webhooks").send().await.ok()?.json().await.ok()?;
        (list[0]["enabled"] == false).then_some(list)
    })
    .await
    .expect("disabled");
    assert!(disabled[0]["disabled_at"].is_string() && disabled[0]["failing_since"].is_string());
    assert!(disabled[0].get("secret").is_none(), "secrets are not listed");
    let response = app.admin(Method::POST, &format!("/api/webhooks/{hook_id}/enable")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = app.admin(Method::GET, "/api/webhooks").send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["enabled"], true);
    for (body, status) in
        [(json!({ "url": "ftp://x" }), 400), (json!({ "url": url, "events": ["build.exploded"] }), 400)]
    {
        assert_eq!(app.admin(Method::POST, "/api/webhooks").json(&body).send().await.unwrap().status(), status);
    }
    assert_eq!(app.anon(Method::GET, "/api/webhooks").send().await.unwrap().status(), 401);
    assert_eq!(app.admin(Method::DELETE, &format!("/api/webhooks/{hook_id}")).send().await.unwrap().status(), 200);
    app.stop().await;
}
