//! Encryption at rest: certificate bundles in the object store and webhook signing
//! secrets in Postgres.
//!
//! One 32-byte key per fleet (`FREEAGENT_ENCRYPTION_KEY`, or generated once and
//! kept in the data directory like the API key). The cipher is XChaCha20-Poly1305
//! (an AEAD: whoever lacks the key can neither read nor alter what it sealed), with
//! a fresh random nonce for every object. What an object is for (its object path,
//! which names the build; a webhook's id) is authenticated as associated data, so
//! a sealed object copied to another build or another webhook does not open.
//!
//! Two forms:
//!
//! - [`EncryptionKey::seal`] / [`EncryptionKey::open`]: small values in one piece
//!   (`FAS1`, key id, 24-byte nonce, ciphertext and tag).
//! - [`StreamSealer`] / [`StreamOpener`]: large blobs in chunks of [`CHUNK`] bytes
//!   with the STREAM construction (`aead-stream`: a 19-byte random nonce prefix, a
//!   chunk counter and a last-chunk flag in every nonce), so memory stays bounded
//!   and truncating, reordering or splicing chunks is detected. Layout: `FAE1`, key
//!   id, nonce prefix, then chunks of `CHUNK + 16` bytes, the last one shorter.
//!
//! The key id (8 bytes of an HMAC of a fixed label under the key) tells "sealed
//! with another key" apart from "altered or not for this object", so an operator
//! who gave replicas different keys gets an error that says so.

use std::path::{Path, PathBuf};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::auth::KeySource;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// File in the data directory that keeps a generated key.
pub const KEY_FILE: &str = "encryption-key";
/// Plaintext bytes per chunk of a sealed stream.
pub const CHUNK: usize = 64 * 1024;

/// Authentication tag per sealed piece.
const TAG: usize = 16;
/// Bytes of a key id.
const KEY_ID: usize = 8;
/// Marks a value sealed in one piece.
const SEALED_MAGIC: &[u8; 4] = b"FAS1";
/// Marks a sealed stream.
const STREAM_MAGIC: &[u8; 4] = b"FAE1";
/// Nonce of a value sealed in one piece.
const NONCE: usize = 24;
/// Nonce prefix of a stream (the STREAM counter and flag take the other 5 bytes).
const STREAM_NONCE: usize = 19;
/// Header of a value sealed in one piece.
const SEALED_HEADER: usize = SEALED_MAGIC.len() + KEY_ID + NONCE;
/// Header of a sealed stream.
pub const STREAM_HEADER: usize = STREAM_MAGIC.len() + KEY_ID + STREAM_NONCE;

/// Why a key from configuration or from the key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error(
        "FREEAGENT_ENCRYPTION_KEY must be 32 bytes in base64 (for example the output of `openssl rand -base64 32`)"
    )]
    Malformed,
    /// The key file could not be read or written.
    #[error("cannot use the encryption key file {path}: {source}")]
    File {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why sealed bytes did not open. Never carries any of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The bytes do not start like anything this module sealed.
    #[error("not encrypted by this controller")]
    NotSealed,
    /// Sealed with another key.
    #[error(
        "sealed with another encryption key (key id {found}, this replica uses {expected}); \
         every replica must use the same FREEAGENT_ENCRYPTION_KEY"
    )]
    WrongKey {
        /// Key id found in the header.
        found: String,
        /// Key id of the key in use.
        expected: String,
    },
    /// Altered, truncated, or sealed for another object.
    #[error("altered, truncated or sealed for another object")]
    Corrupt,
}

/// The fleet's encryption key with its public id.
#[derive(Clone)]
pub struct EncryptionKey {
    key: Key,
    id: [u8; KEY_ID],
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey(id {})", self.id())
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&bytes).expect("HMAC takes keys of any length");
        mac.update(b"freeagent encryption key id");
        let digest = mac.finalize().into_bytes();
        let mut id = [0u8; KEY_ID];
        id.copy_from_slice(&digest[..KEY_ID]);
        Self { key: Key::from(bytes), id }
    }

    /// A key from its base64 form (standard alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| KeyError::Malformed)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_bytes(random())
    }

    /// The key id, hex: safe to log, and equal on replicas that share the key.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.key)
    }

    /// Seals a small value for the object named by `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = random();
        let mut out = Vec::with_capacity(SEALED_HEADER + plaintext.len() + TAG);
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        let header = out.clone();
        let ciphertext = self
            .cipher()
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &[&header[..], aad].concat() })
            .expect("XChaCha20-Poly1305 seals any value that fits in memory");
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed by [`EncryptionKey::seal`] for the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < SEALED_MAGIC.len() || &sealed[..SEALED_MAGIC.len()] != SEALED_MAGIC {
            return Err(DecryptError::NotSealed);
        }
        if sealed.len() < SEALED_HEADER + TAG {
            return Err(DecryptError::Corrupt);
        }
        self.check_id(&sealed[SEALED_MAGIC.len()..SEALED_MAGIC.len() + KEY_ID])?;
        let (header, ciphertext) = sealed.split_at(SEALED_HEADER);
        let nonce = XNonce::try_from(&header[SEALED_MAGIC.len() + KEY_ID..]).map_err(|_| DecryptError::Corrupt)?;
        self.cipher()
            .decrypt(&nonce, Payload { msg: ciphertext, aad: &[header, aad].concat() })
            .map_err(|_| DecryptError::Corrupt)
    }

    fn check_id(&self, found: &[u8]) -> Result<(), DecryptError> {
        if found == self.id {
            Ok(())
        } else {
            Err(DecryptError::WrongKey { found: hex::encode(found), expected: self.id() })
        }
    }

    /// Starts sealing a stream for the object named by `aad`.
    pub fn stream_sealer(&self, aad: &[u8]) -> StreamSealer {
        let prefix: [u8; STREAM_NONCE] = random();
        let mut header = Vec::with_capacity(STREAM_HEADER);
        header.extend_from_slice(STREAM_MAGIC);
        header.extend_from_slice(&self.id);
        header.extend_from_slice(&prefix);
        StreamSealer {
            encryptor: Some(EncryptorBE32::from_aead(self.cipher(), &prefix.into())),
            aad: [&header[..], aad].concat(),
            pending_header: Some(header),
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    /// Starts opening a stream sealed for the object named by `aad`.
    pub fn stream_opener(&self, aad: &[u8]) -> StreamOpener {
        StreamOpener { key: self.clone(), object: aad.to_vec(), aad: Vec::new(), decryptor: None, buffer: Vec::new() }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// Seals a stream chunk by chunk; holds at most one chunk of plaintext.
pub struct StreamSealer {
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    aad: Vec<u8>,
    pending_header: Option<Vec<u8>>,
    buffer: Vec<u8>,
}

impl StreamSealer {
    /// Takes more plaintext; returns the sealed bytes ready to be stored (the
    /// header first; every full chunk once it is known not to be the last).
    pub fn update(&mut self, mut plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.pending_header.take().unwrap_or_default();
        let encryptor = self.encryptor.as_mut().expect("update after finish");
        while !plaintext.is_empty() {
            if self.buffer.len() == CHUNK {
                let sealed = encryptor
                    .encrypt_next(Payload { msg: &self.buffer, aad: &self.aad })
                    .expect("a stream has room for 2^32 chunks");
                out.extend_from_slice(&sealed);
                self.buffer.clear();
            }
            let take = (CHUNK - self.buffer.len()).min(plaintext.len());
            self.buffer.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        out
    }

    /// Seals what is left as the last chunk.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.pending_header.take().unwrap_or_default();
        let encryptor = self.encryptor.take().expect("finish once");
        let sealed = encryptor
            .encrypt_last(Payload { msg: &self.buffer, aad: &self.aad })
            .expect("a stream has room for its last chunk");
        out.extend_from_slice(&sealed);
        out
    }
}

/// Opens a sealed stream chunk by chunk; holds at most one sealed chunk.
pub struct StreamOpener {
    key: EncryptionKey,
    object: Vec<u8>,
    aad: Vec<u8>,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    buffer: Vec<u8>,
}

impl StreamOpener {
    /// Whether `prefix` (the first bytes of an object, at least 4) starts a sealed stream.
    pub fn is_sealed_stream(prefix: &[u8]) -> bool {
        prefix.starts_with(STREAM_MAGIC)
    }

    /// Takes more sealed bytes; returns the plaintext of every chunk that is
    /// complete and authentic (a chunk is held back until it is known not to be
    /// the last).
    pub fn update(&mut self, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        self.buffer.extend_from_slice(sealed);
        if self.decryptor.is_none() {
            if self.buffer.len() >= STREAM_MAGIC.len() && !Self::is_sealed_stream(&self.buffer) {
                return Err(DecryptError::NotSealed);
            }
            if self.buffer.len() < STREAM_HEADER {
                return Ok(Vec::new());
            }
            self.start()?;
        }
        let decryptor = self.decryptor.as_mut().expect("started above");
        let mut out = Vec::new();
        let mut used = 0;
        while self.buffer.len() - used > CHUNK + TAG {
            let piece = &self.buffer[used..used + CHUNK + TAG];
            let plain =
                decryptor.decrypt_next(Payload { msg: piece, aad: &self.aad }).map_err(|_| DecryptError::Corrupt)?;
            out.extend_from_slice(&plain);
            used += CHUNK + TAG;
        }
        self.buffer.drain(..used);
        Ok(out)
    }

    fn start(&mut self) -> Result<(), DecryptError> {
        self.key.check_id(&self.buffer[STREAM_MAGIC.len()..STREAM_MAGIC.len() + KEY_ID])?;
        let header: Vec<u8> = self.buffer.drain(..STREAM_HEADER).collect();
        let prefix: [u8; STREAM_NONCE] =
            header[STREAM_MAGIC.len() + KEY_ID..].try_into().map_err(|_| DecryptError::Corrupt)?;
        self.aad = [&header[..], &self.object[..]].concat();
        self.decryptor = Some(DecryptorBE32::from_aead(self.key.cipher(), &prefix.into()));
        Ok(())
    }

    /// Opens the last chunk; fails when the stream was cut short.
    pub fn finish(self) -> Result<Vec<u8>, DecryptError> {
        let Some(decryptor) = self.decryptor else {
            return Err(if Self::is_sealed_stream(&self.buffer) {
                DecryptError::Corrupt
            } else {
                DecryptError::NotSealed
            });
        };
        if self.buffer.len() < TAG {
            return Err(DecryptError::Corrupt);
        }
        decryptor.decrypt_last(Payload { msg: &self.buffer, aad: &self.aad }).map_err(|_| DecryptError::Corrupt)
    }
}

/// Plaintext size of a sealed stream of `sealed_len` bytes (`None` when no stream
/// this module writes has that size).
pub fn plaintext_len(sealed_len: u64) -> Option<u64> {
    let body = sealed_len.checked_sub(STREAM_HEADER as u64)?;
    let sealed_chunk = (CHUNK + TAG) as u64;
    let chunks = body.div_ceil(sealed_chunk).max(1);
    let plain = body.checked_sub(chunks * TAG as u64)?;
    // The last chunk holds at least its tag.
    (body - (chunks - 1) * sealed_chunk >= TAG as u64).then_some(plain)
}

/// Uses the configured key, else the one kept in `data_dir`, else generates one
/// and keeps it there (mode 0600), as [`crate::auth::load_or_generate_api_key`]
/// does for the API key. Every replica of a fleet must end up with the same key.
pub fn load_or_generate_key(
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> Result<(EncryptionKey, KeySource), KeyError> {
    if let Some(key) = configured.filter(|k| !k.expose_secret().is_empty()) {
        return Ok((EncryptionKey::from_base64(key.expose_secret())?, KeySource::Configured));
    }
    let path = data_dir.join(KEY_FILE);
    let file_err = |source| KeyError::File { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(contents) => Ok((EncryptionKey::from_base64(&contents)?, KeySource::File(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(file_err)?;
            let bytes: [u8; KEY_LEN] = random();
            crate::auth::write_private(&path, &STANDARD.encode(bytes)).map_err(file_err)?;
            Ok((EncryptionKey::from_bytes(bytes), KeySource::Generated(path)))
        }
        Err(e) => Err(file_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seal_stream(key: &EncryptionKey, aad: &[u8], plaintext: &[u8], piece: usize) -> Vec<u8> {
        let mut sealer = key.stream_sealer(aad);
        let mut out = Vec::new();
        for part in plaintext.chunks(piece.max(1)) {
            out.extend(sealer.update(part));
        }
        out.extend(sealer.finish());
        out
    }

    fn open_stream(key: &EncryptionKey, aad: &[u8], sealed: &[u8], piece: usize) -> Result<Vec<u8>, DecryptError> {
        let mut opener = key.stream_opener(aad);
        let mut out = Vec::new();
        for part in sealed.chunks(piece.max(1)) {
            out.extend(opener.update(part)?);
        }
        out.extend(opener.finish()?);
        Ok(out)
    }

    #[test]
    fn small_values_round_trip_only_with_their_key_and_object() {
        let key = EncryptionKey::generate();
        let sealed = key.seal(b"whsec-0123456789", b"webhook:a");
        assert!(!sealed.windows(16).any(|w| w == b"whsec-0123456789"));
        assert_eq!(key.open(&sealed, b"webhook:a").unwrap(), b"whsec-0123456789");
        assert_eq!(key.open(&sealed, b"webhook:b"), Err(DecryptError::Corrupt));
        assert!(matches!(EncryptionKey::generate().open(&sealed, b"webhook:a"), Err(DecryptError::WrongKey { .. })));
        assert_eq!(key.open(b"whsec-plaintext", b"webhook:a"), Err(DecryptError::NotSealed));
        assert_ne!(key.seal(b"x", b"a"), key.seal(b"x", b"a"), "a fresh nonce per value");
    }

    #[test]
    fn streams_of_every_boundary_size_round_trip_and_report_their_size() {
        let key = EncryptionKey::generate();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal_stream(&key, b"certs/a.zip", &plaintext, 10_000);
            assert_eq!(plaintext_len(sealed.len() as u64), Some(len as u64), "{len}");
            assert_eq!(open_stream(&key, b"certs/a.zip", &sealed, 3000).unwrap(), plaintext, "{len}");
        }
    }

    #[test]
    fn a_stream_does_not_open_for_another_object_key_or_when_cut() {
        let key = EncryptionKey::generate();
        let plaintext = vec![7u8; CHUNK * 2 + 100];
        let sealed = seal_stream(&key, b"certs/a.zip", &plaintext, CHUNK);
        assert_eq!(open_stream(&key, b"certs/b.zip", &sealed, 4096), Err(DecryptError::Corrupt));
        let other = EncryptionKey::generate();
        assert!(matches!(open_stream(&other, b"certs/a.zip", &sealed, 4096), Err(DecryptError::WrongKey { .. })));
        // Cut after the first full chunk: the counter says "not last".
        let cut = &sealed[..STREAM_HEADER + CHUNK + TAG];
        assert_eq!(open_stream(&key, b"certs/a.zip", cut, 4096), Err(DecryptError::Corrupt));
        assert_eq!(open_stream(&key, b"certs/a.zip", b"PK\x03\x04 a zip", 4096), Err(DecryptError::NotSealed));
    }

    #[test]
    fn keys_are_read_from_base64_and_kept_in_the_data_directory() {
        assert!(EncryptionKey::from_base64("c2hvcnQ=").is_err());
        assert!(EncryptionKey::from_base64("not base64 at all!").is_err());
        let text = STANDARD.encode([9u8; 32]);
        assert_eq!(EncryptionKey::from_base64(&text).unwrap().id(), EncryptionKey::from_bytes([9u8; 32]).id());
        let configured = SecretString::from(text);
        let dir = tempfile_dir();
        let (key, source) = load_or_generate_key(Some(&configured), &dir).unwrap();
        assert_eq!(source, KeySource::Configured);
        assert!(!format!("{key:?}").contains(&STANDARD.encode([9u8; 32])));
        let (first, source) = load_or_generate_key(None, &dir).unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        let (second, source) = load_or_generate_key(None, &dir).unwrap();
        assert!(matches!(source, KeySource::File(_)));
        assert_eq!(first.id(), second.id());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("fa-enc-{}", crate::auth::generate_token()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_stream_round_trips_whatever_the_write_and_read_sizes(
            plaintext in proptest::collection::vec(any::<u8>(), 0..(3 * CHUNK)),
            write in 1usize..(2 * CHUNK),
            read in 1usize..(2 * CHUNK),
        ) {
            let key = EncryptionKey::generate();
            let sealed = seal_stream(&key, b"obj", &plaintext, write);
            prop_assert_eq!(plaintext_len(sealed.len() as u64), Some(plaintext.len() as u64));
            prop_assert_eq!(open_stream(&key, b"obj", &sealed, read).unwrap(), plaintext);
        }

        #[test]
        fn arbitrary_or_altered_bytes_never_open_and_never_panic(
            garbage in proptest::collection::vec(any::<u8>(), 0..4096),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let key = EncryptionKey::generate();
            prop_assert!(key.open(&garbage, b"obj").is_err());
            let mut with_magic = STREAM_MAGIC.to_vec();
            with_magic.extend_from_slice(&garbage);
            prop_assert!(open_stream(&key, b"obj", &with_magic, 777).is_err());
            let _ = plaintext_len(garbage.len() as u64);
            // One flipped bit anywhere in a genuine stream or value is caught.
            let mut sealed = seal_stream(&key, b"obj", &garbage, 1000);
            let at = flip.index(sealed.len());
            sealed[at] ^= 1 << bit;
            prop_assert!(open_stream(&key, b"obj", &sealed, 1000).is_err());
            let mut value = key.seal(&garbage, b"obj");
            let at = flip.index(value.len());
            value[at] ^= 1 << bit;
            prop_assert!(key.open(&value, b"obj").is_err());
        }
    }
}
