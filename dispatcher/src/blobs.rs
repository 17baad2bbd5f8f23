//! Blob storage: sources, certificate bundles and artifacts in an object store.
//!
//! A thin wrapper over `Arc<dyn ObjectStore>` whose [`BlobKey`] owns every path, so
//! no caller ever builds a path from user input. Writes stream through
//! [`BlobWriter`] (bounded memory, a byte limit checked on every chunk); reads
//! return a stream of chunks.
//!
//! The key also says which blobs are secret ([`BlobKey::is_sealed`]: certificate
//! bundles). Those are encrypted on the way in and decrypted on the way out
//! (`crate::crypto`, chunk by chunk), bound to their own path: callers see
//! plaintext sizes and bytes, the store holds only ciphertext. A bundle written
//! before encryption at rest existed is still served, and
//! [`Blobs::seal_plaintext_certs`] encrypts such bundles in place at startup.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::config::BlobArgs;
use crate::crypto::{DecryptError, EncryptionKey, StreamOpener, StreamSealer, plaintext_len};
use crate::model::BuildId;

/// Size of the parts a [`BlobWriter`] sends to the store.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight per writer; with [`PART_SIZE`] this bounds a writer's memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Read buffer for local files.
const READ_CHUNK: usize = 256 * 1024;

/// Every object the controller stores. The enum owns the path layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobKey {
    /// The zipped project of a build.
    Source(BuildId),
    /// The optional signing-certificate bundle of a build.
    Certs(BuildId),
    /// An upload in progress, before the lease check decides where it belongs.
    Upload(uuid::Uuid),
    /// The artifact of one lease attempt of a build (a late worker of an earlier
    /// attempt can never overwrite the accepted one).
    Result {
        /// The build.
        build: BuildId,
        /// The attempt (lease number) that produced it.
        attempt: i32,
    },
}

impl BlobKey {
    /// The object path. Ids are validated `[A-Za-z0-9_-]`, so no traversal is possible.
    pub fn path(&self) -> Path {
        match self {
            BlobKey::Source(id) => Path::from(format!("sources/{id}.zip")),
            BlobKey::Certs(id) => Path::from(format!("certs/{id}.zip")),
            BlobKey::Upload(id) => Path::from(format!("uploads/{id}")),
            BlobKey::Result { build, attempt } => Path::from(format!("results/{build}/{attempt}")),
        }
    }

    /// Whether the blob is secret and stored encrypted (certificate bundles).
    pub fn is_sealed(&self) -> bool {
        matches!(self, BlobKey::Certs(_))
    }

    /// What a sealed blob is bound to: its own path, which names the build, so a
    /// bundle copied to another build's path does not decrypt.
    fn aad(&self) -> Vec<u8> {
        format!("freeagent blob {}", self.path()).into_bytes()
    }

    /// Reads back a stored certificate-bundle path (`certs/<build>.zip`).
    pub fn parse_certs(path: &str) -> Option<BlobKey> {
        let id = path.strip_prefix("certs/")?.strip_suffix(".zip")?;
        Some(BlobKey::Certs(BuildId::parse(id).ok()?))
    }

    /// Reads back a stored result path (`results/<build>/<attempt>`) of `build`.
    pub fn parse_result(path: &str, build: &BuildId) -> Option<BlobKey> {
        let rest = path.strip_prefix("results/")?;
        let (id, attempt) = rest.split_once('/')?;
        if id != build.as_str() {
            return None;
        }
        Some(BlobKey::Result { build: build.clone(), attempt: attempt.parse().ok()? })
    }
}

/// A readable blob: its size and its bytes as a stream.
pub struct BlobReader {
    /// Size in bytes.
    pub size: u64,
    /// The content, chunk by chunk.
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Why a streamed write stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More bytes than the limit arrived; nothing is kept.
    #[error("more than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// The store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// A sealed blob that does not decrypt: another key, altered, or not this blob's.
#[derive(Debug, thiserror::Error)]
#[error("cannot decrypt {path}: {reason}")]
pub struct UndecryptableBlob {
    /// The object path.
    pub path: String,
    /// Why.
    pub reason: DecryptError,
}

/// The object store of one deployment. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// Seals and opens the secret blobs.
    key: Arc<EncryptionKey>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("store", &self.description).finish()
    }
}

impl Blobs {
    /// Opens the store named by `FREEAGENT_BLOB_URL` (`file://` or `s3://`), by
    /// default a `blobs` directory inside the data directory.
    pub fn from_args(args: &BlobArgs, key: EncryptionKey) -> anyhow::Result<Self> {
        let url = match &args.blob_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => {
                let dir = args.data_dir.join("blobs");
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let dir = dir.canonicalize()?;
                format!("file://{}", dir.display())
            }
        };
        Self::open(&url, key)
    }

    /// Opens a store from a URL: `file:///absolute/dir` or `s3://bucket[/prefix]`;
    /// secret blobs are sealed with `key`.
    pub fn open(url: &str, key: EncryptionKey) -> anyhow::Result<Self> {
        let key = Arc::new(key);
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create blob directory {dir}"))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .with_context(|| format!("cannot use blob directory {dir}"))?
                .with_automatic_cleanup(true);
            Ok(Self { store: Arc::new(store), description: url.to_owned(), key })
        } else if url.starts_with("s3://") {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .context("cannot configure the S3 object store (see the AWS_* variables)")?;
            Ok(Self { store: Arc::new(store), description: url.to_owned(), key })
        } else {
            anyhow::bail!("FREEAGENT_BLOB_URL must start with file:// or s3://")
        }
    }

    /// Human-readable location (no secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Starts a streamed write of `key` that fails once more than `limit` bytes
    /// arrive (plaintext bytes; a secret blob is sealed on the way).
    pub async fn writer(&self, key: &BlobKey, limit: u64) -> Result<BlobWriter, WriteError> {
        let upload = self.store.put_multipart(&key.path()).await?;
        Ok(BlobWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            written: 0,
            limit,
            sealer: key.is_sealed().then(|| self.key.stream_sealer(&key.aad())),
        })
    }

    /// Opens a blob for reading; `None` when it does not exist. A secret blob is
    /// decrypted: its size is the plaintext size, and a blob that does not decrypt
    /// (another key, altered, another build's) is an [`UndecryptableBlob`] error
    /// here, before any byte is handed out, as far as its first chunk tells.
    pub async fn read(&self, key: &BlobKey) -> anyhow::Result<Option<BlobReader>> {
        let Some(raw) = self.read_stored(key).await? else {
            return Ok(None);
        };
        if !key.is_sealed() {
            return Ok(Some(raw));
        }
        Ok(Some(self.open_sealed(key, raw).await?))
    }

    /// The stored bytes of a blob, as they are (ciphertext for a secret blob).
    pub async fn read_stored(&self, key: &BlobKey) -> anyhow::Result<Option<BlobReader>> {
        let result = match self.store.get(&key.path()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let stream = match result.payload {
            GetResultPayload::File(file, _) => {
                let file = tokio::fs::File::from_std(file);
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).boxed()
            }
            GetResultPayload::Stream(stream) => stream.map_err(std::io::Error::other).boxed(),
        };
        Ok(Some(BlobReader { size, stream }))
    }

    async fn open_sealed(&self, key: &BlobKey, mut raw: BlobReader) -> anyhow::Result<BlobReader> {
        let undecryptable = |reason| UndecryptableBlob { path: key.path().to_string(), reason };
        let mut head = Vec::new();
        while head.len() < crate::crypto::STREAM_HEADER {
            match raw.stream.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => break,
            }
        }
        if !StreamOpener::is_sealed_stream(&head) {
            tracing::warn!(blob = %key.path(), "serving a certificate bundle stored before encryption at rest");
            let head = futures::stream::once(async move { Ok(Bytes::from(head)) });
            return Ok(BlobReader { size: raw.size, stream: head.chain(raw.stream).boxed() });
        }
        let size = plaintext_len(raw.size).ok_or_else(|| undecryptable(DecryptError::Corrupt))?;
        let mut opener = self.key.stream_opener(&key.aad());
        // Decrypt up to the first chunk now, so that a blob which does not open is
        // an error before the caller answers anything.
        let mut first = opener.update(&head).map_err(undecryptable)?;
        let mut opener = Some(opener);
        while first.is_empty() {
            match raw.stream.next().await {
                Some(chunk) => first = opener.as_mut().expect("set").update(&chunk?).map_err(undecryptable)?,
                None => {
                    first = opener.take().expect("set").finish().map_err(undecryptable)?;
                    break;
                }
            }
        }
        let path = key.path().to_string();
        let state = Opening { raw: raw.stream, opener, pending: Some(Bytes::from(first)), path };
        Ok(BlobReader { size, stream: futures::stream::unfold(state, Opening::next).boxed() })
    }

    /// Size of a blob (plaintext size for a secret blob), `None` when it does not exist.
    pub async fn size(&self, key: &BlobKey) -> anyhow::Result<Option<u64>> {
        match self.store.head(&key.path()).await {
            Ok(meta) if key.is_sealed() => Ok(Some(plaintext_len(meta.size).unwrap_or(meta.size))),
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a blob (retry of a build reuses its source and certificates). A
    /// secret blob is decrypted and sealed again for its new path.
    pub async fn copy(&self, from: &BlobKey, to: &BlobKey) -> anyhow::Result<()> {
        if !from.is_sealed() && !to.is_sealed() {
            return Ok(self.store.copy(&from.path(), &to.path()).await?);
        }
        let Some(mut reader) = self.read(from).await? else {
            anyhow::bail!("cannot copy {}: it does not exist", from.path());
        };
        let mut writer = self.writer(to, u64::MAX).await?;
        while let Some(chunk) = reader.stream.next().await {
            match chunk {
                Ok(chunk) => writer.write(&chunk).await?,
                Err(e) => {
                    writer.abort().await;
                    return Err(e.into());
                }
            }
        }
        writer.finish().await?;
        Ok(())
    }

    /// Moves a blob (an accepted upload to its final key).
    pub async fn rename(&self, from: &BlobKey, to: &BlobKey) -> anyhow::Result<()> {
        if from.is_sealed() || to.is_sealed() {
            self.copy(from, to).await?;
            return self.delete(from).await;
        }
        Ok(self.store.rename(&from.path(), &to.path()).await?)
    }

    /// Encrypts, in place, every certificate bundle stored before encryption at
    /// rest existed; returns how many. Safe on every replica at once (each write
    /// replaces the object whole; a bundle sealed meanwhile is left alone).
    pub async fn seal_plaintext_certs(&self) -> anyhow::Result<usize> {
        let mut sealed = 0;
        for path in self.list("certs").await? {
            let Some(key) = BlobKey::parse_certs(&path) else {
                tracing::warn!(blob = %path, "unexpected object in certs/ left as it is");
                continue;
            };
            // Every start looks at every bundle: read the magic only, not the bundle.
            match self.store.get_range(&key.path(), 0..4).await {
                Ok(prefix) if StreamOpener::is_sealed_stream(&prefix) => continue,
                Err(object_store::Error::NotFound { .. }) => continue,
                // In clear, or shorter than the magic (the whole read below decides).
                _ => {}
            }
            let Some(mut reader) = self.read_stored(&key).await? else {
                continue;
            };
            // Bundles are small (FREEAGENT_MAX_CERTS_BYTES); read one whole.
            let mut plaintext = Vec::with_capacity(usize::try_from(reader.size).unwrap_or(0));
            while let Some(chunk) = reader.stream.next().await {
                plaintext.extend_from_slice(&chunk?);
            }
            if StreamOpener::is_sealed_stream(&plaintext) {
                continue;
            }
            let mut writer = self.writer(&key, u64::MAX).await?;
            writer.write(&plaintext).await?;
            writer.finish().await?;
            sealed += 1;
        }
        if sealed > 0 {
            tracing::info!(count = sealed, "encrypted certificate bundles stored before encryption at rest");
        }
        Ok(sealed)
    }

    /// Deletes a blob; a blob that does not exist is not an error.
    pub async fn delete(&self, key: &BlobKey) -> anyhow::Result<()> {
        match self.store.delete(&key.path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every key stored under a top-level folder (`sources`, `certs`, `results`);
    /// used by tests and operators to check that nothing was left behind.
    pub async fn list(&self, folder: &str) -> anyhow::Result<Vec<String>> {
        let prefix = Path::from(folder);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }
}

/// The decrypting stream of a sealed blob being read.
struct Opening {
    raw: BoxStream<'static, std::io::Result<Bytes>>,
    /// `None` once the last chunk was opened (or opening failed).
    opener: Option<StreamOpener>,
    /// Plaintext decrypted ahead (the first chunk).
    pending: Option<Bytes>,
    path: String,
}

impl Opening {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Self)> {
        if let Some(pending) = self.pending.take() {
            return Some((Ok(pending), self));
        }
        loop {
            let opener = self.opener.as_mut()?;
            let opened = match self.raw.next().await {
                Some(Ok(chunk)) => opener.update(&chunk),
                Some(Err(e)) => {
                    self.opener = None;
                    return Some((Err(e), self));
                }
                None => self.opener.take().expect("checked above").finish(),
            };
            match opened {
                Ok(plain) if plain.is_empty() && self.opener.is_some() => continue,
                Ok(plain) => return Some((Ok(Bytes::from(plain)), self)),
                Err(reason) => {
                    self.opener = None;
                    let e = UndecryptableBlob { path: self.path.clone(), reason };
                    tracing::error!(error = %e, "a sealed blob failed to decrypt while it was read");
                    return Some((Err(std::io::Error::other(e)), self));
                }
            }
        }
    }
}

/// A streamed write in progress. Nothing is visible until [`BlobWriter::finish`];
/// dropping it or [`BlobWriter::abort`] leaves nothing behind.
pub struct BlobWriter {
    inner: Option<WriteMultipart>,
    /// Plaintext bytes so far (the limit applies to them).
    written: u64,
    limit: u64,
    /// Encrypts a secret blob on its way to the store.
    sealer: Option<StreamSealer>,
}

impl BlobWriter {
    /// Appends a chunk. Fails (and aborts the upload) once the limit is passed.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            self.abort().await;
            return Err(WriteError::TooLarge { limit: self.limit });
        }
        let inner = self.inner.as_mut().expect("write after abort");
        inner.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        match self.sealer.as_mut() {
            Some(sealer) => inner.write(&sealer.update(chunk)),
            None => inner.write(chunk),
        }
        Ok(())
    }

    /// Completes the upload and returns its size (in plaintext bytes).
    pub async fn finish(mut self) -> Result<u64, WriteError> {
        let mut inner = self.inner.take().expect("finish after abort");
        if let Some(sealer) = self.sealer.take() {
            inner.write(&sealer.finish());
        }
        inner.finish().await?;
        Ok(self.written)
    }

    /// Abandons the upload.
    pub async fn abort(&mut self) {
        if let Some(inner) = self.inner.take()
            && let Err(e) = inner.abort().await
        {
            tracing::warn!(error = %e, "aborting a blob upload failed");
        }
    }
}
