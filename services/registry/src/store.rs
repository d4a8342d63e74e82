//! Where the registry lives. A store loads the whole `feast.core.Registry` and commits it
//! back with optimistic concurrency: every load returns a [`StoreVersion`], and a commit
//! succeeds only if the store is still at that version, so a write made meanwhile by another
//! process is detected and refused instead of silently overwritten.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use feast_core::registry::file::{FileRegistryError, FileRegistryStore};
use feast_proto::core;

/// An opaque token naming one state of the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreVersion(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    File(#[from] FileRegistryError),
    /// Another writer changed what this commit changes; nothing was written. Retryable:
    /// the service reloads the registry, and the same change applied again goes through.
    #[error(
        "the registry at {location} was changed by another writer since this server loaded it \
         ({detail}); the change was not written. Retry: the server has reloaded the registry"
    )]
    Conflict { location: String, detail: String },
    #[error("registry store I/O failed: {0}")]
    Io(String),
    /// The database could not be reached or a statement failed (a dependency problem:
    /// clients may retry).
    #[error("registry database error: {0}")]
    Database(String),
    /// The store holds something feast-rs cannot use (undecodable rows, missing tables,
    /// an unusable URL).
    #[error("{0}")]
    Invalid(String),
}

/// The result of a successful commit.
#[derive(Debug)]
pub struct Committed {
    /// The store's version after the commit.
    pub version: StoreVersion,
    /// Set when the store now holds more than what was committed (a store that merges
    /// concurrent writers' changes to other objects returns the merged registry, which
    /// the server then serves).
    pub merged: Option<core::Registry>,
}

#[tonic::async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// The stored registry (None when nothing was ever committed) and its version.
    async fn load(&self) -> Result<(Option<core::Registry>, StoreVersion), StoreError>;
    /// The current version, cheaply (no full read).
    async fn version(&self) -> Result<StoreVersion, StoreError>;
    /// Writes `registry`, which was derived from the store at `expected`. A store must
    /// refuse with [`StoreError::Conflict`] rather than lose a change another writer made
    /// after `expected`; it may instead merge changes to different objects.
    async fn commit(
        &self,
        registry: &core::Registry,
        expected: &StoreVersion,
    ) -> Result<Committed, StoreError>;
    /// Where the registry lives, for logs and errors.
    fn location(&self) -> String;
}

/// Feast's `registry.db` on local disk. The version is the file's identity and
/// modification time, so any rewrite by another process changes it.
pub struct FileStore {
    file: FileRegistryStore,
    /// Serializes commits from this process (check-then-rename must not interleave), and
    /// holds the `version_id` this process last read or wrote: a second check at commit
    /// time that also catches an in-place rewrite within one mtime tick.
    commit_lock: tokio::sync::Mutex<String>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            file: FileRegistryStore::new(path),
            commit_lock: tokio::sync::Mutex::new(String::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn current_version(&self) -> Result<StoreVersion, StoreError> {
        file_version(self.file.path())
    }
}

fn file_version(path: &Path) -> Result<StoreVersion, StoreError> {
    match std::fs::metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok(StoreVersion(format!(
                "{}:{}:{}:{mtime}",
                m.dev(),
                m.ino(),
                m.len()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreVersion::default()),
        Err(e) => Err(StoreError::Io(format!("{}: {e}", path.display()))),
    }
}

#[tonic::async_trait]
impl RegistryStore for FileStore {
    async fn load(&self) -> Result<(Option<core::Registry>, StoreVersion), StoreError> {
        // Version first: a write landing between the two reads makes the version stale,
        // which only causes a harmless reload later.
        let mut known = self.commit_lock.lock().await;
        let version = self.current_version()?;
        let registry = self.file.load()?.map(|c| c.into_proto());
        *known = registry
            .as_ref()
            .map(|r| r.version_id.clone())
            .unwrap_or_default();
        Ok((registry, version))
    }

    async fn version(&self) -> Result<StoreVersion, StoreError> {
        self.current_version()
    }

    async fn commit(
        &self,
        registry: &core::Registry,
        expected: &StoreVersion,
    ) -> Result<Committed, StoreError> {
        let mut known = self.commit_lock.lock().await;
        let on_disk = self
            .file
            .load()?
            .map(|c| c.proto().version_id.clone())
            .unwrap_or_default();
        if self.current_version()? != *expected || on_disk != *known {
            return Err(StoreError::Conflict {
                location: self.location(),
                detail: "feast-rs serves one file registry from one server; use the sql \
                         registry for several"
                    .to_owned(),
            });
        }
        self.file.save_proto(registry)?;
        *known = registry.version_id.clone();
        Ok(Committed {
            version: self.current_version()?,
            merged: None,
        })
    }

    fn location(&self) -> String {
        self.file.path().display().to_string()
    }
}
