//! The JetStream side: names, topology, job publishing and lease verbs.
//!
//! Every stream, consumer and subject name derives from the namespace
//! (`FREEAGENT_NAMESPACE`) so several deployments or test runs share one server.
//! The consumer configuration is owned here, in [`job_consumer_config`], and only
//! [`Queue::ensure_topology`] (run by `migrate` and `serve`) writes it.
//! Every publish awaits its acknowledgement, bounded by a timeout.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::{LeaseArgs, NatsArgs};
use crate::model::{BuildId, Platform};

/// How long the events stream keeps events unless configured otherwise.
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Window in which JetStream drops a second publish with the same `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Concurrent leases one platform consumer allows (JetStream's MaxAckPending).
pub const MAX_ACK_PENDING: i64 = 20_000;

/// Concurrent pull requests one platform consumer accepts (MaxWaiting).
pub const MAX_WAITING: i64 = 4_096;

/// A namespace that cannot be used in stream names and subjects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("FREEAGENT_NAMESPACE must be 1-32 characters of a-z, 0-9, '_' or '-'")]
pub struct InvalidNamespace;

/// Names of every stream, consumer and subject of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

impl Names {
    /// Checks the namespace (lowercase, digits, `_`, `-`; at most 32 characters).
    pub fn new(namespace: &str) -> Result<Self, InvalidNamespace> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 32
            && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(Self { namespace: namespace.to_owned() }) } else { Err(InvalidNamespace) }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The work-queue stream of jobs, e.g. `FREEAGENT_JOBS`.
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.namespace.to_uppercase())
    }

    /// The subject a platform's jobs are published to, e.g. `freeagent.jobs.ios`.
    pub fn job_subject(&self, platform: Platform) -> String {
        format!("{}.jobs.{}", self.namespace, platform.as_str())
    }

    /// The durable pull consumer of a platform's jobs, e.g. `jobs-ios`.
    pub fn job_consumer(&self, platform: Platform) -> String {
        format!("jobs-{}", platform.as_str())
    }

    /// The stream of build and worker events, e.g. `FREEAGENT_EVENTS`.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.namespace.to_uppercase())
    }

    /// Subject of one event, e.g. `freeagent.events.build.<id>.completed`.
    pub fn event_subject(&self, kind: &str, id: &str, event_type: &str) -> String {
        format!("{}.events.{kind}.{id}.{event_type}", self.namespace)
    }

    /// Core-NATS subject of a build's live log lines.
    pub fn log_subject(&self, build: &BuildId) -> String {
        format!("{}.logs.{build}", self.namespace)
    }
}

/// The body of a job message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The build to run.
    pub build_id: BuildId,
    /// Its platform (also the subject's last token).
    pub platform: Platform,
}

/// Why a publish did not get its acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No acknowledgement within the configured timeout (server down or slow).
    #[error("no acknowledgement from JetStream within {0:?}")]
    Timeout(Duration),
    /// The server or the client refused.
    #[error("JetStream publish failed: {0}")]
    Failed(String),
}

/// Handle to JetStream for one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    publish_timeout: Duration,
}

impl Queue {
    /// Connects to NATS. The client reconnects by itself after a server restart;
    /// the first connection is retried for up to `startup_wait`.
    pub async fn connect(args: &NatsArgs, startup_wait: Duration) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let names = Names::new(&args.namespace)?;
        let deadline = tokio::time::Instant::now() + startup_wait;
        let client = loop {
            match async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .name("freeagent")
                .connect(args.nats_url.as_str())
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "NATS not reachable yet, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot reach NATS at {} (is nats-server running with -js? check NATS_URL)",
                            args.nats_url
                        )
                    });
                }
            }
        };
        let js = jetstream::ContextBuilder::new().timeout(args.publish_timeout()).build(client.clone());
        Ok(Self { client, js, names, publish_timeout: args.publish_timeout() })
    }

    /// The names of this namespace.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the client is connected to the server right now.
    pub fn is_connected(&self) -> bool {
        matches!(self.client.connection_state(), async_nats::connection::State::Connected)
    }

    /// The core NATS client (live logs, subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Creates or updates the jobs stream, one consumer per platform and the events
    /// stream. The only writer of consumer configuration.
    pub async fn ensure_topology(&self, lease: &LeaseArgs, events_max_age: Duration) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let jobs = stream::Config {
            name: self.names.jobs_stream(),
            subjects: vec![format!("{}.jobs.*", self.names.namespace)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            description: Some("Free Agent build jobs, one subject per platform".into()),
            ..Default::default()
        };
        let jobs_stream = self.create_or_update_stream(jobs).await.context("jobs stream")?;
        for platform in Platform::ALL {
            let config = job_consumer_config(&self.names, platform, lease);
            let name = self.names.job_consumer(platform);
            match jobs_stream.get_consumer::<consumer::pull::Config>(&name).await {
                Ok(existing)
                    if existing.cached_info().config.ack_wait == config.ack_wait
                        && existing.cached_info().config.max_deliver == config.max_deliver => {}
                Ok(_) => {
                    // JetStream applies a durable create with changed editable fields
                    // (ack wait, max deliver) as an update and keeps pending acks.
                    if let Err(e) = jobs_stream.create_consumer(config).await {
                        tracing::warn!(consumer = %name, error = %e, "consumer settings could not be updated");
                    }
                }
                Err(_) => {
                    jobs_stream.create_consumer(config).await.with_context(|| format!("creating consumer {name}"))?;
                }
            }
        }
        let events = stream::Config {
            name: self.names.events_stream(),
            subjects: vec![format!("{}.events.>", self.names.namespace)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: events_max_age,
            duplicate_window: DUPLICATE_WINDOW,
            description: Some("Free Agent build and worker events (CloudEvents JSON)".into()),
            ..Default::default()
        };
        self.create_or_update_stream(events).await.context("events stream")?;
        Ok(())
    }

    async fn create_or_update_stream(&self, config: stream::Config) -> anyhow::Result<stream::Stream> {
        match self.js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await?;
                if info.config.subjects != config.subjects || info.config.max_age != config.max_age {
                    self.js.update_stream(&config).await?;
                }
                Ok(existing)
            }
            Err(_) => Ok(self.js.get_or_create_stream(config).await?),
        }
    }

    /// Looks up (never creates or changes) the platform consumers.
    pub async fn job_consumers(&self) -> anyhow::Result<std::collections::HashMap<Platform, consumer::PullConsumer>> {
        use anyhow::Context as _;
        let stream = self.jobs_stream().await?;
        let mut consumers = std::collections::HashMap::new();
        for platform in Platform::ALL {
            let name = self.names.job_consumer(platform);
            let consumer = stream
                .get_consumer(&name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("consumer {name} is missing: run `freeagent migrate`"))?;
            consumers.insert(platform, consumer);
        }
        Ok(consumers)
    }

    /// Fetches at most one job without waiting for new ones, bounded by the
    /// request's `expires` and a client-side timeout. `Ok(None)` means "nothing
    /// right now", never "queue empty".
    pub async fn fetch_one(consumer: &consumer::PullConsumer) -> anyhow::Result<Option<jetstream::Message>> {
        use futures::StreamExt;
        let fetch = async {
            let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await?;
            match batch.next().await {
                Some(Ok(message)) => Ok::<_, anyhow::Error>(Some(message)),
                Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
                None => Ok(None),
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), fetch).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!("JetStream fetch timed out"),
        }
    }

    /// The jobs stream.
    pub async fn jobs_stream(&self) -> anyhow::Result<stream::Stream> {
        Ok(self.js.get_stream(self.names.jobs_stream()).await?)
    }

    /// Publishes a build's job and waits for the acknowledgement. Returns the
    /// stream sequence. The message id is [`job_message_id`]: a duplicate publish of
    /// the same queueing inside the window returns the sequence of the first one.
    pub async fn publish_job(&self, build: &BuildId, platform: Platform, attempt: i32) -> Result<u64, PublishError> {
        let body = serde_json::to_vec(&JobMessage { build_id: build.clone(), platform })
            .expect("a job message always serializes");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job_message_id(build, attempt).as_str());
        self.publish_with_ack(self.names.job_subject(platform), headers, body.into()).await
    }

    /// Publishes any message with headers and waits (bounded) for its acknowledgement.
    pub async fn publish_with_ack(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, PublishError> {
        let timeout = self.publish_timeout;
        let attempt = async {
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| PublishError::Failed(e.to_string()))?;
            ack.await.map_err(|e| PublishError::Failed(e.to_string()))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PublishError::Timeout(timeout)),
        }
    }

    /// Removes a queued job message (a pending build was cancelled). `Ok(false)` when
    /// it was already gone (delivered, or never stored).
    pub async fn delete_job(&self, sequence: u64) -> anyhow::Result<bool> {
        let stream = self.jobs_stream().await?;
        match stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(e) if matches!(e.kind(), stream::DeleteMessageErrorKind::JetStream(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Acknowledges the delivery behind `reply_subject` (the build reached a terminal
    /// state; a work-queue stream then deletes the message).
    pub async fn ack(&self, reply_subject: &str) -> anyhow::Result<()> {
        self.verb(reply_subject, b"+ACK").await
    }

    /// Resets JetStream's ack deadline of the delivery behind `reply_subject`.
    pub async fn in_progress(&self, reply_subject: &str) -> anyhow::Result<()> {
        self.verb(reply_subject, b"+WPI").await
    }

    /// Gives a delivery back for immediate redelivery (fetched but not handed out).
    pub async fn nak(&self, reply_subject: &str) -> anyhow::Result<()> {
        self.verb(reply_subject, b"-NAK").await
    }

    async fn verb(&self, reply_subject: &str, verb: &'static [u8]) -> anyhow::Result<()> {
        self.client.publish(reply_subject.to_owned(), Bytes::from_static(verb)).await?;
        self.client.flush().await?;
        Ok(())
    }

    /// Terminates the delivery behind `reply_subject` (any connection may settle a
    /// lease through its reply subject). Sent only after the commit that decided it.
    pub async fn term(&self, reply_subject: &str) -> anyhow::Result<()> {
        self.verb(reply_subject, b"+TERM").await
    }
}

/// `Nats-Msg-Id` of a build's job: the build id when first queued, then
/// `<id>-a<attempt>` for each requeue after a lost lease, so a requeue is never
/// swallowed by the duplicate window of an earlier queueing.
pub fn job_message_id(build: &BuildId, attempt: i32) -> String {
    if attempt == 0 { build.to_string() } else { format!("{build}-a{attempt}") }
}

/// The one place the platform consumers' configuration is decided.
pub fn job_consumer_config(names: &Names, platform: Platform, lease: &LeaseArgs) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names.job_consumer(platform)),
        description: Some(format!("{} jobs", platform.as_str())),
        filter_subject: names.job_subject(platform),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(lease.lease_ttl_secs.max(1)),
        // Each expired lease is one delivery; a little slack above the attempt limit
        // lets the reaper (not the server) decide the build's fate.
        max_deliver: i64::from(lease.max_attempts) + 2,
        max_ack_pending: MAX_ACK_PENDING,
        max_waiting: MAX_WAITING,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_namespace() {
        let names = Names::new("freeagent").unwrap();
        assert_eq!(names.jobs_stream(), "FREEAGENT_JOBS");
        assert_eq!(names.events_stream(), "FREEAGENT_EVENTS");
        assert_eq!(names.job_subject(Platform::Ios), "freeagent.jobs.ios");
        assert_eq!(names.job_consumer(Platform::Android), "jobs-android");
        assert_eq!(names.event_subject("build", "abc", "completed"), "freeagent.events.build.abc.completed");
    }

    #[test]
    fn namespaces_that_would_break_subjects_are_refused() {
        for bad in ["", "has.dot", "UPPER", "with space", "star*", &"x".repeat(33)] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
        assert!(Names::new("t_1-ok").is_ok());
    }
}
