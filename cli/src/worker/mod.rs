//! `freeagent worker`: a reference worker for Linux hosts (Android builds, or any
//! scripted build), speaking the token protocol of the Swift worker (W2 and later).
//!
//! It registers, long-polls, downloads and safely unpacks the source, runs the
//! configured build command in a temporary directory with a timeout, streams its
//! output as batched log lines, heartbeats, uploads the artifact matched by a glob
//! or reports the failure with the tail of the log. When the controller answers 409
//! (cancelled, lease lost) it kills the build within seconds. On SIGTERM/Ctrl-C it
//! abandons what it is building (the build goes back to the queue) and unregisters.

pub mod unpack;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{RwLock, mpsc};
use tokio_util::sync::CancellationToken;

/// Settings of `freeagent worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Controller URL (else EXPO_CONTROLLER_URL, the config file, http://localhost:3000).
    #[arg(long)]
    pub url: Option<String>,
    /// Fleet API key, used to register (else EXPO_CONTROLLER_API_KEY, CONTROLLER_API_KEY, ./data/api-key).
    /// Generated keys may start with `-`, so a value that looks like a flag is taken as the key.
    #[arg(long, hide_env_values = true, allow_hyphen_values = true)]
    pub api_key: Option<String>,
    /// Name shown to operators.
    #[arg(long, env = "FREEAGENT_WORKER_NAME", default_value = "linux-worker")]
    pub name: String,
    /// Platforms to accept (repeat for several).
    #[arg(long = "platform", default_values_t = ["android".to_owned()], value_parser = ["ios", "android"])]
    pub platforms: Vec<String>,
    /// Shell command that builds the unpacked project (run with `sh -c` in its directory,
    /// with BUILD_ID and BUILD_PLATFORM set, and FREEAGENT_CERTS when a bundle came).
    #[arg(long, env = "FREEAGENT_BUILD_COMMAND")]
    pub build_command: String,
    /// Glob (relative to the project) of the artifact to upload, e.g. `dist/*.apk`.
    #[arg(long, env = "FREEAGENT_ARTIFACT_GLOB")]
    pub artifact: String,
    /// A build running longer is killed and reported failed, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    /// Builds run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Heartbeat period while building, in seconds (also how fast a cancel is noticed).
    #[arg(long, default_value_t = 2)]
    pub heartbeat_secs: u64,
    /// Long-poll wait, in seconds.
    #[arg(long, default_value_t = 25)]
    pub poll_wait_secs: u64,
    /// Largest unpacked project, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_unpacked_bytes: u64,
    /// Where build directories are made (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Lines of output kept for failure reports.
const TAIL: usize = 30;
/// Log lines per batch.
const BATCH: usize = 50;

struct Session {
    url: String,
    key: String,
    id: String,
    token: RwLock<String>,
    http: reqwest::Client,
    args: WorkerArgs,
}

impl Session {
    async fn register(&self, id: Option<&str>) -> anyhow::Result<(String, String)> {
        let mut body = json!({
            "name": self.args.name,
            "capabilities": { "platforms": self.args.platforms, "maxConcurrentBuilds": self.args.concurrency, "os": std::env::consts::OS },
            "active_build_count": 0,
        });
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let response = self
            .http
            .post(format!("{}/api/workers/register", self.url))
            .header("X-API-Key", &self.key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {}", self.url))?;
        if !response.status().is_success() {
            bail!("registration refused ({}): {}", response.status(), response.text().await.unwrap_or_default());
        }
        let body: Value = response.json().await?;
        Ok((
            body["id"].as_str().context("no id in the answer")?.to_owned(),
            body["access_token"].as_str().context("no access_token in the answer")?.to_owned(),
        ))
    }

    async fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-Worker-Token", self.token.read().await.as_str())
    }
}

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            eprintln!("shutting down: abandoning running builds and unregistering");
            shutdown.cancel();
        });
    }
    run_until(args, shutdown).await
}

/// Runs the worker until `shutdown` fires, then abandons running builds and unregisters.
pub async fn run_until(args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = crate::client::config::resolve_url(args.url.as_deref());
    let key = crate::client::config::resolve_key(args.api_key.as_deref())
        .context("no API key: pass --api-key or set EXPO_CONTROLLER_API_KEY")?;
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let mut session =
        Session { url, key, id: String::new(), token: RwLock::new(String::new()), http, args: args.clone() };
    let (id, token) = session.register(None).await?;
    session.id = id;
    *session.token.write().await = token;
    let session = Arc::new(session);
    eprintln!("worker {} registered with {} ({})", session.id, session.url, args.platforms.join(", "));
    let slots: Vec<_> =
        (0..args.concurrency.max(1)).map(|_| tokio::spawn(slot(session.clone(), shutdown.clone()))).collect();
    for slot in slots {
        slot.await.ok();
    }
    let response = session.request(Method::POST, "/api/workers/unregister").await.send().await;
    match response {
        Ok(r) if r.status().is_success() => eprintln!("unregistered"),
        Ok(r) => eprintln!("unregister answered {}", r.status()),
        Err(e) => eprintln!("unregister failed: {e}"),
    }
    Ok(())
}

async fn slot(session: Arc<Session>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let poll = async {
            let path = format!("/api/workers/poll?wait={}", session.args.poll_wait_secs);
            session
                .request(Method::GET, &path)
                .await
                .timeout(Duration::from_secs(session.args.poll_wait_secs + 30))
                .send()
                .await
        };
        let response = tokio::select! {
            _ = shutdown.cancelled() => return,
            response = poll => response,
        };
        let job = match response {
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                // Token refused: register again under the same id.
                match session.register(Some(&session.id)).await {
                    Ok((_, token)) => *session.token.write().await = token,
                    Err(e) => eprintln!("re-registration failed: {e:#}"),
                }
                continue;
            }
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().map(|b| b["job"].clone()),
            Ok(r) => {
                eprintln!("poll answered {}", r.status());
                None
            }
            Err(e) => {
                eprintln!("poll failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let Some(job) = job.filter(|j| !j.is_null()) else { continue };
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        eprintln!("build {id}: started");
        match build(&session, &job, &shutdown).await {
            Ok(outcome) => eprintln!("build {id}: {outcome}"),
            Err(e) => {
                eprintln!("build {id}: {e:#}");
                report_failure(&session, &id, &format!("Worker error: {e:#}")).await;
            }
        }
    }
}

async fn report_failure(session: &Session, id: &str, message: &str) {
    let form = reqwest::multipart::Form::new()
        .text("build_id", id.to_owned())
        .text("worker_id", session.id.clone())
        .text("success", "false")
        .text("error_message", message.to_owned());
    if let Err(e) = session.request(Method::POST, "/api/workers/upload").await.multipart(form).send().await {
        eprintln!("build {id}: could not report the failure: {e}");
    }
}

async fn download(session: &Session, path: &str, to: &Path) -> anyhow::Result<()> {
    let response = session.request(Method::GET, path).await.send().await?;
    if !response.status().is_success() {
        bail!("{path} answered {}", response.status());
    }
    let mut file = tokio::fs::File::create(to).await?;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    Ok(())
}

/// Why a build process stopped early.
enum Stop {
    /// The controller answered 409/403: cancelled or lease lost.
    Gone,
    /// The worker is shutting down.
    Shutdown,
}

async fn build(session: &Arc<Session>, job: &Value, shutdown: &CancellationToken) -> anyhow::Result<String> {
    let id = job["id"].as_str().context("job without id")?.to_owned();
    let base = session.args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let workdir = tempfile::Builder::new().prefix("freeagent-build-").tempdir_in(base)?;
    let source_zip = workdir.path().join("source.zip");
    download(session, job["source_url"].as_str().context("job without source_url")?, &source_zip).await?;
    let project = workdir.path().join("project");
    std::fs::create_dir_all(&project)?;
    let max = session.args.max_unpacked_bytes;
    let (zip, dir) = (source_zip.clone(), project.clone());
    tokio::task::spawn_blocking(move || unpack::unpack(&zip, &dir, max)).await??;
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&session.args.build_command)
        .current_dir(&project)
        .env("BUILD_ID", &id)
        .env("BUILD_PLATFORM", job["platform"].as_str().unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(certs) = job["certs_url"].as_str() {
        let path = workdir.path().join("certs.zip");
        download(session, certs, &path).await?;
        command.env("FREEAGENT_CERTS", &path);
    }
    let mut child = command.spawn().context("cannot start the build command")?;
    let pid = child.id();
    let (lines_tx, lines_rx) = mpsc::channel::<(String, String)>(1024);
    for (pipe, level) in [
        (child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), "info"),
        (child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), "warn"),
    ] {
        let Some(pipe) = pipe else { continue };
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((level.to_owned(), line)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let gone = CancellationToken::new();
    let tail = Arc::new(tokio::sync::Mutex::new(VecDeque::with_capacity(TAIL)));
    let shipper = tokio::spawn(ship_logs(session.clone(), id.clone(), lines_rx, tail.clone(), gone.clone()));
    let beats = tokio::spawn(heartbeats(session.clone(), id.clone(), gone.clone()));

    let timeout = Duration::from_secs(session.args.timeout_secs);
    let outcome = tokio::select! {
        status = child.wait() => Ok(status?),
        _ = tokio::time::sleep(timeout) => Err(None),
        _ = gone.cancelled() => Err(Some(Stop::Gone)),
        _ = shutdown.cancelled() => Err(Some(Stop::Shutdown)),
    };
    if outcome.is_err()
        && let Some(pid) = pid
    {
        // The whole process group: the build's own children too.
        if let Ok(pgid) = i32::try_from(pid)
            && pgid > 1
        {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.wait().await;
    }
    beats.abort();
    let _ = shipper.await;
    let tail_text = tail.lock().await.iter().cloned().collect::<Vec<_>>().join("\n");
    match outcome {
        Err(Some(Stop::Gone)) => Ok("stopped: the controller cancelled it or gave it to another worker".into()),
        Err(Some(Stop::Shutdown)) => {
            let body = json!({ "build_id": id, "worker_id": session.id, "reason": "worker shutting down" });
            session.request(Method::POST, "/api/workers/abandon").await.json(&body).send().await.ok();
            Ok("abandoned: the worker is shutting down".into())
        }
        Err(None) => {
            report_failure(session, &id, &format!("Build timed out after {} s\n{tail_text}", timeout.as_secs())).await;
            Ok("timed out".into())
        }
        Ok(status) if !status.success() => {
            report_failure(session, &id, &format!("Build command failed ({status})\n{tail_text}")).await;
            Ok(format!("failed ({status})"))
        }
        Ok(_) => upload_artifact(session, &id, &project).await,
    }
}

fn refused(status: StatusCode) -> bool {
    status == StatusCode::CONFLICT || status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND
}

async fn ship_logs(
    session: Arc<Session>,
    id: String,
    mut lines: mpsc::Receiver<(String, String)>,
    tail: Arc<tokio::sync::Mutex<VecDeque<String>>>,
    gone: CancellationToken,
) {
    let path = format!("/api/builds/{id}/logs");
    let mut batch: Vec<Value> = Vec::new();
    let mut open = true;
    while open || !batch.is_empty() {
        let deadline = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(deadline);
        while open && batch.len() < BATCH {
            tokio::select! {
                line = lines.recv() => match line {
                    Some((level, message)) => {
                        let mut t = tail.lock().await;
                        if t.len() == TAIL { t.pop_front(); }
                        t.push_back(message.clone());
                        batch.push(json!({ "level": level, "message": message }));
                    }
                    None => open = false,
                },
                _ = &mut deadline => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let body = json!({ "logs": std::mem::take(&mut batch) });
        match session.request(Method::POST, &path).await.json(&body).send().await {
            Ok(r) if refused(r.status()) => gone.cancel(),
            _ => {}
        }
    }
}

async fn heartbeats(session: Arc<Session>, id: String, gone: CancellationToken) {
    let path = format!("/api/builds/{id}/heartbeat");
    loop {
        match session.request(Method::POST, &path).await.json(&json!({})).send().await {
            Ok(r) if refused(r.status()) => {
                gone.cancel();
                return;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(session.args.heartbeat_secs.max(1))).await;
    }
}

async fn upload_artifact(session: &Session, id: &str, project: &Path) -> anyhow::Result<String> {
    let pattern = project.join(&session.args.artifact);
    let found = glob::glob(&pattern.to_string_lossy())?.filter_map(Result::ok).find(|p| p.is_file());
    let Some(artifact) = found else {
        let message = format!("The build succeeded but no file matched {}", session.args.artifact);
        report_failure(session, id, &message).await;
        return Ok(message);
    };
    let len = std::fs::metadata(&artifact)?.len();
    let file = tokio::fs::File::open(&artifact).await?;
    let name = artifact.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    let part = reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)),
        len,
    )
    .file_name(name)
    .mime_str("application/octet-stream")?;
    let form = reqwest::multipart::Form::new()
        .text("build_id", id.to_owned())
        .text("worker_id", session.id.clone())
        .text("success", "true")
        .part("result", part);
    let response = session.request(Method::POST, "/api/workers/upload").await.multipart(form).send().await?;
    if response.status().is_success() {
        Ok(format!("completed ({len} bytes uploaded)"))
    } else {
        Ok(format!("upload refused ({})", response.status()))
    }
}
