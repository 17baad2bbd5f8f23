//! Credentials: the fleet API key, random tokens and their hashed storage.
//!
//! Tokens (build, worker, VM) are 32 random bytes in base64url without padding, so
//! they stay inside the `[A-Za-z0-9_-]` alphabet the VM scripts accept. Only their
//! SHA-256 is stored. Every comparison is constant-time.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Marks an HTTP answer as a failed authentication: a credential that is missing,
/// unknown, expired or wrong (401/403 from a credential check, never a refusal of
/// an authenticated caller such as "not this build's worker"). The services put it
/// in the response extensions; the failed-authentication limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailure;

/// Shortest API key accepted from configuration (the original controller's rule).
pub const MIN_API_KEY_LEN: usize = 16;

/// File in the data directory that keeps a generated API key.
pub const API_KEY_FILE: &str = "api-key";

/// A fresh random token: 32 bytes from the OS generator, base64url without padding
/// (43 characters).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The form a token is stored in: SHA-256, lowercase hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `presented` is the token whose stored hash is `stored_hash`, compared in
/// constant time.
pub fn token_matches(stored_hash: &str, presented: &str) -> bool {
    let presented_hash = hash_token(presented);
    stored_hash.as_bytes().ct_eq(presented_hash.as_bytes()).into()
}

/// The fleet API key, kept as a secret together with its digest for comparisons.
#[derive(Clone)]
pub struct ApiKey {
    secret: SecretString,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Why a configured API key was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// Shorter than [`MIN_API_KEY_LEN`].
    #[error("CONTROLLER_API_KEY must be at least {MIN_API_KEY_LEN} characters")]
    TooShort,
    /// Outside the alphabet the VM scripts accept.
    #[error("CONTROLLER_API_KEY may only contain A-Z, a-z, 0-9, '_' and '-' (build VMs reject other characters)")]
    BadAlphabet,
    /// The key file could not be read or written.
    #[error("cannot use the API key file {path}: {source}")]
    File {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ApiKey {
    /// Accepts a configured key after checking its length and alphabet.
    pub fn new(key: &str) -> Result<Self, ApiKeyError> {
        if key.len() < MIN_API_KEY_LEN {
            return Err(ApiKeyError::TooShort);
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(ApiKeyError::BadAlphabet);
        }
        Ok(Self { digest: Sha256::digest(key.as_bytes()).into(), secret: SecretString::from(key) })
    }

    /// Compares a presented key in constant time (digests, so the length leaks nothing).
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }

    /// The key itself, for the few places that must hand it on (printing it to the
    /// operator who asked, a test client).
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// Where the API key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `CONTROLLER_API_KEY` or `--api-key`.
    Configured,
    /// Read from the key file of an earlier start.
    File(PathBuf),
    /// Generated now and written to the key file.
    Generated(PathBuf),
}

/// Uses the configured key, else the one kept in `data_dir`, else generates one
/// and keeps it there (mode 0600) so every later start and the CLI find it.
pub fn load_or_generate_api_key(configured: Option<&str>, data_dir: &Path) -> Result<(ApiKey, KeySource), ApiKeyError> {
    if let Some(key) = configured.filter(|k| !k.is_empty()) {
        return Ok((ApiKey::new(key)?, KeySource::Configured));
    }
    let path = data_dir.join(API_KEY_FILE);
    let file_err = |source| ApiKeyError::File { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(contents) => Ok((ApiKey::new(contents.trim())?, KeySource::File(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(file_err)?;
            let key = generate_token();
            write_private(&path, &key).map_err(file_err)?;
            Ok((ApiKey::new(&key)?, KeySource::Generated(path)))
        }
        Err(e) => Err(file_err(e)),
    }
}

/// Writes a new file readable only by its owner (mode 0600 on Unix).
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_vm_safe() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(crate::model::is_valid_id(&a));
    }

    #[test]
    fn only_the_right_token_matches_its_hash() {
        let token = generate_token();
        let stored = hash_token(&token);
        assert_ne!(stored, token);
        assert!(token_matches(&stored, &token));
        assert!(!token_matches(&stored, &generate_token()));
        assert!(!token_matches(&stored, ""));
    }

    #[test]
    fn short_or_odd_keys_are_refused() {
        assert!(matches!(ApiKey::new("short"), Err(ApiKeyError::TooShort)));
        assert!(matches!(ApiKey::new("has spaces in it, sadly"), Err(ApiKeyError::BadAlphabet)));
        let key = ApiKey::new("a-perfectly-fine_key").unwrap();
        assert!(key.verify("a-perfectly-fine_key"));
        assert!(!key.verify("a-perfectly-fine_kez"));
        assert!(!format!("{key:?}").contains("fine"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn an_api_key_is_accepted_exactly_when_long_enough_and_vm_safe_and_matches_only_itself(
                key in "\\PC{0,40}|[A-Za-z0-9_-]{10,40}",
                other in "\\PC{0,40}",
            ) {
                let valid = key.len() >= MIN_API_KEY_LEN
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                match ApiKey::new(&key) {
                    Ok(api_key) => {
                        prop_assert!(valid);
                        prop_assert!(api_key.verify(&key));
                        prop_assert_eq!(api_key.verify(&other), other == key);
                        prop_assert_eq!(api_key.expose(), key.as_str());
                        let shown = format!("{api_key:?}");
                        prop_assert!(!shown.contains(&key));
                    }
                    Err(ApiKeyError::TooShort) => prop_assert!(key.len() < MIN_API_KEY_LEN),
                    Err(ApiKeyError::BadAlphabet) => prop_assert!(!valid),
                    Err(ApiKeyError::File { .. }) => prop_assert!(false, "no file involved"),
                }
            }

            #[test]
            fn a_presented_token_matches_a_stored_hash_only_when_it_is_that_token(presented in "\\PC{0,100}") {
                let token = generate_token();
                let stored = hash_token(&token);
                prop_assert_eq!(token_matches(&stored, &presented), presented == token);
                prop_assert!(token_matches(&hash_token(&presented), &presented));
                // Hashes of anything are 64 lowercase hex characters; garbage stored hashes match nothing.
                prop_assert_eq!(hash_token(&presented).len(), 64);
                prop_assert!(!token_matches(&presented, &presented) || presented == hash_token(&presented));
            }
        }
    }

    #[test]
    fn a_generated_key_is_kept_and_found_again() {
        let dir = std::env::temp_dir().join(format!("fa-key-{}", generate_token()));
        let (first, source) = load_or_generate_api_key(None, &dir).unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        let (second, source) = load_or_generate_api_key(None, &dir).unwrap();
        assert!(matches!(source, KeySource::File(_)));
        assert!(second.verify(first.expose()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
