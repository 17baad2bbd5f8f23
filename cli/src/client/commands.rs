//! The client commands.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use super::{CliError, Controller, EXIT_FAILED, EXIT_USAGE, config};

/// Where the controller is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Controller URL (else EXPO_CONTROLLER_URL, ~/.expo-free-agent/config.json, http://localhost:3000).
    #[arg(long)]
    pub url: Option<String>,
    /// API key (else EXPO_CONTROLLER_API_KEY, CONTROLLER_API_KEY, the config file, ./data/api-key).
    /// Generated keys may start with `-`, so a value that looks like a flag is taken as the key.
    #[arg(long, hide_env_values = true, allow_hyphen_values = true)]
    pub api_key: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// Client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Submit a project directory (zipped, honouring .gitignore/.easignore) or a zip.
    Submit {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Project directory or zip file.
        path: PathBuf,
        /// Target platform.
        #[arg(long, default_value = "ios", value_parser = ["ios", "android"])]
        platform: String,
        /// Signing certificate bundle (a zip with a .p12, password.txt and profiles).
        #[arg(long)]
        certs: Option<PathBuf>,
    },
    /// Show a build's status.
    Status {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Build id.
        id: String,
        /// Keep watching until the build finishes (exit 1 if it failed).
        #[arg(long, short)]
        watch: bool,
    },
    /// Print a build's log.
    Logs {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Build id.
        id: String,
        /// Keep printing new lines until the build finishes.
        #[arg(long, short)]
        follow: bool,
    },
    /// Download a completed build's artifact.
    Download {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Build id.
        id: String,
        /// Output file (default: the name the controller gives, in this directory).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Cancel a build.
    Cancel {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Build id.
        id: String,
    },
    /// Submit a build again with the same source.
    Retry {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// Build id.
        id: String,
    },
    /// List recent builds.
    List {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// List workers.
    Workers {
        /// Controller and output options.
        #[command(flatten)]
        conn: ClientArgs,
    },
}

fn out_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn bar(len: u64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn when(value: &Value) -> String {
    value
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

impl ClientCommand {
    fn conn(&self) -> &ClientArgs {
        match self {
            ClientCommand::Submit { conn, .. }
            | ClientCommand::Status { conn, .. }
            | ClientCommand::Logs { conn, .. }
            | ClientCommand::Download { conn, .. }
            | ClientCommand::Cancel { conn, .. }
            | ClientCommand::Retry { conn, .. }
            | ClientCommand::List { conn, .. }
            | ClientCommand::Workers { conn } => conn,
        }
    }
}

/// Runs a client command.
pub async fn run(command: ClientCommand) -> Result<(), CliError> {
    let args = command.conn().clone();
    let args = &args;
    let controller = Controller::new(args.url.as_deref(), args.api_key.as_deref());
    match command {
        ClientCommand::Submit { path, platform, certs, .. } => {
            submit(&controller, args.json, &path, &platform, certs.as_deref()).await
        }
        ClientCommand::Status { id, watch, .. } => status(&controller, args.json, &id, watch).await,
        ClientCommand::Logs { id, follow, .. } => logs(&controller, args.json, &id, follow).await,
        ClientCommand::Download { id, output, .. } => download(&controller, args.json, &id, output).await,
        ClientCommand::Cancel { id, .. } => {
            let body = controller
                .json(controller.request(Method::POST, &format!("/api/builds/{id}/cancel"), Some(&id)), "cancel")
                .await?;
            if args.json {
                out_json(&body)
            } else {
                println!("Cancelled build {id}")
            }
            Ok(())
        }
        ClientCommand::Retry { id, .. } => {
            let body = controller
                .json(controller.request(Method::POST, &format!("/api/builds/{id}/retry"), Some(&id)), "retry")
                .await?;
            if let (Some(new), Some(token)) = (body["id"].as_str(), body["access_token"].as_str()) {
                config::save_token(new, token).ok();
            }
            if args.json {
                out_json(&body)
            } else {
                println!("Retried {id} as build {}", body["id"].as_str().unwrap_or("?"))
            }
            Ok(())
        }
        ClientCommand::List { limit, .. } => {
            let body = controller
                .json(controller.request(Method::GET, &format!("/api/builds?limit={limit}"), None), "list")
                .await?;
            if args.json {
                out_json(&body);
            } else {
                println!("{:<23} {:<10} {:<8} CREATED", "ID", "STATUS", "PLATFORM");
                for b in body.as_array().into_iter().flatten() {
                    println!(
                        "{:<23} {:<10} {:<8} {}",
                        b["id"].as_str().unwrap_or("?"),
                        b["status"].as_str().unwrap_or("?"),
                        b["platform"].as_str().unwrap_or("?"),
                        b["createdAt"].as_str().unwrap_or("?")
                    );
                }
            }
            Ok(())
        }
        ClientCommand::Workers { .. } => {
            let body = controller.json(controller.request(Method::GET, "/api/workers", None), "workers").await?;
            if args.json {
                out_json(&body);
            } else {
                println!("{:<23} {:<20} {:<9} {:<12} {:>5} {:>5}", "ID", "NAME", "STATUS", "PLATFORMS", "OK", "FAIL",);
                for w in body.as_array().into_iter().flatten() {
                    let platforms: Vec<&str> =
                        w["platforms"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!(
                        "{:<23} {:<20} {:<9} {:<12} {:>5} {:>5}",
                        w["id"].as_str().unwrap_or("?"),
                        w["name"].as_str().unwrap_or("?"),
                        w["status"].as_str().unwrap_or("?"),
                        platforms.join(","),
                        w["builds_completed"],
                        w["builds_failed"]
                    );
                }
            }
            Ok(())
        }
    }
}

async fn submit(
    controller: &Controller,
    json: bool,
    path: &Path,
    platform: &str,
    certs: Option<&Path>,
) -> Result<(), CliError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        CliError::new(EXIT_USAGE, format!("cannot read {}: {e}", path.display()))
            .hint("pass a project directory or a .zip file")
    })?;
    if let Some(certs) = certs
        && !certs.is_file()
    {
        return Err(CliError::new(EXIT_USAGE, format!("certificate bundle {} is not a file", certs.display())));
    }
    if !controller.has_key() {
        return Err(CliError::new(super::EXIT_AUTH, "no API key found").hint(
            "pass --api-key or set EXPO_CONTROLLER_API_KEY (a local controller keeps its key in ./data/api-key)",
        ));
    }
    let packed;
    let (zip_path, size) = if meta.is_dir() {
        packed = super::pack::pack_dir(path)
            .map_err(|e| CliError::new(EXIT_FAILED, format!("cannot zip {}: {e}", path.display())))?;
        if !json {
            eprintln!("Packed {} files ({} bytes)", packed.files, packed.bytes);
        }
        (packed.file.path().to_owned(), packed.bytes)
    } else {
        (path.to_owned(), meta.len())
    };
    let progress = bar(size, json);
    let source = file_part(&zip_path, size, "project.tar.gz", "application/gzip", Some(progress.clone())).await?;
    let mut form = reqwest::multipart::Form::new().text("platform", platform.to_owned()).part("source", source);
    if let Some(certs) = certs {
        let len = std::fs::metadata(certs).map(|m| m.len()).unwrap_or(0);
        form = form.part("certs", file_part(certs, len, "certs.zip", "application/zip", None).await?);
    }
    let request = controller.request(Method::POST, "/api/builds/submit", None).multipart(form);
    let body = controller.json(request, "submit").await;
    progress.finish_and_clear();
    let body = body?;
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    if let Some(token) = body["access_token"].as_str() {
        config::save_token(&id, token).ok();
    }
    if json {
        out_json(&body);
    } else {
        println!("Submitted build {id} ({platform})");
        println!("  follow it:   freeagent logs {id} --follow");
        println!("  download it: freeagent download {id}");
    }
    Ok(())
}

async fn file_part(
    path: &Path,
    len: u64,
    name: &'static str,
    mime: &str,
    progress: Option<ProgressBar>,
) -> Result<reqwest::multipart::Part, CliError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| CliError::new(EXIT_USAGE, format!("cannot open {}: {e}", path.display())))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
        if let (Some(p), Ok(c)) = (&progress, chunk) {
            p.inc(c.len() as u64);
        }
    });
    reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
        .file_name(name)
        .mime_str(mime)
        .map_err(|e| CliError::new(EXIT_FAILED, e.to_string()))
}

async fn fetch_status(controller: &Controller, id: &str) -> Result<Value, CliError> {
    controller.json(controller.request(Method::GET, &format!("/api/builds/{id}/status"), Some(id)), "status").await
}

fn print_status(s: &Value) {
    println!("Build {}: {}", s["id"].as_str().unwrap_or("?"), s["status"].as_str().unwrap_or("?"));
    println!("  platform   {}", s["platform"].as_str().unwrap_or("?"));
    println!("  submitted  {}", when(&s["submitted_at"]));
    println!("  started    {}", when(&s["started_at"]));
    println!("  finished   {}", when(&s["completed_at"]));
    if let Some(worker) = s["worker_id"].as_str() {
        println!("  worker     {worker}");
    }
    if let Some(error) = s["error_message"].as_str() {
        println!("  error      {error}");
    }
}

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("completed" | "failed"))
}

async fn status(controller: &Controller, json: bool, id: &str, watch: bool) -> Result<(), CliError> {
    let mut delay = Duration::from_secs(2);
    let mut last = String::new();
    loop {
        let s = fetch_status(controller, id).await?;
        let now = s["status"].as_str().unwrap_or_default().to_owned();
        if !watch {
            if json {
                out_json(&s)
            } else {
                print_status(&s)
            }
            return Ok(());
        }
        if now != last && !json {
            println!("{} {now}", chrono::Utc::now().format("%H:%M:%S"));
            last = now.clone();
        }
        if finished(&s) {
            if json {
                out_json(&s)
            } else {
                print_status(&s)
            }
            return if now == "completed" {
                Ok(())
            } else {
                Err(CliError::new(EXIT_FAILED, format!("build {id} failed")))
            };
        }
        tokio::time::sleep(delay).await;
        delay = (delay.mul_f64(1.5)).min(Duration::from_secs(30));
    }
}

fn print_line(json: bool, line: &Value) {
    if json {
        println!("{line}");
    } else {
        println!(
            "{} {:<5} {}",
            when(&line["timestamp"]),
            line["level"].as_str().unwrap_or("info").to_uppercase(),
            line["message"].as_str().unwrap_or_default()
        );
    }
}

async fn logs(controller: &Controller, json: bool, id: &str, follow: bool) -> Result<(), CliError> {
    if !follow {
        let body = controller
            .json(controller.request(Method::GET, &format!("/api/builds/{id}/logs"), Some(id)), "logs")
            .await?;
        for line in body["logs"].as_array().into_iter().flatten() {
            print_line(json, line);
        }
        return Ok(());
    }
    // Live through Server-Sent Events; older controllers without it: poll.
    let request = controller.request(Method::GET, &format!("/api/builds/{id}/logs/stream"), Some(id));
    let response = request.send().await.map_err(|e| controller.unreachable(e))?;
    if response.status().is_success() {
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let event =
                    block.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim).unwrap_or("message").to_owned();
                let data = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                match event.as_str() {
                    "log" => print_line(json, &serde_json::from_str(&data).unwrap_or(Value::Null)),
                    "end" => return finish_follow(&data, id),
                    _ => {}
                }
            }
        }
        let s = fetch_status(controller, id).await?;
        return finish_follow(&s.to_string(), id);
    }
    if response.status() != reqwest::StatusCode::NOT_FOUND {
        return Err(controller.refused(response, "logs").await);
    }
    let mut printed = 0;
    loop {
        let body = controller
            .json(controller.request(Method::GET, &format!("/api/builds/{id}/logs"), Some(id)), "logs")
            .await?;
        let lines = body["logs"].as_array().cloned().unwrap_or_default();
        for line in lines.iter().skip(printed) {
            print_line(json, line);
        }
        printed = lines.len().max(printed);
        let s = fetch_status(controller, id).await?;
        if finished(&s) {
            return finish_follow(&s.to_string(), id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn finish_follow(data: &str, id: &str) -> Result<(), CliError> {
    let status: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    match status["status"].as_str() {
        Some("completed") => Ok(()),
        Some(other) => Err(CliError::new(EXIT_FAILED, format!("build {id} {other}"))),
        None => Ok(()),
    }
}

async fn download(controller: &Controller, json: bool, id: &str, output: Option<PathBuf>) -> Result<(), CliError> {
    let s = fetch_status(controller, id).await?;
    if s["status"] != "completed" {
        return Err(CliError::new(
            EXIT_FAILED,
            format!("build {id} is {}, not completed", s["status"].as_str().unwrap_or("?")),
        )
        .hint(format!("wait for it: freeagent status {id} --watch")));
    }
    let response = controller
        .send(controller.request(Method::GET, &format!("/api/builds/{id}/download"), Some(id)), "download")
        .await?;
    let expected = response.content_length();
    let suggested = response
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .filter(|name| dispatcher::model::is_valid_id(name.replace('.', "_").as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{id}.bin"));
    let output = output.unwrap_or_else(|| PathBuf::from(suggested));
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Written beside the target and renamed at the end: a failure leaves no partial file.
    let mut temp = tempfile::Builder::new()
        .prefix(".freeagent-download-")
        .tempfile_in(dir)
        .map_err(|e| CliError::new(EXIT_USAGE, format!("cannot write in {}: {e}", dir.display())))?;
    let progress = bar(expected.unwrap_or(0), json);
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CliError::new(EXIT_FAILED, format!("download interrupted: {e}")))?;
        temp.write_all(&chunk).map_err(|e| CliError::new(EXIT_FAILED, format!("cannot write the download: {e}")))?;
        written += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if let Some(expected) = expected
        && expected != written
    {
        return Err(CliError::new(EXIT_FAILED, format!("download incomplete: {written} of {expected} bytes")));
    }
    temp.as_file().sync_all().ok();
    temp.persist(&output).map_err(|e| CliError::new(EXIT_FAILED, format!("cannot save {}: {e}", output.display())))?;
    if json {
        out_json(&serde_json::json!({ "id": id, "path": output, "bytes": written }));
    } else {
        println!("Saved {} ({written} bytes)", output.display());
    }
    Ok(())
}
