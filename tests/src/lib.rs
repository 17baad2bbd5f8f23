//! Test support for Free Agent Dispatcher: a real controller on port 0 with its
//! own database, its own JetStream namespace and its own data directory, plus
//! helpers that inspect (and, where a test needs a state the submitter API cannot
//! reach, arrange) Postgres, NATS and the object store directly.
//!
//! Every test talks to the real Postgres and NATS servers of the machine
//! (`TEST_DATABASE_URL`, `NATS_URL`); nothing is mocked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dispatcher::Backend;
use freeagent::cli::ServeArgs;
use freeagent::startup::Application;
use sqlx::{Connection as _, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Postgres server the tests create their databases on (no database name).
pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// NATS server of the tests.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A short random lowercase suffix for database names and namespaces.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// A running controller and everything a test needs to inspect it.
pub struct TestApp {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The fleet API key.
    pub key: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// Postgres, JetStream and blobs of this controller.
    pub backend: Backend,
    /// The settings it was started with.
    pub settings: ServeArgs,
    database: String,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _data_dir: tempfile::TempDir,
}

/// Starts a controller with default settings (fast background loops).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a controller after `configure` adjusted its settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let suffix = unique_suffix();
    let database = format!("fa_test_{suffix}");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings =
        ServeArgs::for_test(&format!("{}/{database}", postgres_base_url()), &format!("t_{suffix}"), data_dir.path());
    settings.nats.nats_url = nats_url();
    settings.api_key = Some(dispatcher::auth::generate_token());
    settings.loops.republish_interval_ms = 100;
    settings.api.stats_cache_ms = 0;
    settings.database.db_pool_size = 5;
    configure(&mut settings);
    start(settings, database, data_dir).await
}

async fn start(settings: ServeArgs, database: String, data_dir: tempfile::TempDir) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("the controller starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let key = app.api_key().expose().to_owned();
    let backend = app.backend().clone();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        key,
        client: reqwest::Client::new(),
        backend,
        settings,
        database,
        shutdown,
        server: Some(server),
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// The pool of this controller's database.
    pub fn pool(&self) -> &PgPool {
        &self.backend.pool
    }

    /// A request with the API key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url)).header("X-API-Key", &self.key)
    }

    /// A request without credentials.
    pub fn anon(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Submits a source (and optional certs) with the API key.
    pub async fn submit(&self, source: &[u8], platform: &str, certs: Option<&[u8]>) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new()
            .part(
                "source",
                reqwest::multipart::Part::bytes(source.to_vec())
                    .file_name("project.tar.gz")
                    .mime_str("application/gzip")
                    .unwrap(),
            )
            .text("platform", platform.to_owned());
        if let Some(certs) = certs {
            form = form.part("certs", reqwest::multipart::Part::bytes(certs.to_vec()).file_name("certs.zip"));
        }
        self.admin(reqwest::Method::POST, "/api/builds/submit").multipart(form).send().await.unwrap()
    }

    /// Submits and returns `(id, build token)`; panics unless the answer is 200.
    pub async fn submit_ok(&self, source: &[u8]) -> (String, String) {
        let response = self.submit(source, "ios", None).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        (body["id"].as_str().unwrap().to_owned(), body["access_token"].as_str().unwrap().to_owned())
    }

    /// Where a blob of the default local object store lives on disk (tests read
    /// and plant stored bytes there, as an operator with disk access could).
    pub fn blob_file(&self, key: &dispatcher::blobs::BlobKey) -> PathBuf {
        self.settings.blobs.data_dir.join("blobs").join(key.path().as_ref())
    }

    /// Rows in `builds`.
    pub async fn build_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM builds").fetch_one(self.pool()).await.unwrap()
    }

    /// Stored blobs of every kind (sources, certs, results).
    pub async fn blob_count(&self) -> usize {
        let mut n = 0;
        for folder in ["sources", "certs", "results"] {
            n += self.backend.blobs.list(folder).await.unwrap().len();
        }
        n
    }

    /// Messages in the jobs stream.
    pub async fn queued_jobs(&self) -> u64 {
        let mut stream = self.backend.queue.jobs_stream().await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Asserts that nothing at all was kept: no row, no blob, no queued job.
    pub async fn assert_nothing_kept(&self) {
        // Blob deletion of a refused upload may finish just after the answer.
        for _ in 0..50 {
            if self.blob_count().await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.build_rows().await, 0, "a build row was kept");
        assert_eq!(self.blob_count().await, 0, "a blob was kept");
        assert_eq!(self.queued_jobs().await, 0, "a job was queued");
    }

    /// Inserts a worker directly (registration belongs to the agent bridge).
    pub async fn insert_worker(&self, id: &str, name: &str, status: &str) {
        sqlx::query("INSERT INTO workers (id, name, status, platforms) VALUES ($1, $2, $3, '{ios,android}')")
            .bind(id)
            .bind(name)
            .bind(status)
            .execute(self.pool())
            .await
            .unwrap();
    }

    /// Puts a build into a leased state held by `worker`, as a poll would.
    pub async fn lease_to(&self, build: &str, worker: &str) {
        sqlx::query(
            "UPDATE builds SET status = 'assigned', worker_id = $2, attempt = attempt + 1,
                    assigned_at = now(), lease_reply = '$JS.ACK.test.none', lease_expires_at = now() + interval '2 minutes'
             WHERE id = $1",
        )
        .bind(build)
        .bind(worker)
        .execute(self.pool())
        .await
        .unwrap();
        sqlx::query("UPDATE workers SET status = 'building' WHERE id = $1")
            .bind(worker)
            .execute(self.pool())
            .await
            .unwrap();
    }

    /// Completes a leased build with `artifact` stored as its attempt's result.
    pub async fn complete_with(&self, build: &str, artifact: &[u8]) {
        let id = dispatcher::model::BuildId::parse(build).unwrap();
        let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM builds WHERE id = $1")
            .bind(build)
            .fetch_one(self.pool())
            .await
            .unwrap();
        let key = dispatcher::blobs::BlobKey::Result { build: id, attempt };
        let mut writer = self.backend.blobs.writer(&key, u64::MAX).await.unwrap();
        writer.write(artifact).await.unwrap();
        writer.finish().await.unwrap();
        sqlx::query(
            "UPDATE builds SET status = 'completed', completed_at = now(), result_key = $2, result_bytes = $3,
                    lease_reply = NULL WHERE id = $1",
        )
        .bind(build)
        .bind(key.path().to_string())
        .bind(artifact.len() as i64)
        .execute(self.pool())
        .await
        .unwrap();
    }

    /// Stops the controller gracefully and drops its database and streams.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        let js = self.backend.queue.jetstream().clone();
        let names = self.backend.queue.names().clone();
        let _ = js.delete_stream(names.jobs_stream()).await;
        let _ = js.delete_stream(names.events_stream()).await;
        self.backend.pool.close().await;
        drop_database(&self.database).await;
    }
}

/// Drops a test database (forcefully: a stopped controller may still hold connections).
pub async fn drop_database(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base_url())).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A NATS server of the test's own (own port, own storage), to stop and restart.
pub struct OwnNats {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    store: PathBuf,
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl OwnNats {
    /// Starts `nats-server -js` on a free port with its own storage directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut nats = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store: dir.path().to_owned(),
            child: None,
            _dir: dir,
        };
        nats.restart();
        nats
    }

    /// Starts the server again (same port, same storage).
    pub fn restart(&mut self) {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| find_nats_server());
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// Stops the server (SIGKILL, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_nats_server() -> String {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    "nats-server".to_owned()
}

fn wait_for_port(port: u16, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// Polls `check` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker speaking the token protocol (W2 and later) to a controller.
#[derive(Clone)]
pub struct WorkerClient {
    /// Controller base URL.
    pub url: String,
    /// The worker's id.
    pub id: String,
    /// Its current token.
    pub token: String,
    /// The fleet key (register and the legacy routes).
    pub key: String,
    /// HTTP client.
    pub client: reqwest::Client,
}

impl TestApp {
    /// Registers a worker for the given platforms and returns a client for it.
    pub async fn register_worker(&self, name: &str, platforms: &[&str]) -> WorkerClient {
        let response = self
            .admin(reqwest::Method::POST, "/api/workers/register")
            .json(&serde_json::json!({
                "name": name,
                "capabilities": { "platforms": platforms, "maxConcurrentBuilds": 1, "xcode_version": "15.0" },
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        WorkerClient {
            url: self.url.clone(),
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            key: self.key.clone(),
            client: self.client.clone(),
        }
    }
}

impl WorkerClient {
    /// The same worker talking to another replica.
    pub fn via(&self, url: &str) -> WorkerClient {
        WorkerClient { url: url.to_owned(), ..self.clone() }
    }

    /// A request with the worker token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url)).header("X-Worker-Token", &self.token)
    }

    /// Polls once (`wait` seconds of long poll); returns the job, if any.
    pub async fn poll(&self, wait: f64) -> Option<serde_json::Value> {
        let response =
            self.request(reqwest::Method::GET, &format!("/api/workers/poll?wait={wait}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "poll: {}", response.text().await.unwrap_or_default());
        let body: serde_json::Value = response.json().await.unwrap();
        let job = body["job"].clone();
        (!job.is_null()).then_some(job)
    }

    /// Posts a heartbeat for a build; returns the status code.
    pub async fn heartbeat(&self, build: &str) -> u16 {
        self.request(reqwest::Method::POST, &format!("/api/builds/{build}/heartbeat?worker_id={}", self.id))
            .json(&serde_json::json!({ "progress": 50 }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Uploads a result (success with `artifact`, or failure without); returns the
    /// status code and body.
    pub async fn upload(&self, build: &str, artifact: Option<&[u8]>) -> (u16, serde_json::Value) {
        let mut form = reqwest::multipart::Form::new()
            .text("build_id", build.to_owned())
            .text("worker_id", self.id.clone())
            .text("success", if artifact.is_some() { "true" } else { "false" });
        match artifact {
            Some(bytes) => {
                form = form.part(
                    "result",
                    reqwest::multipart::Part::bytes(bytes.to_vec())
                        .file_name("app.ipa")
                        .mime_str("application/octet-stream")
                        .unwrap(),
                );
            }
            None => form = form.text("error_message", "Build failed. See logs for details."),
        }
        let response = self.request(reqwest::Method::POST, "/api/workers/upload").multipart(form).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }
}

impl TestApp {
    /// Status of a build as stored (not as shown).
    pub async fn stored_status(&self, build: &str) -> String {
        sqlx::query_scalar("SELECT status FROM builds WHERE id = $1").bind(build).fetch_one(self.pool()).await.unwrap()
    }

    /// Owner of a build as stored.
    pub async fn stored_owner(&self, build: &str) -> Option<String> {
        sqlx::query_scalar("SELECT worker_id FROM builds WHERE id = $1")
            .bind(build)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Number of log lines of a build.
    pub async fn log_count(&self, build: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM build_logs WHERE build_id = $1")
            .bind(build)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Starts a second controller (another replica) sharing this one's database,
    /// namespace and blobs.
    pub async fn another_replica(&self) -> Replica {
        self.another_replica_with(|_| {}).await
    }

    /// Starts another replica after `configure` adjusted a copy of this one's settings.
    pub async fn another_replica_with(&self, configure: impl FnOnce(&mut ServeArgs)) -> Replica {
        let mut settings = self.settings.clone();
        settings.port = 0;
        settings.api_key = Some(self.key.clone());
        configure(&mut settings);
        let app = Application::build(settings).await.expect("the replica starts");
        let url = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let server = tokio::spawn(app.run_until_stopped());
        Replica { url, shutdown, server }
    }
}

/// Another replica of a [`TestApp`].
pub struct Replica {
    /// Its base URL.
    pub url: String,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    /// Stops it gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

/// One Server-Sent Event as a test client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined.
    pub data: String,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    /// Wraps a response (asserting 200 and the SSE content type).
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { stream: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next event (comments skipped); `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { id: None, event: None, data: String::new() };
                let mut has_field = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim_start().to_owned());
                        has_field = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim_start().to_owned());
                        has_field = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        has_field = true;
                    }
                }
                if has_field {
                    return Some(event);
                }
                continue;
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }
}

/// The `freeagent` binary built next to this test binary.
pub fn freeagent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("freeagent");
    assert!(bin.exists(), "{} is missing: run `cargo test --workspace` (it builds the binary)", bin.display());
    bin
}
