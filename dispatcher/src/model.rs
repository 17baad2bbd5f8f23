//! The domain model: identifiers, platforms and build states.
//!
//! Pure code without I/O. Wire DTOs are parsed into these types at the edge of each
//! HTTP service; the store and the queue speak only these types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted from a client (worker ids are client-supplied on
/// re-registration; build ids are generated but arrive back in paths).
pub const MAX_ID_LEN: usize = 64;

/// Whether `s` is a non-empty identifier in the alphabet every client and the VM
/// scripts accept: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Error for an identifier outside `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier")]
pub struct InvalidId;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
        pub struct $name(String);

        impl $name {
            /// A fresh random identifier (nanoid, 21 characters of `[A-Za-z0-9_-]`).
            pub fn generate() -> Self {
                Self(nanoid::nanoid!())
            }

            /// Parses a client-supplied identifier.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if is_valid_id(s) { Ok(Self(s.to_owned())) } else { Err(InvalidId) }
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                if is_valid_id(&s) { Ok(Self(s)) } else { Err(InvalidId) }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// Identifier of a build.
    BuildId
);
id_type!(
    /// Identifier of a worker.
    WorkerId
);

/// Target platform of a build; each has its own job subject and consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// iOS: produces an `.ipa`.
    Ios,
    /// Android: produces an `.apk`.
    Android,
}

impl Platform {
    /// Every platform, in a fixed order.
    pub const ALL: [Platform; 2] = [Platform::Ios, Platform::Android];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }

    /// File extension of the artifact a build of this platform produces.
    pub fn artifact_extension(self) -> &'static str {
        match self {
            Platform::Ios => "ipa",
            Platform::Android => "apk",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a platform other than `ios` or `android`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform")]
pub struct UnknownPlatform;

impl FromStr for Platform {
    type Err = UnknownPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ios" => Ok(Platform::Ios),
            "android" => Ok(Platform::Android),
            _ => Err(UnknownPlatform),
        }
    }
}

/// Stored state of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    /// Waiting in the queue.
    Pending,
    /// Leased to a worker that has not reported activity yet.
    Assigned,
    /// Leased to a worker that is working on it.
    Building,
    /// Finished with an artifact.
    Completed,
    /// Finished without an artifact.
    Failed,
    /// Cancelled by its submitter or an operator.
    Cancelled,
}

/// Error for a transition the build state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a build cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// State before.
    pub from: BuildStatus,
    /// Requested state.
    pub to: BuildStatus,
}

impl BuildStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Assigned => "assigned",
            BuildStatus::Building => "building",
            BuildStatus::Completed => "completed",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    /// What clients see: every client generation knows only five values, so a
    /// cancelled build is shown as `failed` (with "Build cancelled by user").
    pub fn wire(self) -> &'static str {
        self.wire_status().as_str()
    }

    /// [`BuildStatus::wire`] as the type the wire DTOs carry.
    pub fn wire_status(self) -> WireStatus {
        match self {
            BuildStatus::Pending => WireStatus::Pending,
            BuildStatus::Assigned => WireStatus::Assigned,
            BuildStatus::Building => WireStatus::Building,
            BuildStatus::Completed => WireStatus::Completed,
            BuildStatus::Failed | BuildStatus::Cancelled => WireStatus::Failed,
        }
    }

    /// Completed, failed and cancelled builds never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, BuildStatus::Completed | BuildStatus::Failed | BuildStatus::Cancelled)
    }

    /// Assigned or building: a worker holds a lease.
    pub fn is_leased(self) -> bool {
        matches!(self, BuildStatus::Assigned | BuildStatus::Building)
    }

    /// Checks that `self -> to` is a legal transition.
    pub fn transition(self, to: BuildStatus) -> Result<BuildStatus, IllegalTransition> {
        use BuildStatus::*;
        let legal = match (self, to) {
            (Pending, Assigned) => true,
            (Assigned, Building) => true,
            // A lease lost, abandoned or given back by unregister.
            (Assigned | Building, Pending) => true,
            (Assigned | Building, Completed) => true,
            (Pending | Assigned | Building, Failed) => true,
            (Pending | Assigned | Building, Cancelled) => true,
            _ => false,
        };
        if legal { Ok(to) } else { Err(IllegalTransition { from: self, to }) }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A build's status on the wire. The CLI refuses any value but these five, so a
/// cancelled build is shown as `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WireStatus {
    /// Waiting in the queue.
    Pending,
    /// Handed to a worker.
    Assigned,
    /// A worker reported activity.
    Building,
    /// Finished with an artifact.
    Completed,
    /// Finished without an artifact, or cancelled.
    Failed,
}

impl WireStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WireStatus::Pending => "pending",
            WireStatus::Assigned => "assigned",
            WireStatus::Building => "building",
            WireStatus::Completed => "completed",
            WireStatus::Failed => "failed",
        }
    }
}

/// Error for a status string the database should never hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown build status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for BuildStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => BuildStatus::Pending,
            "assigned" => BuildStatus::Assigned,
            "building" => BuildStatus::Building,
            "completed" => BuildStatus::Completed,
            "failed" => BuildStatus::Failed,
            "cancelled" => BuildStatus::Cancelled,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// The error message stored on (and shown for) a cancelled build.
pub const CANCELLED_MESSAGE: &str = "Build cancelled by user";

/// Client text made storable: Postgres `text` and `jsonb` cannot hold U+0000, so
/// it becomes U+FFFD (which keeps a trace that something was there) at the edge,
/// instead of failing the statement that would store it.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// [`storable_text`] for every string and key of a JSON value.
pub fn storable_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(storable_text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (storable_text(k), storable_json(v))).collect())
        }
        other => other,
    }
}

/// Level of a build log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Telemetry chatter.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_loses_nul_characters_everywhere_in_json() {
        assert_eq!(storable_text("a\0b".into()), "a\u{FFFD}b");
        assert_eq!(storable_text("plain".into()), "plain");
        let value = serde_json::json!({ "k\0": ["x\0", { "n": "\0" }], "n": 1 });
        assert_eq!(
            storable_json(value),
            serde_json::json!({ "k\u{FFFD}": ["x\u{FFFD}", { "n": "\u{FFFD}" }], "n": 1 })
        );
    }

    #[test]
    fn ids_accept_only_the_vm_safe_alphabet() {
        assert!(BuildId::parse("abc_DEF-123").is_ok());
        assert!(BuildId::parse("").is_err());
        assert!(BuildId::parse("../../etc/passwd").is_err());
        assert!(BuildId::parse("a b").is_err());
        assert!(BuildId::parse(&"x".repeat(65)).is_err());
        assert!(WorkerId::parse(&"x".repeat(64)).is_ok());
        let generated = BuildId::generate();
        assert_eq!(generated.as_str().len(), 21);
        assert!(is_valid_id(generated.as_str()));
    }

    #[test]
    fn platforms_parse_only_ios_and_android() {
        assert_eq!("ios".parse(), Ok(Platform::Ios));
        assert_eq!("android".parse(), Ok(Platform::Android));
        assert!("IOS".parse::<Platform>().is_err());
        assert!("windows".parse::<Platform>().is_err());
    }

    #[test]
    fn cancelled_builds_are_shown_as_failed() {
        assert_eq!(BuildStatus::Cancelled.wire(), "failed");
        assert_eq!(BuildStatus::Building.wire(), "building");
    }

    #[test]
    fn terminal_states_never_change() {
        use BuildStatus::*;
        for terminal in [Completed, Failed, Cancelled] {
            for to in [Pending, Assigned, Building, Completed, Failed, Cancelled] {
                assert!(terminal.transition(to).is_err(), "{terminal} -> {to}");
            }
        }
    }

    #[test]
    fn a_pending_build_cannot_complete_without_a_lease() {
        assert!(BuildStatus::Pending.transition(BuildStatus::Completed).is_err());
        assert!(BuildStatus::Pending.transition(BuildStatus::Cancelled).is_ok());
        assert!(BuildStatus::Building.transition(BuildStatus::Pending).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn config() -> ProptestConfig {
            ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_string_parses_as_an_id_exactly_when_it_is_in_the_vm_safe_alphabet(s in "\\PC{0,80}|[A-Za-z0-9_-]{0,70}") {
                let valid = !s.is_empty() && s.len() <= MAX_ID_LEN
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                prop_assert_eq!(BuildId::parse(&s).is_ok(), valid);
                prop_assert_eq!(WorkerId::try_from(s.clone()).is_ok(), valid);
                let json = serde_json::to_string(&s).unwrap();
                prop_assert_eq!(serde_json::from_str::<BuildId>(&json).is_ok(), valid);
                if let Ok(id) = BuildId::parse(&s) {
                    prop_assert_eq!(id.as_str(), s.as_str());
                    prop_assert_eq!(id.to_string(), s.clone());
                    prop_assert_eq!(BuildId::parse(id.as_str()), Ok(id.clone()));
                    let back: BuildId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
                    prop_assert_eq!(back, id.clone());
                    prop_assert_eq!(String::from(id), s);
                }
            }

            #[test]
            fn arbitrary_platform_and_status_spellings_never_panic(s in "\\PC{0,24}") {
                if let Ok(platform) = s.parse::<Platform>() {
                    prop_assert_eq!(platform.as_str(), s.as_str());
                }
                if let Ok(status) = s.parse::<BuildStatus>() {
                    prop_assert_eq!(status.as_str(), s.as_str());
                }
            }
        }

        #[test]
        fn generated_ids_always_parse_back() {
            for _ in 0..1000 {
                let id = BuildId::generate();
                assert_eq!(BuildId::parse(id.as_str()), Ok(id));
            }
        }
    }

    #[test]
    fn statuses_round_trip_through_their_spelling() {
        use BuildStatus::*;
        for s in [Pending, Assigned, Building, Completed, Failed, Cancelled] {
            assert_eq!(s.as_str().parse::<BuildStatus>(), Ok(s));
        }
    }
}
