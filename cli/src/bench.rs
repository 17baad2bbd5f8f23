//! `freeagent bench`: benchmarks that start their own controller (a child
//! `freeagent serve` with its own database, namespace and data directory), drive
//! it over real HTTP on loopback, tear everything down and print numbers.
//!
//! Numbers are printed, never asserted: this kind of machine is shared and noisy.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Arguments of `freeagent bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,

    /// Postgres server to create the benchmark's own database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/freeagent",
        hide_env_values = true
    )]
    pub database_url: String,

    /// NATS server (the benchmark uses its own namespace on it).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// Benchmark scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Idle polls (nothing queued), legacy and token auth, at 2 and 32 connections.
    IdlePoll {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        secs: u64,
    },
    /// Submissions of a 10 KiB source at 1, 2 and 32 connections.
    Submit {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        secs: u64,
    },
    /// Latency from a submit answer to a long-polling worker holding the job.
    Dispatch {
        /// Builds to time.
        #[arg(long, default_value_t = 300)]
        count: usize,
    },
    /// The whole protocol: simulated workers poll, download, heartbeat, upload.
    EndToEnd {
        /// Builds.
        #[arg(long, default_value_t = 2000)]
        builds: usize,
        /// Simulated workers.
        #[arg(long, default_value_t = 32)]
        workers: usize,
    },
    /// Thousands of long-polling workers connecting in one burst on one replica.
    Waiting {
        /// Workers.
        #[arg(long, default_value_t = 5000)]
        workers: usize,
    },
    /// Upload a large source through `POST /api/builds/submit`, download it back,
    /// and report throughput and the server's peak RSS growth.
    Upload {
        /// Size of the generated source, in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
}

/// Runs a benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Upload { size_mib } => upload(&args, size_mib).await,
        Scenario::IdlePoll { secs } => crate::bench_load::idle_poll(&args, secs).await,
        Scenario::Submit { secs } => crate::bench_load::submit(&args, secs).await,
        Scenario::Dispatch { count } => crate::bench_load::dispatch(&args, count).await,
        Scenario::EndToEnd { builds, workers } => crate::bench_load::end_to_end(&args, builds, workers).await,
        Scenario::Waiting { workers } => crate::bench_load::waiting(&args, workers).await,
    }
}

/// A controller child process with its own database, namespace and data dir.
pub(crate) struct Controller {
    child: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) key: String,
    database_url: String,
    admin_url: String,
    namespace: String,
    nats_url: String,
    data_dir: PathBuf,
}

impl Controller {
    pub(crate) async fn start(args: &BenchArgs, extra_env: &[(&str, String)]) -> anyhow::Result<Self> {
        let suffix = dispatcher::auth::generate_token().to_lowercase().replace('-', "_")[..12].to_owned();
        let namespace = format!("bench_{suffix}");
        let mut url = url_parts(&args.database_url)?;
        let admin_url = format!("{}/postgres", url.0);
        url.1 = format!("freeagent_bench_{suffix}");
        let database_url = format!("{}/{}", url.0, url.1);
        let data_dir = std::env::temp_dir().join(format!("freeagent-bench-{suffix}"));
        let port = free_port()?;
        let key = dispatcher::auth::generate_token();
        // FREEAGENT_BENCH_SERVER_WRAPPER (e.g. "heaptrack -o /tmp/heap") runs the
        // controller under a profiler.
        let wrapper = std::env::var("FREEAGENT_BENCH_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = tokio::process::Command::new(program);
                command.args(words).arg(std::env::current_exe()?);
                command
            }
            None => tokio::process::Command::new(std::env::current_exe()?),
        };
        command
            .args(["serve", "--port", &port.to_string()])
            .env("DATABASE_URL", &database_url)
            .env("NATS_URL", &args.nats_url)
            .env("FREEAGENT_NAMESPACE", &namespace)
            .env("FREEAGENT_DATA_DIR", &data_dir)
            .env("CONTROLLER_API_KEY", &key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let child = command.spawn().context("cannot start the controller")?;
        let controller = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            key,
            database_url,
            admin_url,
            namespace,
            nats_url: args.nats_url.clone(),
            data_dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/health", controller.url)).send().await
                && r.status().is_success()
            {
                return Ok(controller);
            }
            if Instant::now() > deadline {
                bail!("the controller did not become healthy within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid()
            && let Ok(pid) = i32::try_from(pid)
            && pid > 1
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Ok(client) = async_nats::connect(self.nats_url.as_str()).await {
            let js = async_nats::jetstream::new(client);
            let upper = self.namespace.to_uppercase();
            let _ = js.delete_stream(format!("{upper}_JOBS")).await;
            let _ = js.delete_stream(format!("{upper}_EVENTS")).await;
        }
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        let name = self.database_url.rsplit('/').next().unwrap_or_default().to_owned();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

/// Splits `postgres://…/db?x` into (`postgres://…`, `db`).
pub(crate) fn url_parts(url: &str) -> anyhow::Result<(String, String)> {
    let without_query = url.split('?').next().unwrap_or(url);
    let (base, db) = without_query.rsplit_once('/').context("DATABASE_URL has no database name")?;
    Ok((base.to_owned(), db.to_owned()))
}

/// A free loopback port (bound, then released).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Resident set size and its peak (VmRSS, VmHWM) of a process, in KiB.
pub(crate) fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Deterministic pseudo-random content, generated chunk by chunk (xorshift).
fn content_stream(total: u64) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    const CHUNK: u64 = 1024 * 1024;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    futures::stream::iter((0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK) as usize;
        let mut buf = Vec::with_capacity(len + 8);
        while buf.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.extend_from_slice(&state.to_le_bytes());
        }
        buf.truncate(len);
        Ok(Bytes::from(buf))
    }))
}

async fn upload(args: &BenchArgs, size_mib: u64) -> anyhow::Result<()> {
    let size = size_mib * 1024 * 1024;
    let limit = (size + 1024 * 1024).to_string();
    let controller = Controller::start(args, &[("FREEAGENT_MAX_SOURCE_BYTES", limit)]).await?;
    let result = upload_inner(&controller, size).await;
    controller.stop().await?;
    result
}

async fn upload_inner(controller: &Controller, size: u64) -> anyhow::Result<()> {
    let pid = controller.pid().context("controller exited")?;
    let (rss_before, _) = memory_kib(pid).context("cannot read the controller's memory use")?;
    let client = reqwest::Client::new();

    // Hash while sending, so the download can be checked byte for byte.
    let (hash_tx, hash_rx) = std::sync::mpsc::channel::<Bytes>();
    let hasher = std::thread::spawn(move || {
        let mut h = Sha256::new();
        for chunk in hash_rx {
            h.update(&chunk);
        }
        hex::encode(h.finalize())
    });
    let body = content_stream(size).map(move |chunk| {
        if let Ok(c) = &chunk {
            let _ = hash_tx.send(c.clone());
        }
        chunk
    });
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), size)
        .file_name("project.zip")
        .mime_str("application/zip")?;
    let form = reqwest::multipart::Form::new().text("platform", "ios").part("source", part);
    let started = Instant::now();
    let response = client
        .post(format!("{}/api/builds/submit", controller.url))
        .header("X-API-Key", &controller.key)
        .multipart(form)
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    let upload_secs = started.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("submit answered {status}: {body}");
    }
    let sent_hash = hasher.join().map_err(|_| anyhow::anyhow!("hasher panicked"))?;
    let id = body["id"].as_str().context("no id in the submit answer")?.to_owned();

    let started = Instant::now();
    let response = client
        .get(format!("{}/api/builds/{id}/download/source", controller.url))
        .header("X-API-Key", &controller.key)
        .send()
        .await?
        .error_for_status()?;
    let mut stream = response.bytes_stream();
    let mut h = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        h.update(&chunk);
    }
    let download_secs = started.elapsed().as_secs_f64();
    let (_, peak) = memory_kib(pid).context("cannot read the controller's memory use")?;
    let same = hex::encode(h.finalize()) == sent_hash && received == size;

    let mb = size as f64 / 1e6;
    println!("scenario          upload {} MiB source, download it back", size / (1024 * 1024));
    println!("upload            {:>8.1} MB/s  ({upload_secs:.2} s)", mb / upload_secs);
    println!("download          {:>8.1} MB/s  ({download_secs:.2} s)", mb / download_secs);
    println!("server RSS before {:>8.1} MiB", rss_before as f64 / 1024.0);
    println!("server RSS peak   {:>8.1} MiB", peak as f64 / 1024.0);
    println!("peak RSS growth   {:>8.1} MiB  (goal < 64 MiB)", peak.saturating_sub(rss_before) as f64 / 1024.0);
    println!("bytes identical   {same}");
    if !same {
        bail!("the downloaded source differs from the upload");
    }
    Ok(())
}
