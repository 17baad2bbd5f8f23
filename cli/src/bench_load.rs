//! Load scenarios of `freeagent bench`: each starts its own controller child,
//! drives it over loopback HTTP and prints a table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::bench::{BenchArgs, Controller, memory_kib};

/// Outcome of a timed load.
struct Sample {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> f64 {
        percentile(&mut self.latencies_us, p)
    }
}

fn percentile(values: &mut [u64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index] as f64 / 1000.0
}

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a plain client builds")
}

/// Runs `connections` loops of `request` for `duration`.
async fn drive<F, Fut>(connections: usize, duration: Duration, request: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let request = request.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if request(i).await {
                        ok += 1;
                        latencies.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    let mut sample = Sample { ok: 0, errors: 0, latencies_us: Vec::new(), elapsed: Duration::ZERO };
    for task in tasks {
        if let Ok((ok, errors, latencies)) = task.await {
            sample.ok += ok;
            sample.errors += errors;
            sample.latencies_us.extend(latencies);
        }
    }
    sample.elapsed = started.elapsed();
    sample
}

fn row(name: &str, connections: usize, sample: &mut Sample, goal: &str) {
    println!(
        "{name:<26} {connections:>5} {:>10.0}/s {:>9.2} ms {:>9.2} ms {:>7}   {goal}",
        sample.rate(),
        sample.pct(0.50),
        sample.pct(0.99),
        sample.errors
    );
}

fn header() {
    println!("{:<26} {:>5} {:>12} {:>12} {:>12} {:>7}   goal", "scenario", "conns", "rate", "p50", "p99", "errors");
}

async fn register(
    http: &reqwest::Client,
    c: &Controller,
    name: &str,
    platforms: &[&str],
) -> anyhow::Result<(String, String)> {
    let body: Value = http
        .post(format!("{}/api/workers/register", c.url))
        .header("X-API-Key", &c.key)
        .json(&json!({ "name": name, "capabilities": { "platforms": platforms, "maxConcurrentBuilds": 1 } }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((body["id"].as_str().context("id")?.to_owned(), body["access_token"].as_str().context("token")?.to_owned()))
}

async fn submit_once(http: &reqwest::Client, c: &Controller, source: &[u8], platform: &str) -> anyhow::Result<String> {
    let form = reqwest::multipart::Form::new()
        .part("source", reqwest::multipart::Part::bytes(source.to_vec()).file_name("project.zip"))
        .text("platform", platform.to_owned());
    let body: Value = http
        .post(format!("{}/api/builds/submit", c.url))
        .header("X-API-Key", &c.key)
        .multipart(form)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["id"].as_str().context("id")?.to_owned())
}

/// Scenario 1.
pub async fn idle_poll(args: &BenchArgs, secs: u64) -> anyhow::Result<()> {
    let c = Controller::start(args, &[]).await?;
    let result = async {
        let http = client(64);
        let mut workers = Vec::new();
        for i in 0..32 {
            workers.push(register(&http, &c, &format!("idle-{i}"), &["ios"]).await?);
        }
        let workers = Arc::new(workers);
        println!("idle poll: nothing queued; every request is a full poll answered {{\"job\":null}}");
        header();
        for connections in [2usize, 32] {
            for legacy in [true, false] {
                let (http, url, key, workers) = (http.clone(), c.url.clone(), c.key.clone(), workers.clone());
                let mut sample = drive(connections, Duration::from_secs(secs), move |i| {
                    let (id, token) = workers[i % workers.len()].clone();
                    let request = if legacy {
                        http.get(format!("{url}/api/workers/poll?worker_id={id}")).header("X-API-Key", key.clone())
                    } else {
                        http.get(format!("{url}/api/workers/poll")).header("X-Worker-Token", token)
                    };
                    async move { matches!(request.send().await, Ok(r) if r.status().is_success()) }
                })
                .await;
                let name = if legacy { "idle poll (key+worker_id)" } else { "idle poll (token)" };
                row(name, connections, &mut sample, if connections == 32 { ">= 50,000/s" } else { "" });
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}

/// Scenario 2.
pub async fn submit(args: &BenchArgs, secs: u64) -> anyhow::Result<()> {
    let c = Controller::start(args, &[]).await?;
    let result = async {
        let http = client(64);
        let source = Arc::new(vec![7u8; 10 * 1024]);
        println!("submit: 10 KiB source, multipart, durable (row + outbox committed, publish acknowledged)");
        header();
        for connections in [1usize, 2, 32] {
            let (http, url, key, source) = (http.clone(), c.url.clone(), c.key.clone(), source.clone());
            let mut sample = drive(connections, Duration::from_secs(secs), move |_| {
                let form = reqwest::multipart::Form::new()
                    .part("source", reqwest::multipart::Part::bytes(source.to_vec()).file_name("project.zip"))
                    .text("platform", "ios");
                let request =
                    http.post(format!("{url}/api/builds/submit")).header("X-API-Key", key.clone()).multipart(form);
                async move { matches!(request.send().await, Ok(r) if r.status().is_success()) }
            })
            .await;
            row("submit 10 KiB", connections, &mut sample, if connections == 32 { ">= 2,500/s" } else { "" });
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}

/// Scenario 3.
pub async fn dispatch(args: &BenchArgs, count: usize) -> anyhow::Result<()> {
    let c = Controller::start(args, &[]).await?;
    let result = async {
        let http = client(8);
        let (worker_id, token) = register(&http, &c, "dispatch", &["android"]).await?;
        let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (http, url, received, stop) = (http.clone(), c.url.clone(), received.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(r) = http
                        .get(format!("{url}/api/workers/poll?wait=20"))
                        .header("X-Worker-Token", &token)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(body) = r.json::<Value>().await else { continue };
                    let Some(id) = body["job"]["id"].as_str() else { continue };
                    received.lock().await.insert(id.to_owned(), Instant::now());
                    let form = reqwest::multipart::Form::new()
                        .text("build_id", id.to_owned())
                        .text("worker_id", worker_id.clone())
                        .text("success", "true")
                        .part("result", reqwest::multipart::Part::bytes(b"apk".to_vec()).file_name("a.apk"));
                    let _ = http
                        .post(format!("{url}/api/workers/upload"))
                        .header("X-Worker-Token", &token)
                        .multipart(form)
                        .send()
                        .await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let source = vec![1u8; 1024];
        let mut latencies = Vec::new();
        for _ in 0..count {
            let id = submit_once(&http, &c, &source, "android").await?;
            let answered = Instant::now();
            let deadline = answered + Duration::from_secs(10);
            loop {
                if let Some(at) = received.lock().await.get(&id).copied() {
                    latencies.push(at.saturating_duration_since(answered).as_micros() as u64);
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!("build {id} was not dispatched within 10 s");
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            // Let the worker finish and wait again.
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        stop.store(true, Ordering::SeqCst);
        poller.abort();
        println!("dispatch: submit answer -> long-polling worker holding the job ({count} builds, one at a time)");
        println!(
            "  p50 {:.2} ms   p99 {:.2} ms   (goal p50 <= 1 ms, p99 <= 5 ms)",
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}

/// Scenario 4.
pub async fn end_to_end(args: &BenchArgs, builds: usize, workers: usize) -> anyhow::Result<()> {
    let c = Controller::start(args, &[]).await?;
    let result = async {
        let http = client(workers + 16);
        let mut registered = Vec::new();
        for i in 0..workers {
            registered.push(register(&http, &c, &format!("e2e-{i}"), &["ios", "android"]).await?);
        }
        let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let completed: Arc<Mutex<Vec<u64>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let result = Arc::new(vec![3u8; 10 * 1024]);
        let mut tasks = Vec::new();
        for (worker_id, token) in registered {
            let (http, url, submitted, completed, done, result) =
                (http.clone(), c.url.clone(), submitted.clone(), completed.clone(), done.clone(), result.clone());
            tasks.push(tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    let Ok(r) = http
                        .get(format!("{url}/api/workers/poll?wait=2"))
                        .header("X-Worker-Token", &token)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(body) = r.json::<Value>().await else { continue };
                    let Some(id) = body["job"]["id"].as_str().map(str::to_owned) else { continue };
                    let source =
                        http.get(format!("{url}/api/builds/{id}/source")).header("X-Worker-Token", &token).send().await;
                    if let Ok(source) = source {
                        let _ = source.bytes().await;
                    }
                    let _ = http
                        .post(format!("{url}/api/builds/{id}/heartbeat?worker_id={worker_id}"))
                        .header("X-Worker-Token", &token)
                        .json(&json!({ "progress": 50 }))
                        .send()
                        .await;
                    let form = reqwest::multipart::Form::new()
                        .text("build_id", id.clone())
                        .text("worker_id", worker_id.clone())
                        .text("success", "true")
                        .part("result", reqwest::multipart::Part::bytes(result.to_vec()).file_name("app.ipa"));
                    let ok = http
                        .post(format!("{url}/api/workers/upload"))
                        .header("X-Worker-Token", &token)
                        .multipart(form)
                        .send()
                        .await;
                    if matches!(ok, Ok(r) if r.status().is_success()) {
                        let at = submitted.lock().await.get(&id).copied();
                        if let Some(at) = at {
                            completed.lock().await.push(at.elapsed().as_micros() as u64);
                        }
                    }
                }
            }));
        }
        let source = Arc::new(vec![5u8; 10 * 1024]);
        let submitters: Vec<_> = (0..8)
            .map(|s| {
                let (http, url, key, submitted, source) =
                    (http.clone(), c.url.clone(), c.key.clone(), submitted.clone(), source.clone());
                tokio::spawn(async move {
                    for i in (s..builds).step_by(8) {
                        let form = reqwest::multipart::Form::new()
                            .part("source", reqwest::multipart::Part::bytes(source.to_vec()).file_name("p.zip"))
                            .text("platform", if i % 2 == 0 { "ios" } else { "android" });
                        let t = Instant::now();
                        let Ok(r) = http
                            .post(format!("{url}/api/builds/submit"))
                            .header("X-API-Key", &key)
                            .multipart(form)
                            .send()
                            .await
                        else {
                            continue;
                        };
                        let Ok(body) = r.json::<Value>().await else { continue };
                        if let Some(id) = body["id"].as_str() {
                            submitted.lock().await.insert(id.to_owned(), t);
                        }
                    }
                })
            })
            .collect();
        for s in submitters {
            s.await.ok();
        }
        let deadline = Instant::now() + Duration::from_secs(110);
        while completed.lock().await.len() < builds && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        done.store(true, Ordering::SeqCst);
        for t in tasks {
            t.abort();
        }
        let mut latencies = completed.lock().await.clone();
        println!("end to end: {builds} builds, {workers} workers (poll, source download, heartbeat, 10 KiB upload)");
        println!(
            "  completed {} in {:.2} s: {:.0} builds/s (goal >= 1,000/s); submit->completed p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Scenario 6.
pub async fn waiting(args: &BenchArgs, workers: usize) -> anyhow::Result<()> {
    let c = Controller::start(args, &[("FREEAGENT_MAX_POLL_WAIT_SECS", "300".into())]).await?;
    let result = async {
        let pid = c.pid().context("controller exited")?;
        let http = client(64);
        let mut tokens = Vec::with_capacity(workers);
        let mut set = tokio::task::JoinSet::new();
        let chunks: Vec<usize> = (0..workers).collect();
        for chunk in chunks.chunks(workers.div_ceil(32).max(1)) {
            let (http, url, key, n) = (http.clone(), c.url.clone(), c.key.clone(), chunk.len());
            set.spawn(async move {
                let mut out = Vec::new();
                for i in 0..n {
                    let body: Value = http
                        .post(format!("{url}/api/workers/register"))
                        .header("X-API-Key", &key)
                        .json(&json!({ "name": format!("waiting-{i}"), "capabilities": { "platforms": ["android"] } }))
                        .send()
                        .await?
                        .json()
                        .await?;
                    out.push(body["access_token"].as_str().unwrap_or_default().to_owned());
                }
                Ok::<_, anyhow::Error>(out)
            });
        }
        while let Some(r) = set.join_next().await {
            tokens.extend(r??);
        }
        let (rss_before, _) = memory_kib(pid).context("memory")?;
        let addr = c.url.trim_start_matches("http://").to_owned();
        // One burst: every worker connects and sends its long poll.
        let started = Instant::now();
        let mut connects = tokio::task::JoinSet::new();
        for token in tokens {
            let addr = addr.clone();
            connects.spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await?;
                let request = format!(
                    "GET /api/workers/poll?wait=240 HTTP/1.1\r\nHost: {addr}\r\nX-Worker-Token: {token}\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await?;
                Ok::<_, std::io::Error>(stream)
            });
        }
        let mut streams = Vec::with_capacity(workers);
        while let Some(r) = connects.join_next().await {
            streams.push(r??);
        }
        let connected = started.elapsed();
        // Let every poll reach its wait.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, _) = memory_kib(pid).context("memory")?;
        let ticks_before = cpu_ticks(pid).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ticks = cpu_ticks(pid).unwrap_or(0).saturating_sub(ticks_before);
        let idle_cpu = ticks as f64 / 100.0 / 5.0 * 100.0;
        // Dispatch among them: who gets each job, and when.
        let got: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let mut readers = Vec::new();
        for mut stream in streams {
            let got = got.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                    && String::from_utf8_lossy(&buf[..n]).contains("\"otp\"")
                {
                    got.lock().await.push(Instant::now());
                }
            }));
        }
        let mut latencies = Vec::new();
        let source = vec![2u8; 1024];
        for _ in 0..50 {
            let before = got.lock().await.len();
            submit_once(&http, &c, &source, "android").await?;
            let answered = Instant::now();
            let deadline = answered + Duration::from_secs(10);
            loop {
                let got = got.lock().await;
                if got.len() > before {
                    latencies.push(got[before].saturating_duration_since(answered).as_micros() as u64);
                    break;
                }
                drop(got);
                if Instant::now() > deadline {
                    anyhow::bail!("a job was not dispatched among {workers} waiting workers within 10 s");
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        for r in readers {
            r.abort();
        }
        println!("waiting at scale: {workers} long-polling workers on one replica, connecting in one burst");
        println!("  all connected and polling in {:.0} ms (goal < 1 s)", connected.as_secs_f64() * 1000.0);
        println!(
            "  server RSS {:.1} MiB (before the burst {:.1} MiB; goal < 300 MiB)",
            rss as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
        println!("  idle CPU {idle_cpu:.1} % of a core over 5 s (goal < 2 %)");
        println!(
            "  dispatch among them p50 {:.2} ms, p99 {:.2} ms (goal p50 <= 2 ms)",
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}
