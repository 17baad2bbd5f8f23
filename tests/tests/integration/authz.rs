//! The authorization matrix of the worker- and VM-facing routes.

use freeagent_tests::{TestApp, WorkerClient, spawn_app};
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    Nothing,
    WrongKey,
    KeyWithoutWorker,
    OtherWorkerId,
    OtherWorkerToken,
    AssignedWorkerId,
    AssignedWorkerToken,
    RotatedTokenPastGrace,
    VmToken,
    OtherBuildsVmToken,
}

const ALL: [Cred; 10] = [
    Cred::Nothing,
    Cred::WrongKey,
    Cred::KeyWithoutWorker,
    Cred::OtherWorkerId,
    Cred::OtherWorkerToken,
    Cred::AssignedWorkerId,
    Cred::AssignedWorkerToken,
    Cred::RotatedTokenPastGrace,
    Cred::VmToken,
    Cred::OtherBuildsVmToken,
];

struct World {
    app: TestApp,
    build: String,
    owner: WorkerClient,
    other: WorkerClient,
    rotated: String,
    vm_token: String,
    other_vm_token: String,
}

impl World {
    fn worker_id(&self, cred: Cred) -> Option<&str> {
        match cred {
            Cred::OtherWorkerId | Cred::OtherWorkerToken => Some(&self.other.id),
            Cred::AssignedWorkerId | Cred::AssignedWorkerToken | Cred::RotatedTokenPastGrace => Some(&self.owner.id),
            Cred::WrongKey => Some(&self.owner.id),
            _ => None,
        }
    }

    /// A request carrying `cred`, the worker id where a client would put it.
    fn request(&self, cred: Cred, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut path = path.replace("{build}", &self.build);
        if let Some(worker) = self.worker_id(cred).filter(|_| path.contains("{worker}") || path.contains("worker_id="))
        {
            path = path.replace("{worker}", worker);
        }
        let path = path.replace("worker_id={worker}", "").replace("{worker}", "");
        let mut r = self.app.anon(method, &path).header("X-Build-Id", &self.build);
        match cred {
            Cred::Nothing => {}
            Cred::WrongKey => {
                r = r.header("X-API-Key", "wrong-wrong-wrong-wrong").header("X-Worker-Id", &self.owner.id)
            }
            Cred::KeyWithoutWorker => r = r.header("X-API-Key", &self.app.key),
            Cred::OtherWorkerId => r = r.header("X-API-Key", &self.app.key).header("X-Worker-Id", &self.other.id),
            Cred::AssignedWorkerId => r = r.header("X-API-Key", &self.app.key).header("X-Worker-Id", &self.owner.id),
            Cred::OtherWorkerToken => r = r.header("X-Worker-Token", &self.other.token),
            Cred::AssignedWorkerToken => r = r.header("X-Worker-Token", &self.owner.token),
            Cred::RotatedTokenPastGrace => r = r.header("X-Worker-Token", &self.rotated),
            Cred::VmToken => r = r.header("X-VM-Token", &self.vm_token),
            Cred::OtherBuildsVmToken => r = r.header("X-VM-Token", &self.other_vm_token),
        }
        r
    }
}

async fn world() -> World {
    let app = spawn_app().await;
    let mut owner = app.register_worker("Owner", &["ios"]).await;
    let other = app.register_worker("Other", &["ios"]).await;
    let response = app.submit(b"zip", "ios", Some(b"certs")).await;
    let build = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let job = owner.poll(0.0).await.unwrap();
    assert_eq!(job["id"], build.as_str());
    let vm_token = exchange(&app, &build, job["otp"].as_str().unwrap()).await;
    let (other_build, _) = app.submit_ok(b"other").await;
    let other_job = other.poll(0.0).await.unwrap();
    assert_eq!(other_job["id"], other_build.as_str());
    let other_vm_token = exchange(&app, &other_build, other_job["otp"].as_str().unwrap()).await;
    // Re-register the owner: its first token is rotated and its grace has passed.
    let response = app
        .admin(Method::POST, "/api/workers/register")
        .json(&json!({ "id": owner.id, "name": "Owner", "capabilities": { "platforms": ["ios"] } }))
        .send()
        .await
        .unwrap();
    let rotated = std::mem::replace(
        &mut owner.token,
        response.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned(),
    );
    sqlx::query("UPDATE workers SET prev_token_expires_at = now() - interval '1 second'")
        .execute(app.pool())
        .await
        .unwrap();
    World { app, build, owner, other, rotated, vm_token, other_vm_token }
}

async fn exchange(app: &TestApp, build: &str, otp: &str) -> String {
    let response = app
        .anon(Method::POST, &format!("/api/builds/{build}/authenticate"))
        .json(&json!({ "otp": otp }))
        .send()
        .await
        .unwrap();
    response.json::<serde_json::Value>().await.unwrap()["vm_token"].as_str().unwrap().to_owned()
}

fn expected_on_build_route(cred: Cred) -> u16 {
    match cred {
        Cred::Nothing => 401,
        Cred::WrongKey => 403,
        Cred::KeyWithoutWorker => 401,
        Cred::OtherWorkerId | Cred::OtherWorkerToken => 403,
        Cred::AssignedWorkerId | Cred::AssignedWorkerToken => 200,
        Cred::RotatedTokenPastGrace => 401,
        Cred::VmToken => 200,
        Cred::OtherBuildsVmToken => 401,
    }
}

#[tokio::test]
async fn every_worker_and_vm_route_admits_exactly_the_assigned_worker() {
    let w = world().await;
    let log = json!({ "level": "info", "message": "hello" });
    let telemetry = json!({ "type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z", "data": {} });
    let routes: Vec<(Method, &str, Option<serde_json::Value>)> = vec![
        (Method::GET, "/api/builds/{build}/source", None),
        (Method::GET, "/api/builds/{build}/certs", None),
        (Method::POST, "/api/builds/{build}/logs", Some(log)),
        (Method::POST, "/api/builds/{build}/telemetry", Some(telemetry)),
        (Method::POST, "/api/builds/{build}/heartbeat?worker_id={worker}", Some(json!({}))),
        (Method::POST, "/api/workers/heartbeat", Some(json!({ "build_id": w.build }))),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in &routes {
        for cred in ALL {
            let mut request = w.request(cred, method.clone(), path);
            if let Some(body) = body {
                let mut body = body.clone();
                if path.starts_with("/api/workers/")
                    && let Some(worker) = w.worker_id(cred)
                {
                    body["worker_id"] = json!(worker);
                }
                request = request.json(&body);
            }
            let status = request.send().await.unwrap().status().as_u16();
            let mut expected = expected_on_build_route(cred);
            // The heartbeat routes name the worker in the query or body, so "key
            // without worker" has no worker at all there.
            if cred == Cred::KeyWithoutWorker && path.contains("heartbeat") {
                expected = if path.starts_with("/api/builds/") { 400 } else { 401 };
            }
            // A VM token speaks for one build: routes without a build in the path
            // do not know it.
            if matches!(cred, Cred::VmToken | Cred::OtherBuildsVmToken) && path.starts_with("/api/workers/") {
                expected = 401;
            }
            if status != expected {
                failures.push(format!("{method} {path} with {cred:?}: {status}, expected {expected}"));
            }
        }
    }
    // certs-secure answers 422 for this (raw, non-zip) bundle once authorized.
    for cred in ALL {
        let status =
            w.request(cred, Method::GET, "/api/builds/{build}/certs-secure").send().await.unwrap().status().as_u16();
        let expected = match expected_on_build_route(cred) {
            200 => 422,
            other => other,
        };
        if status != expected {
            failures.push(format!("certs-secure with {cred:?}: {status}, expected {expected}"));
        }
    }
    // Poll: any valid worker may poll for itself.
    for cred in ALL {
        let status = w
            .request(cred, Method::GET, "/api/workers/poll?worker_id={worker}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = match cred {
            Cred::Nothing => 401,
            Cred::WrongKey => 403,
            Cred::KeyWithoutWorker => 400,
            Cred::RotatedTokenPastGrace | Cred::VmToken | Cred::OtherBuildsVmToken => 401,
            _ => 200,
        };
        if status != expected {
            failures.push(format!("poll with {cred:?}: {status}, expected {expected}"));
        }
    }
    // Upload: every refusal first, then the owner's report.
    for cred in ALL.into_iter().filter(|c| !matches!(c, Cred::AssignedWorkerId | Cred::AssignedWorkerToken)) {
        // (A VM token is no credential for the worker's upload route.)
        let mut form = reqwest::multipart::Form::new().text("build_id", w.build.clone()).text("success", "true");
        if let Some(worker) = w.worker_id(cred) {
            form = form.text("worker_id", worker.to_owned());
        }
        let form = form.part("result", reqwest::multipart::Part::bytes(b"ipa".to_vec()).file_name("a.ipa"));
        let status = w
            .request(cred, Method::POST, "/api/workers/upload")
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = match cred {
            Cred::KeyWithoutWorker => 400,
            Cred::VmToken | Cred::OtherBuildsVmToken => 401,
            other => expected_on_build_route(other),
        };
        if status != expected {
            failures.push(format!("upload with {cred:?}: {status}, expected {expected}"));
        }
    }
    // vm-ready takes only the build's VM token; vm-status only the assigned worker.
    for cred in ALL {
        let status =
            w.request(cred, Method::POST, "/api/builds/{build}/vm-ready").send().await.unwrap().status().as_u16();
        let expected = if cred == Cred::VmToken { 200 } else { 401 };
        if status != expected {
            failures.push(format!("vm-ready with {cred:?}: {status}, expected {expected}"));
        }
        let status = w
            .request(cred, Method::GET, "/api/builds/{build}/vm-status?worker_id={worker}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = match cred {
            Cred::KeyWithoutWorker => 401,
            other => expected_on_build_route(other),
        };
        if status != expected {
            failures.push(format!("vm-status with {cred:?}: {status}, expected {expected}"));
        }
    }
    // Artifact: refusals only (the owner's upload comes last).
    for cred in ALL.into_iter().filter(|c| expected_on_build_route(*c) != 200) {
        let form = reqwest::multipart::Form::new()
            .part("artifact", reqwest::multipart::Part::bytes(b"ipa".to_vec()).file_name("a.ipa"));
        let status = w
            .request(cred, Method::POST, "/api/builds/{build}/artifact")
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != expected_on_build_route(cred) {
            failures.push(format!("artifact with {cred:?}: {status}, expected {}", expected_on_build_route(cred)));
        }
    }
    assert!(w.app.backend.blobs.list("uploads").await.unwrap().is_empty(), "refused uploads left nothing");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(w.app.stored_status(&w.build).await, "building");
    let (status, _) = w.owner.upload(&w.build, Some(b"ipa")).await;
    assert_eq!(status, 200);
    w.app.stop().await;
}
