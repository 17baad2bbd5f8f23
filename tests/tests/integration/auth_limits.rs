//! Failed-authentication limits per client address: an address that keeps failing
//! gets 429 with `Retry-After` for anything it presents credentials with, other
//! addresses do not notice, successes cost nothing, and a forwarded-for header
//! counts only when a trusted proxy sent it.
//!
//! Other client addresses are other loopback addresses (127.0.0.2, ...): the
//! client binds its end of the connection there.

use std::net::IpAddr;

use freeagent::cli::ServeArgs;
use freeagent_tests::{TestApp, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn limited(burst: u32) -> impl FnOnce(&mut ServeArgs) {
    move |s: &mut ServeArgs| {
        s.auth_limit.auth_failures_per_minute = 1;
        s.auth_limit.auth_failure_burst = burst;
    }
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
}

fn wrong_key(app: &TestApp, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client.get(format!("{}/api/builds", app.url)).header("X-API-Key", "wrong-key-wrong-key-wrong")
}

fn right_key(app: &TestApp, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client.get(format!("{}/api/builds", app.url)).header("X-API-Key", &app.key)
}

async fn assert_too_many(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("Too many failed authentication attempts"), "{body}");
}

#[tokio::test]
async fn an_address_that_keeps_failing_gets_429_with_retry_after_while_others_do_not() {
    let app = spawn_app_with(limited(3)).await;
    let a = client_from("127.0.0.1");
    for _ in 0..3 {
        assert_eq!(status_of(wrong_key(&app, &a)).await, 403);
    }
    assert_too_many(wrong_key(&app, &a).send().await.unwrap()).await;
    // Whatever it presents now, even the right key, waits; without credentials
    // (health, public statistics) it is served.
    assert_too_many(right_key(&app, &a).send().await.unwrap()).await;
    assert_eq!(status_of(a.get(format!("{}/health", app.url))).await, 200);
    assert_eq!(status_of(a.get(format!("{}/api/stats", app.url))).await, 200);

    let b = client_from("127.0.0.2");
    assert_eq!(status_of(right_key(&app, &b)).await, 200, "another address is not affected");
    assert_eq!(status_of(wrong_key(&app, &b)).await, 403, "and has its own allowance");
    app.stop().await;
}

#[tokio::test]
async fn every_kind_of_credential_failure_counts_and_successes_and_lease_refusals_do_not() {
    let app = spawn_app_with(limited(5)).await;
    let (id, build_token) = app.submit_ok(b"zip").await;
    let owner = app.register_worker("owner", &["ios"]).await;
    let other = app.register_worker("other", &["ios"]).await;
    let job = owner.poll(0.0).await.expect("a job");
    for _ in 0..30 {
        assert_eq!(status_of(app.admin(Method::GET, "/api/builds")).await, 200);
        assert_eq!(
            status_of(app.anon(Method::GET, &format!("/api/builds/{id}/status")).header("X-Build-Token", &build_token))
                .await,
            200
        );
        assert_eq!(status_of(owner.request(Method::GET, "/api/workers/poll")).await, 200);
    }
    // An authenticated worker acting on a build it does not hold is refused, but
    // it did authenticate: not counted.
    for _ in 0..10 {
        assert_eq!(status_of(other.request(Method::GET, &format!("/api/builds/{id}/source"))).await, 403);
    }
    assert_eq!(status_of(app.admin(Method::GET, "/api/builds")).await, 200);

    let failures = [
        app.anon(Method::GET, "/api/builds").header("X-API-Key", "wrong-key-wrong-key-wrong"),
        app.anon(Method::GET, "/api/workers/poll").header("X-Worker-Token", "not-a-worker-token"),
        app.anon(Method::GET, &format!("/api/builds/{id}/status")).header("X-Build-Token", "not-the-build-token"),
        app.anon(Method::GET, &format!("/api/builds/{id}/source")).header("X-VM-Token", "not-a-vm-token"),
        app.anon(Method::POST, &format!("/api/builds/{id}/authenticate")).json(&json!({ "otp": "not-the-otp" })),
    ];
    for request in failures {
        let status = status_of(request).await;
        assert!(status == 401 || status == 403, "{status}");
    }
    assert_too_many(app.admin(Method::GET, "/api/builds").send().await.unwrap()).await;
    let otp = job["otp"].as_str().unwrap();
    let exchange = app.anon(Method::POST, &format!("/api/builds/{id}/authenticate")).json(&json!({ "otp": otp }));
    assert_eq!(status_of(exchange).await, 429, "a one-time code counts as a credential");
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let app = spawn_app_with(|s| {
        limited(3)(s);
        s.auth_limit.trusted_proxies = vec![freeagent::auth_limit::parse_net("127.0.0.1").unwrap()];
    })
    .await;
    let proxy = client_from("127.0.0.1");
    let from = |client: &str| wrong_key(&app, &proxy).header("X-Forwarded-For", format!("{client}, 127.0.0.1"));
    for _ in 0..3 {
        assert_eq!(status_of(from("203.0.113.7")).await, 403);
    }
    assert_too_many(from("203.0.113.7").send().await.unwrap()).await;
    let real_ip = right_key(&app, &proxy).header("X-Real-IP", "203.0.113.7");
    assert_eq!(status_of(real_ip).await, 429, "X-Real-IP names the client too");
    assert_eq!(status_of(from("203.0.113.8")).await, 403, "another client behind the proxy");
    assert_eq!(status_of(right_key(&app, &proxy)).await, 200, "the proxy itself is not blocked");
    app.stop().await;
}

#[tokio::test]
async fn a_forged_forwarded_header_from_an_untrusted_peer_does_not_evade_the_limit() {
    let app = spawn_app_with(|s| {
        limited(3)(s);
        s.auth_limit.trusted_proxies = vec![freeagent::auth_limit::parse_net("127.0.0.1/32").unwrap()];
    })
    .await;
    let attacker = client_from("127.0.0.3");
    for n in 0..3 {
        let forged = wrong_key(&app, &attacker).header("X-Forwarded-For", format!("198.51.100.{n}"));
        assert_eq!(status_of(forged).await, 403);
    }
    for n in 3..6 {
        let forged = wrong_key(&app, &attacker)
            .header("X-Forwarded-For", format!("198.51.100.{n}"))
            .header("X-Real-IP", format!("198.51.100.{n}"));
        assert_too_many(forged.send().await.unwrap()).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn with_the_limit_off_failures_are_never_refused() {
    let app = spawn_app_with(|s| s.auth_limit.auth_failures_per_minute = 0).await;
    let client = client_from("127.0.0.1");
    for _ in 0..50 {
        assert_eq!(status_of(wrong_key(&app, &client)).await, 403);
    }
    app.stop().await;
}
