use freeagent_tests::{TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use reqwest::multipart::{Form, Part};

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("error bodies are JSON");
    (status, body["error"].as_str().expect("{\"error\":\"...\"}").to_owned())
}

fn small_limits(s: &mut freeagent::cli::ServeArgs) {
    s.api.max_source_bytes = 64 * 1024;
    s.api.max_certs_bytes = 16 * 1024;
}

#[tokio::test]
async fn a_submission_is_stored_logged_and_queued_exactly_once() {
    let app = spawn_app().await;
    let source = b"PK\x03\x04 a zipped expo project".repeat(100);
    let response = app.submit(&source, "ios", Some(b"PK certs")).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(": "), "compact JSON: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(id.len(), 21);
    assert_eq!(body["status"], "pending");
    assert!(body["submitted_at"].as_i64().unwrap() > 1_700_000_000_000);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 43);

    // The row holds only the token's hash; the job was acknowledged.
    let (token_hash, queue_seq, source_bytes, certs_bytes): (String, Option<i64>, i64, Option<i64>) =
        sqlx::query_as("SELECT token_hash, queue_seq, source_bytes, certs_bytes FROM builds WHERE id = $1")
            .bind(id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_ne!(token_hash, token);
    assert!(dispatcher::auth::token_matches(&token_hash, token));
    assert_eq!(source_bytes, source.len() as i64);
    assert_eq!(certs_bytes, Some(8));
    let seq = queue_seq.expect("the publish was acknowledged");
    assert_eq!(app.queued_jobs().await, 1);

    // The job message carries the build id, on the platform's subject, with Nats-Msg-Id.
    let stream = app.backend.queue.jobs_stream().await.unwrap();
    let message = stream.get_raw_message(seq as u64).await.unwrap();
    assert_eq!(message.subject.as_str(), app.backend.queue.names().job_subject(dispatcher::model::Platform::Ios));
    let job: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(job["build_id"], id);
    assert_eq!(message.headers.get("Nats-Msg-Id").unwrap().as_str(), id);

    // Stored bytes are the uploaded bytes.
    let reader = app.backend.blobs.read(&dispatcher::blobs::BlobKey::Source(id.parse_id())).await.unwrap().unwrap();
    assert_eq!(reader.size, source.len() as u64);
    assert_eq!(app.blob_count().await, 2);

    let logs: serde_json::Value =
        app.admin(Method::GET, &format!("/api/builds/{id}/logs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(logs["logs"][0]["message"], "Build submitted");
    app.stop().await;
}

trait ParseId {
    fn parse_id(&self) -> dispatcher::model::BuildId;
}

impl ParseId for str {
    fn parse_id(&self) -> dispatcher::model::BuildId {
        dispatcher::model::BuildId::parse(self).unwrap()
    }
}

#[tokio::test]
async fn android_builds_go_to_their_own_subject() {
    let app = spawn_app().await;
    let response = app.submit(b"zip", "android", None).await;
    assert_eq!(response.status(), 200);
    let stream = app.backend.queue.jobs_stream().await.unwrap();
    let subject = app.backend.queue.names().job_subject(dispatcher::model::Platform::Android);
    let message = stream.get_last_raw_message_by_subject(&subject).await.unwrap();
    assert_eq!(message.subject.as_str(), subject);
    app.stop().await;
}

async fn assert_refused(app: &TestApp, request: reqwest::RequestBuilder, status: u16, message: &str) {
    let (got_status, got_message) = error_of(request.send().await.unwrap()).await;
    assert_eq!((got_status, got_message.as_str()), (status, message));
    app.assert_nothing_kept().await;
}

fn submit_request(app: &TestApp) -> reqwest::RequestBuilder {
    app.admin(Method::POST, "/api/builds/submit")
}

#[tokio::test]
async fn a_body_that_is_not_multipart_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    let request = submit_request(&app).json(&serde_json::json!({ "platform": "ios" }));
    assert_refused(&app, request, 400, "Content must be multipart/form-data").await;
    app.stop().await;
}

#[tokio::test]
async fn a_submission_without_source_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    let form = Form::new().text("platform", "ios").part("certs", Part::bytes(b"certs".to_vec()).file_name("certs.zip"));
    assert_refused(&app, submit_request(&app).multipart(form), 400, "Source file required").await;
    app.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_platform_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    for platform in [Some("windows"), Some("IOS"), Some(""), None] {
        let mut form = Form::new().part("source", Part::bytes(b"zip".to_vec()).file_name("p.zip"));
        if let Some(p) = platform {
            form = form.text("platform", p);
        }
        let form = form.part("certs", Part::bytes(b"certs".to_vec()).file_name("certs.zip"));
        assert_refused(&app, submit_request(&app).multipart(form), 400, "Valid platform required (ios|android)").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_source_is_refused_while_streaming_and_leaves_nothing() {
    let app = spawn_app_with(small_limits).await;
    let form = Form::new()
        .text("platform", "ios")
        .part("certs", Part::bytes(b"certs".to_vec()).file_name("certs.zip"))
        .part("source", Part::bytes(vec![7u8; 256 * 1024]).file_name("p.zip"));
    assert_refused(&app, submit_request(&app).multipart(form), 413, "Source file too large").await;
    // Exactly at the limit is fine.
    let response = app.submit(&vec![7u8; 64 * 1024], "ios", None).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_streamed_source_is_refused_the_moment_it_passes_the_limit() {
    // The body is produced slowly and never ends on its own: the answer must come
    // from the limit, not from the end of the upload.
    let app = spawn_app_with(small_limits).await;
    let chunks = futures::stream::unfold(0u32, |n| async move {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 16 * 1024])), n + 1))
    });
    let part = Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("p.zip");
    let form = Form::new().text("platform", "ios").part("source", part);
    let request = submit_request(&app).multipart(form);
    let response = tokio::time::timeout(std::time::Duration::from_secs(20), request.send())
        .await
        .expect("answered before the upload ended");
    match response {
        Ok(response) => {
            let (status, message) = error_of(response).await;
            assert_eq!((status, message.as_str()), (413, "Source file too large"));
        }
        // The server may close the connection on an endless upload after answering.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    app.assert_nothing_kept().await;
    app.stop().await;
}

#[tokio::test]
async fn oversized_certs_are_refused_and_leave_nothing() {
    let app = spawn_app_with(small_limits).await;
    let form = Form::new()
        .part("source", Part::bytes(vec![1u8; 1024]).file_name("p.zip"))
        .text("platform", "ios")
        .part("certs", Part::bytes(vec![2u8; 64 * 1024]).file_name("certs.zip"));
    assert_refused(&app, submit_request(&app).multipart(form), 413, "Certs file too large").await;
    app.stop().await;
}

#[tokio::test]
async fn missing_and_wrong_keys_are_refused_before_reading_the_upload() {
    let app = spawn_app().await;
    let form = || Form::new().part("source", Part::bytes(b"zip".to_vec()).file_name("p.zip")).text("platform", "ios");
    let anon = app.anon(Method::POST, "/api/builds/submit").multipart(form());
    assert_refused(&app, anon, 401, "Missing X-API-Key header").await;
    let wrong =
        app.anon(Method::POST, "/api/builds/submit").header("X-API-Key", "wrong-wrong-wrong-wrong").multipart(form());
    assert_refused(&app, wrong, 403, "Invalid API key").await;
    // A build token is no credential for submitting.
    let token = app.anon(Method::POST, "/api/builds/submit").header("X-Build-Token", "x".repeat(43)).multipart(form());
    assert_refused(&app, token, 401, "Missing X-API-Key header").await;
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_multipart_body_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    let body = "--XYZ\r\nContent-Disposition: form-data; name=\"source\"; filename=\"p.zip\"\r\n\r\nPK unterminated";
    let request = submit_request(&app).header("Content-Type", "multipart/form-data; boundary=XYZ").body(body);
    let (status, message) = error_of(request.send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("Malformed multipart body"), "{message}");
    app.assert_nothing_kept().await;
    app.stop().await;
}

#[tokio::test]
async fn extra_form_fields_of_the_cli_are_ignored() {
    let app = spawn_app().await;
    let form = Form::new()
        .part("source", Part::bytes(b"zip".to_vec()).file_name("project.tar.gz"))
        .text("platform", "ios")
        .part("profile", Part::bytes(b"profile".to_vec()).file_name("profile.mobileprovision"))
        .text("appleId", "someone@example.com")
        .text("applePassword", "secret");
    let response = submit_request(&app).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.blob_count().await, 1);
    app.stop().await;
}
