//! Failed-authentication limits per client address.
//!
//! Every credential check in both routers answers a missing, unknown or wrong
//! credential with 401/403 and marks the answer with
//! [`dispatcher::auth::AuthFailure`]. This layer counts those answers per client
//! address in a keyed GCRA limiter (`governor`): an address may fail
//! `FREEAGENT_AUTH_FAILURE_BURST` times in a row, then once per
//! `60 / FREEAGENT_AUTH_FAILURES_PER_MINUTE` seconds. Past that, every request from
//! the address that presents a credential (`X-API-Key`, `X-Worker-Token`,
//! `X-Build-Token`, `X-VM-Token`, `X-Worker-Id`, or a one-time code to
//! `/authenticate`) is answered `429 {"error":...}` with `Retry-After`, before any
//! handler, any database lookup or any body is read. Requests without credentials
//! (health, public statistics) pass, and successful authentications cost nothing.
//!
//! The client address is the TCP peer. Behind a load balancer listed in
//! `FREEAGENT_TRUSTED_PROXIES` it is taken from `X-Forwarded-For` (the right-most
//! address that is not a trusted proxy) or `X-Real-IP`; from any other peer those
//! headers are ignored, so a client cannot pick its own key. IPv6 clients are
//! counted per /64 (one subscriber's allocation). Counters live in this replica's
//! memory: each replica limits on its own. Keys that have recovered are pruned
//! (at least once a minute, and whenever many are tracked), so memory is bounded by
//! the addresses that failed recently.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use dispatcher::auth::AuthFailure;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter, clock::Clock, clock::DefaultClock};
use ipnet::IpNet;

/// Headers that carry a credential (or, for the oldest workers' host monitor, an
/// identity that is checked against a lease).
const CREDENTIAL_HEADERS: [&str; 5] = ["x-api-key", "x-worker-token", "x-build-token", "x-vm-token", "x-worker-id"];
/// Tracked addresses past which pruning runs at once rather than once a minute.
const PRUNE_ABOVE: usize = 50_000;
/// Pruning interval when few addresses are tracked.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Settings of the failed-authentication limiter.
#[derive(Debug, Clone, Args)]
pub struct AuthLimitArgs {
    /// Failed authentications (401/403 for a missing or wrong API key, worker
    /// token, build token, VM token or one-time code) a client address may make per
    /// minute once its burst is spent; past that its requests that carry
    /// credentials get 429. 0 turns the limit off. Counted per replica.
    #[arg(long, env = "FREEAGENT_AUTH_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub auth_failures_per_minute: u32,

    /// Failed authentications a client address may make in a row before the
    /// per-minute rate applies.
    #[arg(long, env = "FREEAGENT_AUTH_FAILURE_BURST", default_value_t = 20)]
    pub auth_failure_burst: u32,

    /// Load balancers whose `X-Forwarded-For` / `X-Real-IP` name the client:
    /// comma-separated addresses or CIDR ranges (for example `10.0.0.5,172.16.0.0/12`).
    /// From any other peer those headers are ignored. Empty: the TCP peer is the client.
    #[arg(long, env = "FREEAGENT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
}

/// Parses `10.0.0.5` or `10.0.0.0/8` (a bare address is a one-address range).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
}

type Limiter = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// The failed-authentication limiter of one replica.
pub struct FailedAuthLimiter {
    /// `None` when the limit is off.
    limiter: Option<Limiter>,
    /// Addresses refused until the given instant.
    blocked: RwLock<HashMap<IpAddr, Instant>>,
    /// Entries in `blocked` (read without the lock on every request).
    blocked_count: AtomicUsize,
    trusted: Vec<IpNet>,
    last_prune: Mutex<Instant>,
}

impl std::fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuthLimiter").field("on", &self.limiter.is_some()).finish()
    }
}

impl FailedAuthLimiter {
    /// A limiter with the configured quota and trusted proxies.
    pub fn new(args: &AuthLimitArgs) -> Self {
        let quota = NonZeroU32::new(args.auth_failures_per_minute)
            .map(|rate| Quota::per_minute(rate).allow_burst(NonZeroU32::new(args.auth_failure_burst).unwrap_or(rate)));
        Self::with_quota(quota, args.trusted_proxies.clone())
    }

    fn with_quota(quota: Option<Quota>, trusted: Vec<IpNet>) -> Self {
        Self {
            limiter: quota.map(|q| RateLimiter::dashmap(q).with_middleware::<StateInformationMiddleware>()),
            blocked: RwLock::default(),
            blocked_count: AtomicUsize::new(0),
            trusted,
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// The address a request is counted under (see the module documentation).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if !forwarded.is_empty() {
            let mut client = peer;
            for hop in forwarded.iter().rev() {
                let Ok(hop) = hop.parse::<IpAddr>().map(|a| a.to_canonical()) else {
                    // Unreadable: trust nothing further left than the last good hop.
                    return client;
                };
                client = hop;
                if !self.is_trusted(hop) {
                    return hop;
                }
            }
            return client;
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map_or(peer, |a| a.to_canonical())
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// How long `client` is still refused, if it is.
    pub fn blocked_for(&self, client: IpAddr) -> Option<Duration> {
        if self.blocked_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let until = *self.blocked.read().expect("limiter lock").get(&key_of(client))?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Counts one failed authentication of `client`; returns how long it is now
    /// refused when this failure spent its allowance.
    pub fn record_failure(&self, client: IpAddr) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        let key = key_of(client);
        let wait = match limiter.check_key(&key) {
            Ok(state) if state.remaining_burst_capacity() > 0 => None,
            Ok(state) => Some(state.quota().replenish_interval()),
            Err(not_until) => Some(not_until.wait_time_from(limiter.clock().now())),
        };
        if let Some(wait) = wait {
            let mut blocked = self.blocked.write().expect("limiter lock");
            blocked.insert(key, Instant::now() + wait);
            self.blocked_count.store(blocked.len(), Ordering::Relaxed);
            drop(blocked);
            tracing::warn!(
                client.ip = %key,
                retry_after_secs = wait.as_secs(),
                "too many failed authentications: refusing credentials from this address for a while"
            );
        }
        self.prune_if_due();
        wait
    }

    fn prune_if_due(&self) {
        let Some(limiter) = &self.limiter else { return };
        let due = {
            let mut last = self.last_prune.lock().expect("limiter lock");
            let due = last.elapsed() >= PRUNE_EVERY || limiter.len() > PRUNE_ABOVE;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.prune();
        }
    }

    /// Forgets addresses whose counters are back to a fresh state and blocks that
    /// have ended.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        let mut blocked = self.blocked.write().expect("limiter lock");
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
        self.blocked_count.store(blocked.len(), Ordering::Relaxed);
    }

    /// Addresses whose failures are remembered (counters and blocks).
    pub fn tracked_addresses(&self) -> usize {
        self.limiter.as_ref().map_or(0, Limiter::len) + self.blocked_count.load(Ordering::Relaxed)
    }
}

/// IPv4 addresses count alone, IPv6 addresses per /64.
fn key_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

fn presents_credentials(request: &Request) -> bool {
    let headers = request.headers();
    CREDENTIAL_HEADERS.iter().any(|name| headers.contains_key(*name))
        || (request.method() == Method::POST && request.uri().path().ends_with("/authenticate"))
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let body = Json(serde_json::json!({
        "error": format!("Too many failed authentication attempts from this address; retry in {secs} s"),
    }));
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The connection's peer, as axum's `ConnectInfo` extractor finds it (a test may
/// supply one with `MockConnectInfo`).
fn peer_of(request: &Request) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| extensions.get::<MockConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// The middleware. Without a peer address (a router driven in-process, with no
/// connection) nothing is counted.
pub async fn limit_failed_auth(
    State(limiter): State<Arc<FailedAuthLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = peer_of(&request);
    let (Some(peer), true) = (peer, limiter.limiter.is_some()) else {
        return next.run(request).await;
    };
    if !presents_credentials(&request) {
        return next.run(request).await;
    }
    let client = limiter.client_address(peer, request.headers());
    if let Some(wait) = limiter.blocked_for(client) {
        return too_many(wait);
    }
    let response = next.run(request).await;
    if response.extensions().get::<AuthFailure>().is_some() {
        limiter.record_failure(client);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    fn limiter(per_minute: u32, burst: u32, trusted: &[&str]) -> FailedAuthLimiter {
        FailedAuthLimiter::new(&AuthLimitArgs {
            auth_failures_per_minute: per_minute,
            auth_failure_burst: burst,
            trusted_proxies: trusted.iter().map(|t| parse_net(t).unwrap()).collect(),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let l = limiter(10, 10, &["10.0.0.0/8", "192.168.1.1"]);
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(l.client_address(ip("10.0.0.2"), &xff), ip("203.0.113.9"), "right-most untrusted hop");
        assert_eq!(l.client_address(ip("198.51.100.1"), &xff), ip("198.51.100.1"), "untrusted peer: ignored");
        let real = headers(&[("x-real-ip", "203.0.113.5")]);
        assert_eq!(l.client_address(ip("192.168.1.1"), &real), ip("203.0.113.5"));
        assert_eq!(l.client_address(ip("192.168.1.2"), &real), ip("192.168.1.2"));
        let junk = headers(&[("x-forwarded-for", "203.0.113.1, garbage, 10.2.2.2")]);
        assert_eq!(l.client_address(ip("10.0.0.2"), &junk), ip("10.2.2.2"), "stops at an unreadable hop");
        let all_trusted = headers(&[("x-forwarded-for", "10.3.3.3, 10.4.4.4")]);
        assert_eq!(l.client_address(ip("10.0.0.2"), &all_trusted), ip("10.3.3.3"));
        assert!(parse_net("not an address").is_err());
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_v4_as_v4() {
        assert_eq!(key_of(ip("2001:db8:1:2:aaaa::1")), key_of(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:3::1")));
        assert_eq!(key_of(ip("::ffff:203.0.113.1")), ip("203.0.113.1"));
    }

    #[test]
    fn the_burst_is_spent_then_the_address_waits_and_others_do_not() {
        let l = limiter(1, 3, &[]);
        let a = ip("203.0.113.1");
        assert_eq!(l.record_failure(a), None);
        assert_eq!(l.record_failure(a), None);
        let wait = l.record_failure(a).expect("the third failure spends the burst");
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(l.blocked_for(a).is_some());
        assert!(l.blocked_for(ip("203.0.113.2")).is_none());
        let off = limiter(0, 3, &[]);
        for _ in 0..100 {
            assert_eq!(off.record_failure(a), None);
        }
        assert_eq!(off.tracked_addresses(), 0);
    }

    #[test]
    fn recovered_addresses_are_pruned() {
        // 60,000 per minute: a cell every millisecond, so counters recover at once.
        let l = limiter(60_000, 1, &[]);
        for n in 0..2000u32 {
            l.record_failure(IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + n)));
        }
        assert!(l.tracked_addresses() >= 2000);
        std::thread::sleep(Duration::from_millis(20));
        l.prune();
        assert_eq!(l.tracked_addresses(), 0);
    }

    async fn refuse() -> Response {
        let mut response = StatusCode::FORBIDDEN.into_response();
        response.extensions_mut().insert(AuthFailure);
        response
    }

    fn app(limiter: FailedAuthLimiter) -> Router {
        Router::new()
            .route("/refuse", get(refuse))
            .route("/ok", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(limiter), limit_failed_auth))
    }

    async fn status(router: &Router, path: &str, with_key: bool) -> u16 {
        let mut request = axum::http::Request::get(path);
        if with_key {
            request = request.header("x-api-key", "guess");
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_middleware_refuses_credentials_after_the_burst_and_skips_requests_without_a_peer() {
        let peer = SocketAddr::from(([203, 0, 113, 1], 4000));
        let served = app(limiter(1, 2, &[])).layer(MockConnectInfo(peer));
        assert_eq!(status(&served, "/refuse", true).await, 403);
        assert_eq!(status(&served, "/refuse", true).await, 403);
        assert_eq!(status(&served, "/refuse", true).await, 429);
        assert_eq!(status(&served, "/ok", true).await, 429, "credentials from a blocked address");
        assert_eq!(status(&served, "/ok", false).await, 200, "no credentials: not refused");

        let in_process = app(limiter(1, 2, &[]));
        for _ in 0..5 {
            assert_eq!(status(&in_process, "/refuse", true).await, 403);
        }
    }
}
