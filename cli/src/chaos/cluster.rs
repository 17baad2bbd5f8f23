//! The processes a chaos run owns: its own `nats-server` (JetStream on disk),
//! `freeagent serve` replicas on fixed ports sharing one database, one data
//! directory and one namespace, and the database itself.
//!
//! Every process is killed with SIGKILL through its child handle (never a process
//! group), so nothing else on the machine is touched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;

use crate::bench::{free_port, url_parts};

/// Where a run keeps its files: the NATS store, the shared data directory and logs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The run's directory (kept when an invariant breaks).
    pub root: PathBuf,
}

impl Layout {
    fn nats_store(&self) -> PathBuf {
        self.root.join("nats")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }
}

/// The run's own `nats-server`, restartable on the same port and store.
pub struct Nats {
    binary: PathBuf,
    port: u16,
    layout: Layout,
    child: Option<tokio::process::Child>,
}

impl Nats {
    /// Starts `nats-server` with JetStream on a free loopback port.
    pub async fn start(binary: &Path, layout: &Layout) -> anyhow::Result<Self> {
        let mut nats = Self { binary: binary.to_owned(), port: free_port()?, layout: layout.clone(), child: None };
        nats.spawn().await?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = append(&self.layout.log("nats.log"))?;
        let child = tokio::process::Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.layout.nats_store())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async {
                // JetStream starts before the server accepts clients.
                let client = async_nats::connect(self.url()).await?;
                client.flush().await?;
                Ok::<_, anyhow::Error>(())
            };
            let last = match tokio::time::timeout(Duration::from_secs(2), ready).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 2 s".to_owned(),
            };
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("nats-server exited with {status}; see {}", self.layout.log("nats.log").display());
            }
            if Instant::now() > deadline {
                bail!("nats-server did not accept clients within 30 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the server, waits `down`, starts it again on the same port and store.
    pub async fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
        tokio::time::sleep(down).await;
        self.spawn().await
    }

    /// Stops the server.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }
}

/// What every replica shares.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The database every replica uses.
    pub database_url: String,
    /// The run's NATS server.
    pub nats_url: String,
    /// The run's namespace (streams, consumers, subjects).
    pub namespace: String,
    /// The fleet API key.
    pub api_key: String,
    /// The fleet's encryption key (base64), shared like the API key.
    pub encryption_key: String,
    /// `FREEAGENT_LEASE_TTL_SECS`: short, so killed workers' builds come back soon.
    pub lease_ttl_secs: u64,
}

/// One `freeagent serve` replica on a fixed port.
pub struct Replica {
    index: usize,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl Replica {
    /// A replica that is not started yet, on a free port.
    pub fn new(index: usize) -> anyhow::Result<Self> {
        Ok(Self { index, port: free_port()?, child: None })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the replica and waits until `/health` answers 200; a start that fails
    /// (for example while a dependency restarts) is retried until `patience` runs out.
    pub async fn start(
        &mut self,
        settings: &ReplicaSettings,
        layout: &Layout,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        loop {
            let mut child = self.spawn(settings, layout)?;
            loop {
                if let Ok(r) = http.get(format!("{}/health", self.url())).send().await
                    && r.status().is_success()
                {
                    self.child = Some(child);
                    return Ok(());
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    child.kill().await.ok();
                    bail!(
                        "replica {} did not become healthy; see {}",
                        self.index,
                        layout.log(&format!("replica-{}.log", self.index)).display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn spawn(&self, settings: &ReplicaSettings, layout: &Layout) -> anyhow::Result<tokio::process::Child> {
        let log = append(&layout.log(&format!("replica-{}.log", self.index)))?;
        tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--port", &self.port.to_string()])
            .env("DATABASE_URL", &settings.database_url)
            .env("FREEAGENT_DB_POOL_SIZE", "8")
            .env("NATS_URL", &settings.nats_url)
            .env("FREEAGENT_NAMESPACE", &settings.namespace)
            .env("FREEAGENT_DATA_DIR", layout.data_dir())
            .env("CONTROLLER_API_KEY", &settings.api_key)
            .env("FREEAGENT_ENCRYPTION_KEY", &settings.encryption_key)
            .env("FREEAGENT_LEASE_TTL_SECS", settings.lease_ttl_secs.to_string())
            .env("FREEAGENT_REAPER_INTERVAL_MS", "500")
            .env("FREEAGENT_PUBLISH_TIMEOUT_MS", "1000")
            // Kills hit builds repeatedly; failures should come from workers, not
            // from the attempt cap, so that a lost build cannot hide as "failed".
            .env("FREEAGENT_MAX_ATTEMPTS", "25")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a replica")
    }

    /// SIGKILLs the replica.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }

    /// Whether the replica exited by itself; the exit status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Stops the replica gracefully (SIGTERM), then for good.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                child.kill().await.ok();
            }
        }
    }
}

/// The run's database on the configured Postgres server.
pub struct Database {
    admin_url: String,
    name: String,
    /// The URL replicas and checks connect to.
    pub url: String,
}

impl Database {
    /// Names a fresh database beside the one `database_url` points at.
    pub fn new(database_url: &str, suffix: &str) -> anyhow::Result<Self> {
        let (base, _) = url_parts(database_url)?;
        let name = format!("freeagent_chaos_{suffix}");
        Ok(Self { admin_url: format!("{base}/postgres"), url: format!("{base}/{name}"), name })
    }

    /// Terminates every replica connection to the database
    /// (`pg_terminate_backend`); returns how many were cut.
    pub async fn terminate_connections(&self) -> anyhow::Result<i64> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        let cut: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(cut)
    }

    /// Drops the database.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

/// Finds `nats-server`: the given path, then `PATH`, then `/usr/sbin` and `/usr/local/bin`.
pub fn find_nats_server(configured: &Path) -> anyhow::Result<PathBuf> {
    if configured.components().count() > 1 {
        return Ok(configured.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")]);
    for dir in dirs {
        let candidate = dir.join(configured);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("cannot find {} (set --nats-server or FREEAGENT_CHAOS_NATS_SERVER)", configured.display())
}

fn append(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}
