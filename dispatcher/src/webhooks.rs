//! Webhooks: HTTP deliveries of chosen events to operators' endpoints.
//!
//! When the outbox publisher publishes an event it also creates a delivery for
//! every enabled endpoint whose patterns match (same transaction). A loop on every
//! replica sends due deliveries, separately from dispatch (a slow endpoint never
//! delays a build): `POST <url>` with the CloudEvents JSON body and
//!
//! - `Content-Type: application/cloudevents+json`
//! - `X-FreeAgent-Event-Id: <event id>` (the same id on every attempt: deduplicate on it)
//! - `X-FreeAgent-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by the endpoint's secret>`
//!
//! A 2xx answer delivers; anything else is retried with exponential backoff and
//! full jitter, each attempt recorded. An endpoint whose every attempt failed for
//! longer than the limit is disabled (visible in `GET /api/webhooks`).

use std::time::{Duration, Instant};

use clap::Args;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::Backend;
use crate::events::cloud_event;
use crate::store::{self, StoreError, webhooks::DueDelivery};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-FreeAgent-Signature";
/// Header carrying the event id.
pub const EVENT_ID_HEADER: &str = "X-FreeAgent-Event-Id";

/// Webhook delivery settings.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Timeout of one delivery attempt, in milliseconds.
    #[arg(long, env = "FREEAGENT_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Attempts per delivery before it is given up.
    #[arg(long, env = "FREEAGENT_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: i32,

    /// First retry delay, in milliseconds; doubled per attempt (with jitter).
    #[arg(long, env = "FREEAGENT_WEBHOOK_BACKOFF_MS", default_value_t = 2_000)]
    pub webhook_backoff_ms: u64,

    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "FREEAGENT_WEBHOOK_MAX_BACKOFF_MS", default_value_t = 3_600_000)]
    pub webhook_max_backoff_ms: u64,

    /// An endpoint whose every attempt failed for this many seconds is disabled.
    #[arg(long, env = "FREEAGENT_WEBHOOK_DISABLE_AFTER_SECS", default_value_t = 86_400)]
    pub webhook_disable_after_secs: u64,

    /// How often due deliveries are looked for, in milliseconds.
    #[arg(long, env = "FREEAGENT_WEBHOOK_INTERVAL_MS", default_value_t = 500)]
    pub webhook_interval_ms: u64,
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `attempts + 1`: exponential, capped, with full jitter.
pub fn backoff(args: &WebhookArgs, attempts: i32) -> Duration {
    let exp = 2u64.saturating_pow(u32::try_from(attempts.max(0)).unwrap_or(0).min(40));
    let ceiling = args.webhook_backoff_ms.saturating_mul(exp).min(args.webhook_max_backoff_ms).max(1);
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    // Full jitter, but never less than half the ceiling (retries stay spaced).
    let jitter = u64::from_le_bytes(bytes) % (ceiling / 2 + 1);
    Duration::from_millis(ceiling / 2 + jitter)
}

/// Sends the deliveries that are due; returns how many attempts were made.
pub async fn deliver_step(backend: &Backend, http: &reqwest::Client, args: &WebhookArgs) -> Result<usize, StoreError> {
    let mut tx = backend.pool.begin().await?;
    let due = store::webhooks::lock_due(&mut *tx, &backend.encryption, 32).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut bodies = Vec::with_capacity(due.len());
    for delivery in &due {
        let body = match store::outbox::get(&mut *tx, delivery.event_id).await? {
            Some(event) => serde_json::to_vec(&cloud_event(backend.queue.names().namespace(), &event)).ok(),
            None => None,
        };
        bodies.push(body);
    }
    let attempts = due.iter().zip(&bodies).map(|(d, body)| attempt(http, args, d, body.as_deref()));
    let results = futures::future::join_all(attempts).await;
    for (delivery, (status, error, elapsed)) in due.iter().zip(results) {
        let duration_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        store::webhooks::record_attempt(&mut *tx, delivery.id, status, error.as_deref(), duration_ms).await?;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            store::webhooks::mark_delivered(&mut tx, delivery.id, delivery.webhook_id).await?;
        } else {
            let retry_in = i64::try_from(backoff(args, delivery.attempts).as_millis()).unwrap_or(i64::MAX);
            let disabled = store::webhooks::mark_failed(
                &mut tx,
                delivery.id,
                delivery.webhook_id,
                retry_in,
                args.webhook_max_attempts,
                args.webhook_disable_after_secs as f64,
            )
            .await?;
            if disabled {
                tracing::error!(webhook.id = %delivery.webhook_id, "webhook disabled: every delivery failed for too long");
            } else {
                tracing::warn!(webhook.id = %delivery.webhook_id, status, error, "webhook delivery failed; will retry");
            }
        }
    }
    tx.commit().await?;
    Ok(due.len())
}

async fn attempt(
    http: &reqwest::Client,
    args: &WebhookArgs,
    delivery: &DueDelivery,
    body: Option<&[u8]>,
) -> (Option<i32>, Option<String>, Duration) {
    let started = Instant::now();
    let Some(body) = body else {
        return (None, Some("the event no longer exists".into()), started.elapsed());
    };
    let secret = match &delivery.secret {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(webhook.id = %delivery.webhook_id, error = %e, "webhook secret cannot be decrypted");
            return (None, Some(format!("the signing secret cannot be decrypted: {e}")), started.elapsed());
        }
    };
    let result = http
        .post(&delivery.url)
        .timeout(Duration::from_millis(args.webhook_timeout_ms))
        .header("Content-Type", "application/cloudevents+json")
        .header(EVENT_ID_HEADER, delivery.event_id.to_string())
        .header(SIGNATURE_HEADER, signature(secret.expose_secret(), body))
        .body(body.to_vec())
        .send()
        .await;
    match result {
        Ok(response) => (Some(i32::from(response.status().as_u16())), None, started.elapsed()),
        Err(e) => (None, Some(e.to_string()), started.elapsed()),
    }
}

/// Runs [`deliver_step`] until `shutdown` fires.
pub async fn run(backend: Backend, args: WebhookArgs, shutdown: CancellationToken) {
    let http = reqwest::Client::builder()
        .user_agent(concat!("freeagent-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client without special settings builds");
    let mut ticker = tokio::time::interval(Duration::from_millis(args.webhook_interval_ms.max(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        loop {
            match deliver_step(&backend, &http, &args).await {
                Ok(0) => break,
                Ok(_) if shutdown.is_cancelled() => return,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery step failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let args = WebhookArgs {
            webhook_timeout_ms: 10_000,
            webhook_max_attempts: 12,
            webhook_backoff_ms: 1000,
            webhook_max_backoff_ms: 10_000,
            webhook_disable_after_secs: 86_400,
            webhook_interval_ms: 500,
        };
        for attempts in 0..20 {
            let ceiling = (1000u64 << attempts.min(20)).min(10_000);
            let d = backoff(&args, attempts).as_millis() as u64;
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempts}: {d}");
        }
    }
}
