//! Blob storage: sources, certificate bundles and artifacts in an object store.
//!
//! A thin wrapper over `Arc<dyn ObjectStore>` whose [`BlobKey`] owns every path, so
//! no caller ever builds a path from user input. Writes stream through
//! [`BlobWriter`] (bounded memory, a byte limit checked on every chunk); reads
//! return a stream of chunks.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::config::BlobArgs;
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

/// The object store of one deployment. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("store", &self.description).finish()
    }
}

impl Blobs {
    /// Opens the store named by `FREEAGENT_BLOB_URL` (`file://` or `s3://`), by
    /// default a `blobs` directory inside the data directory.
    pub fn from_args(args: &BlobArgs) -> anyhow::Result<Self> {
        let url = match &args.blob_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => {
                let dir = args.data_dir.join("blobs");
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let dir = dir.canonicalize()?;
                format!("file://{}", dir.display())
            }
        };
        Self::open(&url)
    }

    /// Opens a store from a URL: `file:///absolute/dir` or `s3://bucket[/prefix]`.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create blob directory {dir}"))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .with_context(|| format!("cannot use blob directory {dir}"))?
                .with_automatic_cleanup(true);
            Ok(Self { store: Arc::new(store), description: url.to_owned() })
        } else if url.starts_with("s3://") {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .context("cannot configure the S3 object store (see the AWS_* variables)")?;
            Ok(Self { store: Arc::new(store), description: url.to_owned() })
        } else {
            anyhow::bail!("FREEAGENT_BLOB_URL must start with file:// or s3://")
        }
    }

    /// Human-readable location (no secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Starts a streamed write of `key` that fails once more than `limit` bytes arrive.
    pub async fn writer(&self, key: &BlobKey, limit: u64) -> Result<BlobWriter, WriteError> {
        let upload = self.store.put_multipart(&key.path()).await?;
        Ok(BlobWriter { inner: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)), written: 0, limit })
    }

    /// Opens a blob for reading; `None` when it does not exist.
    pub async fn read(&self, key: &BlobKey) -> anyhow::Result<Option<BlobReader>> {
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

    /// Size of a blob, `None` when it does not exist.
    pub async fn size(&self, key: &BlobKey) -> anyhow::Result<Option<u64>> {
        match self.store.head(&key.path()).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a blob (retry of a build reuses its source and certificates).
    pub async fn copy(&self, from: &BlobKey, to: &BlobKey) -> anyhow::Result<()> {
        Ok(self.store.copy(&from.path(), &to.path()).await?)
    }

    /// Moves a blob (an accepted upload to its final key).
    pub async fn rename(&self, from: &BlobKey, to: &BlobKey) -> anyhow::Result<()> {
        Ok(self.store.rename(&from.path(), &to.path()).await?)
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

/// A streamed write in progress. Nothing is visible until [`BlobWriter::finish`];
/// dropping it or [`BlobWriter::abort`] leaves nothing behind.
pub struct BlobWriter {
    inner: Option<WriteMultipart>,
    written: u64,
    limit: u64,
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
        inner.write(chunk);
        Ok(())
    }

    /// Completes the upload and returns its size.
    pub async fn finish(mut self) -> Result<u64, WriteError> {
        let inner = self.inner.take().expect("finish after abort");
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
