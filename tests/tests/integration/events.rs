use std::time::Duration;

use freeagent_tests::{eventually, spawn_app};
use reqwest::Method;

#[tokio::test]
async fn state_changes_reach_the_events_stream_as_cloudevents() {
    let app = spawn_app().await;
    let (id, _) = app.submit_ok(b"zip").await;
    app.admin(Method::POST, &format!("/api/builds/{id}/cancel")).send().await.unwrap();
    let names = app.backend.queue.names().clone();
    let js = app.backend.queue.jetstream().clone();
    let mut seen = Vec::new();
    for event_type in ["submitted", "cancelled"] {
        let subject = names.event_subject("build", &id, event_type);
        let message = eventually(Duration::from_secs(10), || {
            let js = js.clone();
            let subject = subject.clone();
            let stream_name = names.events_stream();
            async move {
                let stream = js.get_stream(stream_name).await.ok()?;
                stream.get_last_raw_message_by_subject(&subject).await.ok()
            }
        })
        .await
        .unwrap_or_else(|| panic!("no {event_type} event"));
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], format!("dev.freeagent.build.{event_type}"));
        assert_eq!(event["subject"], format!("build/{id}"));
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["data"]["build_id"], id.as_str());
        assert!(event["time"].is_string());
        let event_id = event["id"].as_str().unwrap().to_owned();
        assert_eq!(message.headers.get("Nats-Msg-Id").unwrap().as_str(), event_id);
        seen.push((message.sequence, event_id));
    }
    assert!(seen[0].0 < seen[1].0, "published in commit order");
    // The publisher marks events after JetStream acknowledged them, in its own commit.
    let marked = eventually(Duration::from_secs(5), || async {
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(app.pool())
            .await
            .ok()?;
        (unpublished == 0).then_some(())
    })
    .await;
    assert!(marked.is_some(), "every event marked published");
    app.stop().await;
}
