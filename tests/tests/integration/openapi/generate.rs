//! Requests generated from the OpenAPI document: path and query parameters,
//! credentials, JSON and multipart bodies, valid and invalid.
//!
//! Roughly half of every part is what the schema asks for, filled with things
//! that exist in the running controller (a leased build, its VM token, a
//! registered worker), so that requests get past authentication; the rest is
//! missing, garbage, wrongly typed, oversized or malformed. Webhook URLs are only
//! ever loopback addresses (and deliveries are switched off in the test).

use rand::RngExt as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde_json::{Value, json};

use super::schema::{Hints, Operation, awkward_text, random_text, sample};

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerFixture {
    /// Its id.
    pub id: String,
    /// Its token.
    pub token: String,
}

/// A submitted build and what its VM would hold.
#[derive(Debug, Clone)]
pub struct BuildFixture {
    /// Its id.
    pub id: String,
    /// Its build token.
    pub token: String,
    /// The one-time code of its current lease.
    pub otp: Option<String>,
    /// A VM token of its current lease.
    pub vm_token: Option<String>,
}

/// What exists in the controller under test.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The fleet key.
    pub key: String,
    /// Registered workers.
    pub workers: Vec<WorkerFixture>,
    /// Submitted builds.
    pub builds: Vec<BuildFixture>,
    /// Webhook ids.
    pub webhooks: Vec<String>,
    /// A valid certificate bundle.
    pub certs: Vec<u8>,
}

/// One generated request.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Index of its operation.
    pub operation: usize,
    /// Method.
    pub method: Method,
    /// Path and query (after the base URL).
    pub target: String,
    /// Headers (values may be any bytes a header allows).
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// What the body was, for failure reports.
    pub body_kind: &'static str,
}

/// Identifiers that are not (or not quite) ids. None contains `/`, `?` or `#`,
/// so the request still reaches the documented route.
const ODD_IDS: &[&str] = &[
    "nosuchthing",
    "0",
    "-1",
    "null",
    "..%2F..%2Fetc",
    "a%2Fb",
    "%FF",
    "%00",
    "%20",
    "a b",
    "' OR '1'='1",
    "é",
    "😀",
    "00000000-0000-0000-0000-000000000000",
    "pending-registration",
];

fn odd_id(rng: &mut StdRng) -> String {
    match rng.random_range(0..5) {
        0 => "x".repeat(65),
        1 => "y".repeat(rng.random_range(100..6000)),
        2 => random_text(rng, 1..30).replace(' ', "_"),
        _ => ODD_IDS.choose(rng).unwrap().to_string(),
    }
}

fn garbage(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => Vec::new(),
        1 => vec![0xC3, 0x28, 0xFF, b'a'],
        2 => "z".repeat(rng.random_range(1..9000)).into_bytes(),
        _ => random_text(rng, 1..60).into_bytes(),
    }
}

/// The request's context: the build and worker it is about.
struct Ctx<'a> {
    fx: &'a Fixtures,
    build: &'a BuildFixture,
    worker: &'a WorkerFixture,
}

impl Hints for Ctx<'_> {
    fn for_name(&self, name: &str, rng: &mut StdRng) -> Option<Value> {
        let odd = rng.random_bool(0.15);
        Some(match name {
            "build_id" if !odd => json!(self.build.id),
            "worker_id" if !odd => json!(self.worker.id),
            "build_id" | "worker_id" => json!(odd_id(rng)),
            "id" => match rng.random_range(0..4) {
                0 => json!(self.worker.id),
                1 => json!(format!("fuzz-{}", rng.random_range(0..1_000_000))),
                _ => json!(odd_id(rng)),
            },
            // Mostly wrong: each exchange replaces the VM token the other routes use.
            "otp" => match (&self.build.otp, rng.random_bool(0.25)) {
                (Some(otp), true) => json!(otp),
                _ => json!(random_text(rng, 0..40)),
            },
            "url" => json!(match rng.random_range(0..8) {
                0 => "ftp://127.0.0.1/x".to_owned(),
                1 => "http://".to_owned(),
                2 => ["not a url", "http://127.0.0.1:9/a\u{0}b", "http://127.0.0.1:9/\u{7f}"]
                    .choose(rng)
                    .unwrap()
                    .to_string(),
                3 => format!("http://127.0.0.1:9/{}", "p".repeat(2100)),
                4 => "https://localhost:9/hook".to_owned(),
                _ => format!("http://127.0.0.1:9/hook/{}", rng.random_range(0..1000)),
            }),
            "events" => match rng.random_range(0..5) {
                0 => json!(["*"]),
                1 => json!(["build.completed", "worker.*"]),
                2 => json!([]),
                3 => json!(["no.such.event"]),
                _ => json!("build.*"),
            },
            "level" => json!(["info", "warn", "error", "debug", "LOUD"].choose(rng).unwrap()),
            "status" => json!(["healthy", "warning", "critical", "fine"].choose(rng).unwrap()),
            "platform" => json!(["ios", "android", "windows", " ios ", ""].choose(rng).unwrap()),
            "success" => json!(["true", "false", "yes", ""].choose(rng).unwrap()),
            "type" => json!(["monitor_started", "heartbeat", "cpu_snapshot", "custom"].choose(rng).unwrap()),
            "progress" => [json!(50), json!(-5), json!(1e308), json!("half"), json!(null)].choose(rng).unwrap().clone(),
            "active_build_count" => [json!(0), json!(1), json!(-1), json!("0")].choose(rng).unwrap().clone(),
            "secret" if odd => json!(format!("{}{}", awkward_text(rng), "s".repeat(16))),
            "secret" => json!(random_text(rng, 8..40)),
            "name" if odd => json!(["", "   ", &"n".repeat(300), "nul\u{0}name"].choose(rng).unwrap()),
            "capabilities" => match rng.random_range(0..5) {
                0 => json!("all"),
                1 => json!({}),
                _ => {
                    let platforms = [json!(["ios"]), json!(["android"]), json!(["ios", "android"]), json!(["macos"])];
                    let platforms = platforms.choose(rng).unwrap().clone();
                    let max = rng.random_range(-1..100);
                    json!({ "platforms": platforms, "maxConcurrentBuilds": max, "xcode_version": "15.0" })
                }
            },
            "timestamp" => {
                [json!("2026-01-28T12:00:00Z"), json!(1_769_601_600_000i64), json!(null)].choose(rng).unwrap().clone()
            }
            "data" => match rng.random_range(0..3) {
                0 => {
                    let (cpu, memory) = (rng.random_range(-10.0..2000.0), rng.random_range(0..2_000_000));
                    json!({ "cpu_percent": cpu, "memory_mb": memory })
                }
                1 => {
                    json!({ "stage": "build", "heartbeat_count": 3, "metrics": { "cpu_percent": 40, "memory_mb": 900, "disk_percent": 50 } })
                }
                _ => json!("not an object"),
            },
            _ => return None,
        })
    }
}

impl Ctx<'_> {
    fn path_value(&self, template: &str, name: &str, rng: &mut StdRng) -> String {
        if rng.random_bool(0.25) {
            return odd_id(rng);
        }
        match name {
            "kind" => ["source", "result", "certs"].choose(rng).unwrap().to_string(),
            "worker_id" => self.worker.id.clone(),
            _ if template.starts_with("/api/webhooks") => {
                self.fx.webhooks.choose(rng).cloned().unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            }
            _ if template.starts_with("/api/workers") => self.worker.id.clone(),
            _ => self.build.id.clone(),
        }
    }

    fn query_value(&self, op: &Operation, name: &str, rng: &mut StdRng) -> String {
        if rng.random_bool(0.3) {
            let odd = ["", "-1", "0", "abc", "NaN", "inf", "1e999", "99999999999999999999999", "%FF", "true", "1.5"];
            return odd.choose(rng).unwrap().to_string();
        }
        match name {
            // Long polls stay short: the test must be fast.
            "wait" => ["0", "0.01", "0.05"].choose(rng).unwrap().to_string(),
            "worker_id" => self.worker.id.clone(),
            "limit" => rng.random_range(1..=100).to_string(),
            "last_event_id" if op.path.contains("/events") => uuid::Uuid::new_v4().to_string(),
            "last_event_id" => rng.random_range(0..50).to_string(),
            _ => random_text(rng, 1..10),
        }
    }

    /// Valid credentials of one of the operation's security alternatives.
    fn consistent_credentials(&self, op: &Operation, rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
        let alternatives: Vec<&Value> = op.spec["security"].as_array().into_iter().flatten().collect();
        let Some(chosen) = alternatives.choose(rng).and_then(|a| a.as_object()) else { return Vec::new() };
        let mut headers = Vec::new();
        for scheme in chosen.keys() {
            let value = match scheme.as_str() {
                "api_key" => Some(self.fx.key.clone()),
                "worker_token" => Some(self.worker.token.clone()),
                "worker_id" => Some(self.worker.id.clone()),
                "build_token" => Some(self.build.token.clone()),
                "vm_token" => self.build.vm_token.clone(),
                _ => None,
            };
            if let Some(value) = value {
                headers.push((header_of(scheme), value.into_bytes()));
            }
        }
        headers
    }

    /// Each credential header independently: valid, garbage, empty or absent.
    fn mixed_credentials(&self, rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
        let mut headers = Vec::new();
        let options: [(&'static str, f64, Option<String>); 5] = [
            ("X-API-Key", 0.45, Some(self.fx.key.clone())),
            ("X-Worker-Token", 0.3, Some(self.worker.token.clone())),
            ("X-Worker-Id", 0.3, Some(self.worker.id.clone())),
            ("X-Build-Token", 0.3, Some(self.build.token.clone())),
            ("X-VM-Token", 0.3, self.build.vm_token.clone()),
        ];
        for (name, p_valid, valid) in options {
            let roll: f64 = rng.random();
            if roll < p_valid {
                if let Some(valid) = valid {
                    headers.push((name, valid.into_bytes()));
                }
            } else if roll < p_valid + 0.12 {
                headers.push((name, garbage(rng)));
            }
        }
        headers
    }
}

fn header_of(scheme: &str) -> &'static str {
    match scheme {
        "api_key" => "X-API-Key",
        "worker_token" => "X-Worker-Token",
        "worker_id" => "X-Worker-Id",
        "build_token" => "X-Build-Token",
        "vm_token" => "X-VM-Token",
        other => panic!("unknown security scheme {other}"),
    }
}

/// Generates one request for `op`.
pub fn generate(doc: &Value, index: usize, op: &Operation, fx: &Fixtures, rng: &mut StdRng) -> Generated {
    // The first worker holds the leases; the routes that re-register or
    // unregister a worker act on the second one, so that the leases survive long
    // enough for the other routes to be reached with valid credentials.
    let resets_worker = op.path.ends_with("register");
    let worker = if resets_worker || rng.random_bool(0.15) { &fx.workers[1] } else { &fx.workers[0] };
    let ctx = Ctx { fx, build: fx.builds.choose(rng).unwrap(), worker };

    let mut path = op.path.clone();
    for param in op.params("path") {
        let name = param["name"].as_str().unwrap();
        let value = ctx.path_value(&op.path, name, rng);
        // `.` and `..` would be dot segments, which URL parsing removes.
        let value = if value.chars().all(|c| c == '.') { format!("dots{value}") } else { value };
        path = path.replace(&format!("{{{name}}}"), &value.replace(['/', '?', '#'], "_"));
    }
    let mut query: Vec<(String, String)> = Vec::new();
    for param in op.params("query") {
        let name = param["name"].as_str().unwrap();
        if rng.random_bool(0.6) {
            query.push((name.to_owned(), ctx.query_value(op, name, rng)));
            if rng.random_bool(0.05) {
                query.push((name.to_owned(), ctx.query_value(op, name, rng)));
            }
        }
    }
    if rng.random_bool(0.05) {
        query.push(("unexpected".into(), random_text(rng, 0..8)));
    }
    let target = if query.is_empty() {
        path
    } else {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", v.replace([' ', '#', '&'], "+"))).collect();
        format!("{path}?{}", q.join("&"))
    };

    let mut headers =
        if rng.random_bool(0.5) { ctx.consistent_credentials(op, rng) } else { ctx.mixed_credentials(rng) };
    for param in op.params("header") {
        let name = param["name"].as_str().unwrap();
        let value = match (name, rng.random_range(0..10)) {
            (_, 0..=3) => continue,
            ("X-Build-Id", 4..=7) => ctx.build.id.clone(),
            ("X-Worker-Id", 4..=7) => ctx.worker.id.clone(),
            ("Last-Event-ID", 4..=7) => ctx.query_value(op, "last_event_id", rng),
            _ => String::from_utf8_lossy(&garbage(rng)).into_owned(),
        };
        if let Some(static_name) = ["X-Build-Id", "X-Worker-Id", "Last-Event-ID"].into_iter().find(|n| *n == name) {
            headers.push((static_name, value.into_bytes()));
        }
    }

    let (content_type, body, body_kind) = match op.body() {
        Some(("application/json", schema)) => json_body(doc, schema, &ctx, rng),
        Some(("multipart/form-data", schema)) => multipart_body(doc, schema, &ctx, rng),
        Some((other, _)) => panic!("no generator for request bodies of type {other}"),
        None if rng.random_bool(0.15) => (Some("application/json".to_owned()), Some(garbage(rng)), "stray body"),
        None => (None, None, "none"),
    };
    if let Some(content_type) = content_type {
        headers.push(("Content-Type", content_type.into_bytes()));
    }
    Generated { operation: index, method: op.method.clone(), target, headers, body, body_kind }
}

type Body = (Option<String>, Option<Vec<u8>>, &'static str);

fn json_body(doc: &Value, schema: &Value, ctx: &Ctx<'_>, rng: &mut StdRng) -> Body {
    let json = || Some("application/json".to_owned());
    let valid = sample(doc, schema, None, ctx, rng);
    match rng.random_range(0..100) {
        0..=44 => (json(), Some(valid.to_string().into_bytes()), "schema"),
        45..=54 => {
            let mut value = valid;
            if let Some(object) = value.as_object_mut()
                && let Some(key) = object.keys().cloned().collect::<Vec<_>>().choose(rng)
            {
                let wrong =
                    [json!(123), json!("text"), json!(true), json!(null), json!([]), json!({}), json!(-1.5e300)];
                object.insert(key.clone(), wrong.choose(rng).unwrap().clone());
            }
            (json(), Some(value.to_string().into_bytes()), "wrong type")
        }
        55..=62 => {
            let mut value = valid;
            if let Some(object) = value.as_object_mut()
                && let Some(key) = object.keys().cloned().collect::<Vec<_>>().choose(rng)
            {
                object.remove(key);
            }
            (json(), Some(value.to_string().into_bytes()), "field missing")
        }
        63..=67 => {
            let mut value = valid;
            if let Some(object) = value.as_object_mut()
                && let Some(key) = object.keys().cloned().collect::<Vec<_>>().choose(rng)
            {
                object.insert(key.clone(), json!("A".repeat(100_000)));
            }
            (json(), Some(value.to_string().into_bytes()), "oversized string")
        }
        68..=72 => {
            let top = [json!([]), json!("x"), json!(0), json!(null), json!([valid.clone()])];
            (json(), Some(top.choose(rng).unwrap().to_string().into_bytes()), "not an object")
        }
        73..=80 => {
            let broken: &[&str] =
                &["", "{", "{\"a\":", "nul", "{} trailing", "{\"level\":\"info\",\"message\":\"\\ud800\"}"];
            (json(), Some(broken.choose(rng).unwrap().as_bytes().to_vec()), "malformed")
        }
        81..=83 => {
            let depth = rng.random_range(100..5000);
            (json(), Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()), "deeply nested")
        }
        84..=86 => (json(), Some(vec![0xFF, 0xFE, b'{', 0x80, b'}']), "not UTF-8"),
        87..=90 => (Some("text/plain".into()), Some(valid.to_string().into_bytes()), "wrong content type"),
        91..=94 => (None, Some(valid.to_string().into_bytes()), "no content type"),
        95 => (json(), Some(format!("\"{}\"", "B".repeat(2_500_000)).into_bytes()), "over the body limit"),
        _ => (json(), None, "empty"),
    }
}

fn part(boundary: &str, name: &str, filename: Option<&str>, content: &[u8]) -> Vec<u8> {
    let mut out = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").into_bytes();
    if let Some(filename) = filename {
        out.extend_from_slice(
            format!("; filename=\"{filename}\"\r\nContent-Type: application/octet-stream").as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
    out
}

fn multipart_body(doc: &Value, schema: &Value, ctx: &Ctx<'_>, rng: &mut StdRng) -> Body {
    let schema = super::schema::resolve(doc, schema);
    let boundary = format!("fuzz{}", rng.random_range(0..u32::MAX));
    let form_type = Some(format!("multipart/form-data; boundary={boundary}"));
    let mut form = Vec::new();
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        let include = (required.contains(&name.as_str()) && rng.random_bool(0.9)) || rng.random_bool(0.5);
        if !include {
            continue;
        }
        if prop["format"] == "binary" {
            let content = if name == "certs" && rng.random_bool(0.5) {
                ctx.fx.certs.clone()
            } else {
                (0..rng.random_range(0..3000)).map(|_| rng.random::<u8>()).collect()
            };
            form.extend(part(&boundary, name, Some("file.bin"), &content));
            if rng.random_bool(0.05) {
                form.extend(part(&boundary, name, Some("again.bin"), b"second"));
            }
        } else {
            let value = match sample(doc, prop, Some(name), ctx, rng) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            form.extend(part(&boundary, name, None, value.as_bytes()));
        }
    }
    match rng.random_range(0..100) {
        0..=4 => form.extend(part(&boundary, "unexpected", None, b"ignored")),
        5..=7 => form.extend(part(&boundary, "build_id", None, &[0xFF, 0xC3, 0x28])),
        8..=10 => form.extend(part(&boundary, "platform", None, "p".repeat(70_000).as_bytes())),
        _ => {}
    }
    let mut complete = form.clone();
    complete.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    match rng.random_range(0..100) {
        0..=54 => (form_type, Some(complete), "form"),
        55..=61 => (form_type, Some(Vec::new()), "empty form"),
        62..=67 => (Some("multipart/form-data".into()), Some(complete), "no boundary"),
        68..=74 => (form_type, Some(garbage(rng)), "garbage form"),
        75..=84 => {
            let cut = rng.random_range(0..complete.len().max(1));
            complete.truncate(cut);
            (form_type, Some(complete), "truncated form")
        }
        85..=91 => (Some("application/json".into()), Some(b"{\"build_id\":\"x\"}".to_vec()), "JSON instead of a form"),
        _ => (None, None, "no body"),
    }
}
