//! Property tests against a running controller: random, garbled and cut multipart
//! bodies to the submit route, and arbitrary credentials and ids to the
//! authenticated routes. Nothing answers 5xx; a refused submission leaves no build
//! row, no blob and no queued job; no made-up credential is ever accepted.

use std::sync::Arc;
use std::time::Duration;

use freeagent_tests::{TestApp, spawn_app};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;

/// One part of a multipart form.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    filename: Option<String>,
    body: Vec<u8>,
}

/// How a well-formed body is damaged before it is sent.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Cut(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    NoClosingBoundary,
    BareNewlines,
    Garbage(Vec<u8>),
}

/// The `Content-Type` header sent.
#[derive(Debug, Clone)]
enum Header {
    Right,
    OtherBoundary,
    NoBoundary,
    NotMultipart,
    Missing,
}

#[derive(Debug, Clone)]
struct Submission {
    boundary: String,
    parts: Vec<Part>,
    damage: Damage,
    header: Header,
}

fn part() -> impl Strategy<Value = Part> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["source", "certs", "platform", "profile", "appleId"]).prop_map(String::from),
        1 => "[a-zA-Z_\\-\"; ]{0,12}",
    ];
    let body = prop_oneof![
        2 => prop::sample::select(vec!["ios", "android", "windows", "", " ios\r\n"]).prop_map(|p| p.as_bytes().to_vec()),
        3 => prop::collection::vec(any::<u8>(), 0..400),
    ];
    (name, prop::option::of("[a-zA-Z0-9._ \"]{0,16}"), body).prop_map(|(name, filename, body)| Part {
        name,
        filename,
        body,
    })
}

/// A form that is often what a client sends (source, platform, maybe certs), with
/// random extra parts.
fn form() -> impl Strategy<Value = Vec<Part>> {
    let file = |name: &'static str| {
        prop::collection::vec(any::<u8>(), 0..400).prop_map(move |body| Part {
            name: name.to_owned(),
            filename: Some(format!("{name}.zip")),
            body,
        })
    };
    let platform = prop::sample::select(vec!["ios", "android", " ios\r\n", "windows"]).prop_map(|p| Part {
        name: "platform".into(),
        filename: None,
        body: p.as_bytes().to_vec(),
    });
    (
        prop::option::weighted(0.8, file("source")),
        prop::option::weighted(0.8, platform),
        prop::option::weighted(0.4, file("certs")),
        prop::collection::vec(part(), 0..2),
    )
        .prop_map(|(source, platform, certs, extra)| {
            source.into_iter().chain(platform).chain(certs).chain(extra).collect()
        })
}

fn submission() -> impl Strategy<Value = Submission> {
    let damage = prop_oneof![
        8 => Just(Damage::None),
        2 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(i, g)| Damage::Insert(i, g)),
        1 => Just(Damage::NoClosingBoundary),
        1 => Just(Damage::BareNewlines),
        1 => prop::collection::vec(any::<u8>(), 0..600).prop_map(Damage::Garbage),
    ];
    let header = prop_oneof![
        12 => Just(Header::Right),
        1 => Just(Header::OtherBoundary),
        1 => Just(Header::NoBoundary),
        1 => Just(Header::NotMultipart),
        1 => Just(Header::Missing),
    ];
    // Boundaries from the characters that need no quoting in the header.
    ("[A-Za-z0-9_\\-.]{1,40}", form(), damage, header).prop_map(|(boundary, parts, damage, header)| Submission {
        boundary,
        parts,
        damage,
        header,
    })
}

impl Submission {
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            out.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
            let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
            if let Some(file) = &part.filename {
                disposition.push_str(&format!("; filename=\"{file}\""));
            }
            out.extend_from_slice(disposition.as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&part.body);
            out.extend_from_slice(b"\r\n");
        }
        if !matches!(self.damage, Damage::NoClosingBoundary) {
            out.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        }
        match &self.damage {
            Damage::None | Damage::NoClosingBoundary => out,
            Damage::Cut(at) => out[..at.index(out.len() + 1)].to_vec(),
            Damage::Flip(at, byte) if !out.is_empty() => {
                let i = at.index(out.len());
                out[i] ^= byte | 1;
                out
            }
            Damage::Flip(..) => out,
            Damage::Insert(at, garbage) => {
                let i = at.index(out.len() + 1);
                out.splice(i..i, garbage.iter().copied());
                out
            }
            Damage::BareNewlines => out.iter().copied().filter(|b| *b != b'\r').collect(),
            Damage::Garbage(bytes) => bytes.clone(),
        }
    }

    fn content_type(&self) -> Option<String> {
        match self.header {
            Header::Right => Some(format!("multipart/form-data; boundary={}", self.boundary)),
            Header::OtherBoundary => Some("multipart/form-data; boundary=somethingelse".into()),
            Header::NoBoundary => Some("multipart/form-data".into()),
            Header::NotMultipart => Some("application/json".into()),
            Header::Missing => None,
        }
    }
}

/// What the controller should hold after the accepted submissions.
async fn kept(app: &TestApp) -> (i64, i64, u64) {
    let (rows, blobs): (i64, i64) = sqlx::query_as("SELECT count(*), count(*) + count(certs_bytes) FROM builds")
        .fetch_one(app.pool())
        .await
        .unwrap();
    (rows, blobs, app.queued_jobs().await)
}

/// Runs a proptest runner whose cases talk to the app (the runner is synchronous).
async fn run_against<S, F, Fut>(app: Arc<TestApp>, cases: u32, strategy: S, case: F)
where
    S: Strategy + Send + 'static,
    S::Value: Send,
    F: Fn(Arc<TestApp>, S::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let outcome = runner.run(&strategy, |value| handle.block_on(case(app.clone(), value)));
        if let Err(e) = outcome {
            panic!("{e}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbled_and_cut_submissions_never_fail_the_server_and_refused_ones_leave_nothing() {
    let app = Arc::new(spawn_app().await);
    let accepted = Arc::new(std::sync::Mutex::new((0i64, 0i64)));
    let counts = accepted.clone();
    run_against(app.clone(), 96, submission(), move |app, submission| {
        let counts = counts.clone();
        async move {
            let mut request = app.admin(Method::POST, "/api/builds/submit").body(submission.body());
            if let Some(content_type) = submission.content_type() {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let status = response.status();
            prop_assert!(status.as_u16() < 500, "{status} for {submission:?}");
            let body: serde_json::Value = response.json().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let added = if status == 200 {
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                let certs: Option<i64> = sqlx::query_scalar("SELECT certs_bytes FROM builds WHERE id = $1")
                    .bind(&id)
                    .fetch_one(app.pool())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                (1, 1 + i64::from(certs.is_some()))
            } else {
                prop_assert!(body["error"].is_string(), "{status}: {body}");
                (0, 0)
            };
            let expected = {
                let mut counts = counts.lock().unwrap();
                counts.0 += added.0;
                counts.1 += added.1;
                *counts
            };
            // A refused upload's blobs are deleted right after the answer at the latest.
            let mut now = kept(&app).await;
            for _ in 0..50 {
                if (now.0, now.1) == expected && app.blob_count().await as i64 == expected.1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                now = kept(&app).await;
            }
            prop_assert_eq!((now.0, now.1, now.2), (expected.0, expected.1, expected.0 as u64), "rows, blobs, jobs");
            prop_assert_eq!(app.blob_count().await as i64, expected.1, "blobs in the store");
            Ok(())
        }
    })
    .await;
    let (accepted, _) = *accepted.lock().unwrap();
    assert!(accepted > 0, "some generated submissions were valid");
    Arc::into_inner(app).expect("the runner is done").stop().await;
}

/// Credentials and ids a client could make up.
fn made_up() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,64}",
        "[A-Za-z0-9_-]{43}",
        Just(String::new()),
        Just("a".repeat(8192)),
        Just("../../etc/passwd".to_owned()),
    ]
}

const HEADERS: [&str; 5] = ["X-API-Key", "X-Worker-Token", "X-Build-Token", "X-VM-Token", "X-Worker-Id"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_credentials_and_ids_are_refused_and_never_fail_the_server() {
    let app = Arc::new(spawn_app().await);
    let (build, _) = app.submit_ok(b"zip").await;
    let worker = app.register_worker("mac", &["ios"]).await;
    worker.poll(0.0).await.expect("leased");
    let routes: Vec<(Method, String)> = [
        (Method::GET, "/api/builds"),
        (Method::GET, "/api/builds/{id}/status"),
        (Method::GET, "/api/builds/{id}/download"),
        (Method::POST, "/api/builds/{id}/cancel"),
        (Method::GET, "/api/workers/poll"),
        (Method::GET, "/api/builds/{id}/source"),
        (Method::GET, "/api/builds/{id}/certs-secure"),
        (Method::POST, "/api/builds/{id}/heartbeat"),
        (Method::POST, "/api/builds/{id}/telemetry"),
        (Method::POST, "/api/builds/{id}/vm-ready"),
        (Method::POST, "/api/workers/unregister"),
    ]
    .into_iter()
    .map(|(m, p)| (m, p.to_owned()))
    .collect();
    let strategy = (
        prop::sample::select(routes),
        prop::sample::subsequence(HEADERS.to_vec(), 1..=3),
        prop::collection::vec(made_up(), 3),
        prop_oneof![2 => Just(None), 1 => made_up().prop_map(Some)],
    );
    let real_build = build.clone();
    run_against(app.clone(), 160, strategy, move |app, ((method, path), headers, values, id)| {
        let build = real_build.clone();
        async move {
            let id = id.map_or(build, |made| made.bytes().map(|b| format!("%{b:02X}")).collect::<String>());
            let mut request = app.anon(method.clone(), &path.replace("{id}", &id)).header("X-Build-Id", &id);
            for (name, value) in headers.iter().zip(&values) {
                request = request.header(*name, value.as_str());
            }
            let response = request
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let status = response.status();
            prop_assert!(status.is_client_error(), "{method} {path} with {headers:?}: {status}");
            Ok(())
        }
    })
    .await;
    assert_eq!(app.stored_status(&build).await, "assigned", "no made-up credential moved the build");
    Arc::into_inner(app).expect("the runner is done").stop().await;
}
