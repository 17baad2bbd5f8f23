//! Secrets at rest: certificate bundles in the object store and webhook signing
//! secrets in Postgres are encrypted, bound to what they belong to, and a replica
//! with another key refuses them clearly instead of serving garbage or plaintext.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dispatcher::blobs::{BlobKey, Blobs};
use dispatcher::crypto::EncryptionKey;
use freeagent_tests::{TestApp, WorkerClient, eventually, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const P12: &[u8] = b"P12-PLAINTEXT-MARKER:0123456789abcdef";
const PASSWORD: &str = "hunter2-password-marker";

/// A bundle stored without compression, so its plaintext bytes appear in the zip.
fn bundle(tag: &str) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("cert.p12", stored).unwrap();
    zip.write_all(&P12.repeat(40)).unwrap();
    zip.write_all(tag.as_bytes()).unwrap();
    zip.start_file("password.txt", stored).unwrap();
    zip.write_all(PASSWORD.as_bytes()).unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn id_of(text: &str) -> dispatcher::model::BuildId {
    dispatcher::model::BuildId::parse(text).unwrap()
}

async fn submit_with_certs(app: &TestApp, certs: &[u8]) -> String {
    let response = app.submit(b"PK zipped project", "ios", Some(certs)).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn assert_sealed(stored: &[u8], plaintext: &[u8]) {
    assert!(!contains(stored, P12), "the certificate is not in the stored bytes");
    assert!(!contains(stored, PASSWORD.as_bytes()), "the password is not in the stored bytes");
    assert!(!contains(stored, b"PK\x03\x04"), "no zip structure is visible");
    assert_eq!(&stored[..4], b"FAE1");
    // Header (31 bytes) and one tag per 64 KiB chunk: nothing else is added.
    assert_eq!(stored.len(), plaintext.len() + 31 + 16);
}

async fn get(worker: &WorkerClient, url: &str, path: &str) -> reqwest::Response {
    worker.via(url).request(Method::GET, path).send().await.unwrap()
}

#[tokio::test]
async fn certificate_bundles_are_encrypted_at_rest_and_served_byte_identical() {
    let app = spawn_app().await;
    let certs = bundle("first");
    let id = submit_with_certs(&app, &certs).await;

    let on_disk = std::fs::read(app.blob_file(&BlobKey::Certs(id_of(&id)))).unwrap();
    assert_sealed(&on_disk, &certs);
    let certs_bytes: i64 = sqlx::query_scalar("SELECT certs_bytes FROM builds WHERE id = $1")
        .bind(&id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(certs_bytes, certs.len() as i64, "sizes are plaintext sizes");

    let worker = app.register_worker("mac", &["ios"]).await;
    assert_eq!(worker.poll(0.0).await.unwrap()["id"], id.as_str());
    let served = get(&worker, &app.url, &format!("/api/builds/{id}/certs")).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-length"], certs.len().to_string().as_str());
    assert_eq!(served.bytes().await.unwrap(), certs, "byte-identical");
    let material: Value = get(&worker, &app.url, &format!("/api/builds/{id}/certs-secure")).await.json().await.unwrap();
    let mut expected_p12 = P12.repeat(40);
    expected_p12.extend_from_slice(b"first");
    assert_eq!(material["p12"], STANDARD.encode(expected_p12));
    assert_eq!(material["p12Password"], PASSWORD);

    // A retry gets its own copy, sealed again for the new build.
    let retried: Value =
        app.admin(Method::POST, &format!("/api/builds/{id}/retry")).send().await.unwrap().json().await.unwrap();
    let retry_id = retried["id"].as_str().unwrap().to_owned();
    let copy = std::fs::read(app.blob_file(&BlobKey::Certs(id_of(&retry_id)))).unwrap();
    assert_sealed(&copy, &certs);
    assert_ne!(copy, on_disk, "a fresh nonce, bound to the new build");
    let second = app.register_worker("mac-2", &["ios"]).await;
    assert_eq!(second.poll(0.0).await.unwrap()["id"], retry_id.as_str());
    let served = get(&second, &app.url, &format!("/api/builds/{retry_id}/certs")).await;
    assert_eq!(served.bytes().await.unwrap(), certs);
    app.stop().await;
}

async fn assert_refused_without_plaintext(response: reqwest::Response) {
    assert_eq!(response.status(), 500);
    let body = response.bytes().await.unwrap();
    assert!(!contains(&body, P12) && !contains(&body, PASSWORD.as_bytes()));
    let body: Value = serde_json::from_slice(&body).expect("a JSON error, not a stream of bytes");
    assert_eq!(body, json!({ "error": "Internal server error" }));
}

#[tokio::test]
async fn a_bundle_sealed_for_one_build_is_not_served_for_another() {
    let app = spawn_app().await;
    let a = submit_with_certs(&app, &bundle("for-a")).await;
    let b = submit_with_certs(&app, &bundle("for-b")).await;
    // Someone with write access to the store puts A's bundle where B's belongs.
    std::fs::copy(app.blob_file(&BlobKey::Certs(id_of(&a))), app.blob_file(&BlobKey::Certs(id_of(&b)))).unwrap();
    let worker = app.register_worker("mac", &["ios"]).await;
    app.lease_to(&b, &worker.id).await;
    assert_refused_without_plaintext(get(&worker, &app.url, &format!("/api/builds/{b}/certs")).await).await;
    assert_refused_without_plaintext(get(&worker, &app.url, &format!("/api/builds/{b}/certs-secure")).await).await;
    let error = app.backend.blobs.read(&BlobKey::Certs(id_of(&b))).await.err().expect("refused");
    assert!(format!("{error:#}").contains("altered, truncated or sealed for another object"), "{error:#}");
    app.stop().await;
}

#[tokio::test]
async fn a_replica_with_another_key_refuses_clearly_and_reveals_nothing() {
    let app = spawn_app().await;
    let certs = bundle("key");
    let id = submit_with_certs(&app, &certs).await;
    let worker = app.register_worker("mac", &["ios"]).await;
    app.lease_to(&id, &worker.id).await;

    let other_key = EncryptionKey::generate();
    let url = format!("file://{}", app.settings.blobs.data_dir.join("blobs").canonicalize().unwrap().display());
    let error = Blobs::open(&url, other_key).unwrap().read(&BlobKey::Certs(id_of(&id))).await.err().expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("sealed with another encryption key"), "{message}");
    assert!(message.contains("FREEAGENT_ENCRYPTION_KEY"), "{message}");

    let other = STANDARD.encode([7u8; 32]);
    let replica = app.another_replica_with(|s| s.blobs.encryption_key = Some(secrecy::SecretString::from(other))).await;
    assert_refused_without_plaintext(get(&worker, &replica.url, &format!("/api/builds/{id}/certs")).await).await;
    // The replica stays up, and the one with the right key still serves the bundle.
    assert_eq!(get(&worker, &replica.url, "/health").await.status(), 200);
    assert_eq!(get(&worker, &app.url, &format!("/api/builds/{id}/certs")).await.bytes().await.unwrap(), certs);
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_bundle_stored_in_clear_before_encryption_is_served_then_sealed_at_startup() {
    let app = spawn_app().await;
    let certs = bundle("legacy");
    let id = submit_with_certs(&app, &certs).await;
    let file = app.blob_file(&BlobKey::Certs(id_of(&id)));
    std::fs::write(&file, &certs).unwrap();
    let worker = app.register_worker("mac", &["ios"]).await;
    app.lease_to(&id, &worker.id).await;
    assert_eq!(get(&worker, &app.url, &format!("/api/builds/{id}/certs")).await.bytes().await.unwrap(), certs);

    let replica = app.another_replica().await;
    assert_sealed(&std::fs::read(&file).unwrap(), &certs);
    assert_eq!(get(&worker, &replica.url, &format!("/api/builds/{id}/certs")).await.bytes().await.unwrap(), certs);
    replica.stop().await;
    app.stop().await;
}

/// A webhook receiver that records `(path, signature, body)`.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String, Vec<u8>)>>>) {
    use axum::extract::{OriginalUri, State};
    use axum::http::HeaderMap;
    type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    async fn handle(
        State(seen): State<Seen>,
        uri: OriginalUri,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> &'static str {
        let signature = headers.get("x-freeagent-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
        seen.lock().await.push((uri.path().to_owned(), signature.to_owned(), body.to_vec()));
        "ok"
    }
    let router = axum::Router::new().route("/{hook}", axum::routing::post(handle)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn webhook_secrets_are_encrypted_at_rest_and_old_clear_ones_are_sealed_at_startup() {
    let app = spawn_app_with(|s| {
        s.webhooks.webhook_interval_ms = 50;
    })
    .await;
    let (url, seen) = receiver().await;
    let new_secret = "new-webhook-secret-marker-0001";
    let created = app
        .admin(Method::POST, "/api/webhooks")
        .json(&json!({ "url": format!("{url}/new"), "events": ["build.submitted"], "secret": new_secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let (clear, sealed): (Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT secret, secret_sealed FROM webhooks").fetch_one(app.pool()).await.unwrap();
    assert_eq!(clear, None);
    assert!(!contains(&sealed.unwrap(), new_secret.as_bytes()));

    // A row as the previous version wrote it: the secret in clear.
    let old_secret = "old-clear-webhook-secret-0002";
    sqlx::query("INSERT INTO webhooks (id, url, event_types, secret) VALUES ($1, $2, '{build.submitted}', $3)")
        .bind(uuid::Uuid::now_v7())
        .bind(format!("{url}/old"))
        .bind(old_secret)
        .execute(app.pool())
        .await
        .unwrap();
    let replica = app.another_replica().await;
    let rows: Vec<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT secret, secret_sealed FROM webhooks").fetch_all(app.pool()).await.unwrap();
    for (clear, sealed) in &rows {
        assert_eq!(clear, &None, "no secret left in clear");
        let sealed = sealed.as_deref().unwrap();
        assert!(!contains(sealed, old_secret.as_bytes()) && !contains(sealed, new_secret.as_bytes()));
    }

    // Both endpoints still get correctly signed deliveries.
    app.submit_ok(b"zip").await;
    let seen = eventually(Duration::from_secs(15), || async {
        let seen = seen.lock().await.clone();
        (seen.len() >= 2).then_some(seen)
    })
    .await
    .expect("both delivered");
    for (path, signature, body) in seen {
        let secret = if path == "/new" { new_secret } else { old_secret };
        assert_eq!(signature, dispatcher::webhooks::signature(secret, &body), "{path}");
    }
    replica.stop().await;
    app.stop().await;
}
