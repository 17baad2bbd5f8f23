//! `freeagent demo`: the whole loop on one machine in well under a minute.
//!
//! It starts a controller (its own database, namespace and data directory on the
//! local Postgres and NATS), a reference worker running a tiny build script, submits
//! a sample project, follows its log live and downloads the artifact; then it
//! cleans everything up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use reqwest::Method;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::client::Controller;
use crate::client::commands::{ClientArgs, ClientCommand};
use crate::startup::Application;
use crate::worker::WorkerArgs;

/// Settings of `freeagent demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Postgres server to create the demo's database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/freeagent",
        hide_env_values = true
    )]
    pub database_url: String,
    /// NATS server with JetStream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Where to save the artifact.
    #[arg(long, short, default_value = "demo-app.apk")]
    pub output: PathBuf,
}

const BUILD_SCRIPT: &str = r#"#!/bin/sh
set -e
echo "Installing dependencies for $BUILD_ID"
sleep 1
echo "Bundling JavaScript"
sleep 1
echo "Assembling the Android package"
mkdir -p dist
printf 'demo artifact of build %s\n' "$BUILD_ID" > dist/app.apk
echo "Done: dist/app.apk"
"#;

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let base = args.database_url.split('?').next().unwrap_or_default();
    let base = base.rsplit_once('/').map(|(b, _)| b).context("DATABASE_URL has no database name")?;
    let database = format!("freeagent_demo_{suffix}");
    let data_dir = tempfile::tempdir()?;
    let mut settings = ServeArgs::for_test(&format!("{base}/{database}"), &format!("demo_{suffix}"), data_dir.path());
    settings.nats.nats_url = args.nats_url.clone();
    let app =
        Application::build(settings).await.context("cannot start the controller (are Postgres and NATS running?)")?;
    let url = format!("http://127.0.0.1:{}", app.port());
    let key = app.api_key().expose().to_owned();
    let (backend, stop_app) = (app.backend().clone(), app.shutdown_token());
    let server = tokio::spawn(app.run_until_stopped());
    println!("1. controller listening on {url}");

    let project = tempfile::tempdir()?;
    std::fs::write(project.path().join("app.json"), br#"{"expo":{"name":"demo","slug":"demo"}}"#)?;
    std::fs::write(project.path().join("build.sh"), BUILD_SCRIPT)?;
    std::fs::write(project.path().join(".gitignore"), b"node_modules/\n")?;

    let stop_worker = CancellationToken::new();
    let worker_args = WorkerArgs {
        url: Some(url.clone()),
        api_key: Some(key.clone()),
        name: "demo-worker".into(),
        platforms: vec!["android".into()],
        build_command: "sh build.sh".into(),
        artifact: "dist/*.apk".into(),
        timeout_secs: 60,
        concurrency: 1,
        heartbeat_secs: 2,
        poll_wait_secs: 10,
        max_unpacked_bytes: 64 * 1024 * 1024,
        work_dir: None,
    };
    let worker = tokio::spawn(crate::worker::run_until(worker_args, stop_worker.clone()));
    println!("2. a reference worker runs `sh build.sh` for android builds");

    let controller = Controller::new(Some(&url), Some(&key));
    let packed = crate::client::pack::pack_dir(project.path())?;
    let zip = tokio::fs::read(packed.file.path()).await?;
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part("source", reqwest::multipart::Part::bytes(zip).file_name("project.zip"));
    let body =
        controller.json(controller.request(Method::POST, "/api/builds/submit", None).multipart(form), "submit").await?;
    let id = body["id"].as_str().context("no build id")?.to_owned();
    println!("3. submitted build {id}; its log, live:");

    let conn = ClientArgs { url: Some(url.clone()), api_key: Some(key.clone()), json: false };
    let follow = crate::client::commands::run(ClientCommand::Logs { conn: conn.clone(), id: id.clone(), follow: true });
    tokio::time::timeout(Duration::from_secs(60), follow).await.context("the build took too long")??;
    crate::client::commands::run(ClientCommand::Download { conn, id: id.clone(), output: Some(args.output.clone()) })
        .await?;
    println!("4. artifact saved to {}", args.output.display());

    stop_worker.cancel();
    let _ = worker.await;
    stop_app.cancel();
    let _ = server.await;
    let names = backend.queue.names().clone();
    let js = backend.queue.jetstream().clone();
    let _ = js.delete_stream(names.jobs_stream()).await;
    let _ = js.delete_stream(names.events_stream()).await;
    backend.pool.close().await;
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")))
            .execute(&mut conn)
            .await;
    }
    println!("done in {:.1} s (the demo's database and streams were removed)", started.elapsed().as_secs_f64());
    Ok(())
}
