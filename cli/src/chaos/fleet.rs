//! The simulated clients of a chaos run: submitters and workers speaking the real
//! HTTP protocol to a random replica per request, as a worker behind a load
//! balancer would.
//!
//! A worker registers, long-polls, downloads the source, heartbeats while it
//! "builds", and uploads a result (or a failure); it retries across replicas when a
//! request gets no answer, re-registers on 401 (keeping its id) and on 404 (fresh),
//! and drops a build on 403/409. Killing a worker aborts its task wherever it is,
//! with no abandon or unregister, like SIGKILL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::ledger::{Ledger, artifact, sha};

/// What every simulated client shares.
#[derive(Clone)]
pub struct Shared {
    /// Replica base URLs.
    pub replicas: Arc<Vec<String>>,
    /// The fleet API key.
    pub api_key: String,
    /// What the clients saw.
    pub ledger: Arc<Ledger>,
    /// Fraction of builds a worker reports as failed.
    pub fail_rate: f64,
}

impl Shared {
    fn pick(&self, rng: &mut StdRng) -> &str {
        &self.replicas[rng.random_range(0..self.replicas.len())]
    }
}

/// A client with the timeouts of a worker behind a load balancer.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("a plain client builds")
}

/// Submits `count` builds, keeping at most `depth` of them unfinished at a time so
/// submissions (and faults during them) spread over the whole run.
pub async fn submit(shared: Shared, indices: Vec<usize>, depth: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = client();
    for index in indices {
        while shared.ledger.submitted_count().saturating_sub(shared.ledger.finished_count()) >= depth {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let len = rng.random_range(256..4096);
        let source: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        let source_sha = sha(&source);
        let platform = if index % 2 == 0 { "ios" } else { "android" };
        // Retried until accepted: an answer lost to a kill may leave a build the
        // ledger does not know; the final checks cover every row, known or not.
        loop {
            let form = reqwest::multipart::Form::new()
                .text("platform", platform)
                .part("source", reqwest::multipart::Part::bytes(source.clone()).file_name("project.zip"));
            let url = format!("{}/api/builds/submit", shared.pick(&mut rng));
            match http.post(url).header("X-API-Key", &shared.api_key).multipart(form).send().await {
                Ok(r) if r.status().is_success() => {
                    if let Ok(body) = r.json::<Value>().await
                        && let Some(id) = body["id"].as_str()
                    {
                        shared.ledger.submitted(id, source_sha.clone());
                        break;
                    }
                }
                Ok(r) => shared.ledger.refused(r.status()),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        }
    }
}

/// A worker slot: which build its current incarnation holds, for the fault
/// injector to pick a victim mid-build.
#[derive(Default)]
pub struct Slot {
    /// The worker id (kept across restarts that re-register with it).
    pub id: Mutex<Option<String>>,
    /// The build being worked on.
    pub busy_with: Mutex<Option<String>>,
    /// Until when the worker hangs before its next request on a build (like a
    /// SIGSTOP): longer than the lease, so it comes back late and must be fenced.
    pub stalled_until: Mutex<Option<Instant>>,
}

impl Slot {
    async fn wait_if_stalled(&self) {
        let until = self.stalled_until.lock().await.take();
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// One incarnation of a simulated worker; runs until aborted.
pub async fn work(shared: Shared, slot: Arc<Slot>, name: String, keep_id: bool, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = client();
    let known = if keep_id { slot.id.lock().await.clone() } else { None };
    let mut worker = register(&shared, &http, &mut rng, &name, known).await;
    *slot.id.lock().await = Some(worker.id.clone());
    loop {
        let url = format!("{}/api/workers/poll?wait=2", shared.pick(&mut rng));
        let answer = http.get(url).header("X-Worker-Token", &worker.token).send().await;
        let job = match answer {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(body) => body["job"]["id"].as_str().map(str::to_owned),
                Err(_) => None,
            },
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                worker = register(&shared, &http, &mut rng, &name, Some(worker.id.clone())).await;
                None
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                worker = register(&shared, &http, &mut rng, &name, None).await;
                *slot.id.lock().await = Some(worker.id.clone());
                None
            }
            Ok(r) => {
                shared.ledger.refused(r.status());
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        };
        let Some(id) = job else { continue };
        shared.ledger.granted(&id, &worker.id, Instant::now());
        *slot.busy_with.lock().await = Some(id.clone());
        build(&shared, &slot, &http, &mut rng, &worker, &id).await;
        *slot.busy_with.lock().await = None;
    }
}

struct Worker {
    id: String,
    token: String,
}

async fn register(shared: &Shared, http: &reqwest::Client, rng: &mut StdRng, name: &str, id: Option<String>) -> Worker {
    loop {
        let mut body = json!({
            "name": name,
            "capabilities": { "platforms": ["ios", "android"], "maxConcurrentBuilds": 1 },
            "active_build_count": 0,
        });
        if let Some(id) = &id {
            body["id"] = json!(id);
        }
        let url = format!("{}/api/workers/register", shared.pick(rng));
        if let Ok(r) = http.post(url).header("X-API-Key", &shared.api_key).json(&body).send().await {
            if !r.status().is_success() {
                shared.ledger.refused(r.status());
            }
            if r.status().is_success()
                && let Ok(answer) = r.json::<Value>().await
                && let (Some(id), Some(token)) = (answer["id"].as_str(), answer["access_token"].as_str())
            {
                return Worker { id: id.to_owned(), token: token.to_owned() };
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

/// How a request on a held build ended.
enum Answer {
    Accepted(reqwest::Response),
    /// 403/404/409: the build is not ours any more.
    Lost,
}

/// Sends a request on a held build until some replica answers it; retries (on other
/// replicas) on connection errors and 5xx, as a worker behind a load balancer does.
async fn on_build(
    shared: &Shared,
    slot: &Slot,
    rng: &mut StdRng,
    build: &str,
    worker: &Worker,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Answer {
    for _ in 0..40 {
        slot.wait_if_stalled().await;
        let sent = Instant::now();
        match request(shared.pick(rng)).header("X-Worker-Token", &worker.token).send().await {
            Ok(r) if r.status().is_success() => {
                shared.ledger.accepted(build, &worker.id, sent);
                return Answer::Accepted(r);
            }
            Ok(r) if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS => {
                shared.ledger.refused(r.status());
            }
            Ok(_) => return Answer::Lost,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
    Answer::Lost
}

async fn build(shared: &Shared, slot: &Slot, http: &reqwest::Client, rng: &mut StdRng, worker: &Worker, id: &str) {
    let source =
        on_build(shared, slot, rng, id, worker, |base| http.get(format!("{base}/api/builds/{id}/source"))).await;
    let Answer::Accepted(source) = source else { return };
    match source.bytes().await {
        Ok(bytes) => shared.ledger.downloaded(id, sha(&bytes)),
        // The replica died mid-body; the build still needs doing, the source was
        // checked by other downloads or will be on the next attempt.
        Err(_) => return,
    }
    for _ in 0..rng.random_range(1..4) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        let progress = rng.random_range(1..100);
        let heartbeat = on_build(shared, slot, rng, id, worker, |base| {
            http.post(format!("{base}/api/builds/{id}/heartbeat?worker_id={}", worker.id))
                .json(&json!({ "progress": progress }))
        })
        .await;
        if matches!(heartbeat, Answer::Lost) {
            return;
        }
    }
    let logs = json!({ "logs": [{ "level": "info", "message": format!("built on {}", worker.id) }] });
    if let Answer::Lost =
        on_build(shared, slot, rng, id, worker, |base| http.post(format!("{base}/api/builds/{id}/logs")).json(&logs))
            .await
    {
        return;
    }
    let success = !rng.random_bool(shared.fail_rate);
    let result = artifact(id, &worker.id);
    let upload = on_build(shared, slot, rng, id, worker, |base| {
        let form = reqwest::multipart::Form::new()
            .text("build_id", id.to_owned())
            .text("worker_id", worker.id.clone())
            .text("success", success.to_string());
        let form = if success {
            form.part("result", reqwest::multipart::Part::bytes(result.clone()).file_name("app.ipa"))
        } else {
            form.text("error_message", "simulated build failure")
        };
        http.post(format!("{base}/api/workers/upload")).multipart(form)
    })
    .await;
    if let Answer::Accepted(_) = upload {
        shared.ledger.finished(id, &worker.id, success);
    }
}

/// Asks the controller (any replica) for a request with the API key, retrying
/// across replicas; used by the final checks.
pub async fn admin_get(shared: &Shared, http: &reqwest::Client, path: &str) -> anyhow::Result<reqwest::Response> {
    let mut rng = StdRng::seed_from_u64(path.len() as u64);
    let mut last = None;
    for _ in 0..20 {
        let url = format!("{}{path}", shared.pick(&mut rng));
        match http.request(Method::GET, url).header("X-API-Key", &shared.api_key).send().await {
            Ok(r) if !r.status().is_server_error() => return Ok(r),
            Ok(r) => last = Some(anyhow::anyhow!("{path} answered {}", r.status())),
            Err(e) => last = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{path} got no answer")))
}
