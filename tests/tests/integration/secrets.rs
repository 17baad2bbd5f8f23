//! Secrets never reach the logs, and credentials are stored only as hashes.

use std::process::Stdio;
use std::time::Duration;

use freeagent_tests::{eventually, freeagent_bin, postgres_base_url, unique_suffix};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn a_full_run_at_debug_level_logs_no_key_token_code_or_certificate() {
    let suffix = unique_suffix();
    let database = format!("fa_test_{suffix}");
    let data = tempfile::tempdir().unwrap();
    let key = dispatcher::auth::generate_token();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = tokio::process::Command::new(freeagent_bin())
        .args(["serve", "--port", &port.to_string()])
        .env("DATABASE_URL", format!("{}/{database}", postgres_base_url()))
        .env("NATS_URL", freeagent_tests::nats_url())
        .env("FREEAGENT_NAMESPACE", format!("t_{suffix}"))
        .env("FREEAGENT_DATA_DIR", data.path())
        .env("CONTROLLER_API_KEY", &key)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), || async {
        http.get(format!("{url}/health")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
    .expect("the controller starts");

    // A whole build with certificates, a VM and every credential kind.
    let p12 = b"PKCS12-SECRET-CERTIFICATE-BYTES";
    let mut bundle = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(&mut bundle);
        zip.start_file("cert.p12", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(p12).unwrap();
        zip.start_file("password.txt", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"p12-password-very-secret").unwrap();
        zip.finish().unwrap();
    }
    let form = reqwest::multipart::Form::new()
        .part("source", reqwest::multipart::Part::bytes(b"zip".to_vec()).file_name("p.zip"))
        .text("platform", "ios")
        .part("certs", reqwest::multipart::Part::bytes(bundle.into_inner()).file_name("certs.zip"));
    let submitted: Value = http
        .post(format!("{url}/api/builds/submit"))
        .header("X-API-Key", &key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let build = submitted["id"].as_str().unwrap().to_owned();
    let build_token = submitted["access_token"].as_str().unwrap().to_owned();
    let registered: Value = http
        .post(format!("{url}/api/workers/register"))
        .header("X-API-Key", &key)
        .json(&json!({ "name": "mac", "capabilities": { "platforms": ["ios"] } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let worker_token = registered["access_token"].as_str().unwrap().to_owned();
    let worker_id = registered["id"].as_str().unwrap().to_owned();
    let polled: Value = http
        .get(format!("{url}/api/workers/poll"))
        .header("X-Worker-Token", &worker_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let otp = polled["job"]["otp"].as_str().unwrap().to_owned();
    let auth: Value = http
        .post(format!("{url}/api/builds/{build}/authenticate"))
        .json(&json!({ "otp": otp }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vm_token = auth["vm_token"].as_str().unwrap().to_owned();
    let certs = http
        .get(format!("{url}/api/builds/{build}/certs-secure"))
        .header("X-VM-Token", &vm_token)
        .send()
        .await
        .unwrap();
    let certs: Value = certs.json().await.unwrap();
    let p12_b64 = certs["p12"].as_str().unwrap().to_owned();
    let keychain = certs["keychainPassword"].as_str().unwrap().to_owned();
    // Some refusals too: wrong credentials must not be echoed either.
    let wrong_key = "a-wrong-but-plausible-fleet-key-value";
    http.get(format!("{url}/api/builds")).header("X-API-Key", wrong_key).send().await.unwrap();
    http.get(format!("{url}/api/workers/poll"))
        .header("X-Worker-Token", "guessed-worker-token-value-xyz")
        .send()
        .await
        .unwrap();
    http.post(format!("{url}/api/builds/{build}/authenticate"))
        .json(&json!({ "otp": "guessed-one-time-code-123" }))
        .send()
        .await
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("build_id", build.clone())
        .text("worker_id", worker_id)
        .text("success", "true")
        .part("result", reqwest::multipart::Part::bytes(b"ipa".to_vec()).file_name("a.ipa"));
    let upload = http
        .post(format!("{url}/api/workers/upload"))
        .header("X-Worker-Token", &worker_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let status = http
        .request(Method::GET, format!("{url}/api/builds/{build}/status"))
        .header("X-Build-Token", &build_token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);

    // Stored as hashes only.
    let pool = sqlx::PgPool::connect(&format!("{}/{database}", postgres_base_url())).await.unwrap();
    let dump: String = sqlx::query_scalar(
        "SELECT concat_ws(' ', (SELECT string_agg(b::text, ' ') FROM builds b), (SELECT string_agg(w::text, ' ') FROM workers w))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    for (name, secret) in
        [("build token", &build_token), ("worker token", &worker_token), ("OTP", &otp), ("VM token", &vm_token)]
    {
        assert!(!dump.contains(secret.as_str()), "the {name} is stored in clear");
    }

    if let Some(pid) = server.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), server.wait()).await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.len() > 1000, "debug logging was on ({} bytes)", logs.len());
    assert!(logs.contains(&build), "the log does name the build (so it was captured)");
    for (name, secret) in [
        ("API key", key.as_str()),
        ("wrong API key", wrong_key),
        ("build token", &build_token),
        ("worker token", &worker_token),
        ("guessed worker token", "guessed-worker-token-value-xyz"),
        ("OTP", &otp),
        ("guessed OTP", "guessed-one-time-code-123"),
        ("VM token", &vm_token),
        ("certificate", std::str::from_utf8(p12).unwrap()),
        ("certificate (base64)", &p12_b64),
        ("certificate password", "p12-password-very-secret"),
        ("keychain password", &keychain),
    ] {
        assert!(!logs.contains(secret), "the {name} appears in the logs");
    }
    let js = async_nats::jetstream::new(async_nats::connect(freeagent_tests::nats_url()).await.unwrap());
    let _ = js.delete_stream(format!("T_{}_JOBS", suffix.to_uppercase())).await;
    let _ = js.delete_stream(format!("T_{}_EVENTS", suffix.to_uppercase())).await;
    freeagent_tests::drop_database(&database).await;
}
