//! The file registry store: Feast's `registry.db`, a serialized `feast.core.Registry` with no
//! framing. Writes are atomic (temp file in the same directory, fsync, rename, fsync of the
//! directory), so a crash or a failed apply never leaves a torn or half-applied registry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use feast_proto::core;
use prost::Message;

use super::Catalog;

#[derive(Debug, thiserror::Error)]
pub enum FileRegistryError {
    #[error("cannot read registry file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "registry file {path} is not a Feast registry ({source}); it was left untouched. \
         Restore it from a backup or point `registry:` in feature_store.yaml at another file"
    )]
    Corrupt {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("cannot write registry file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A `registry.db` on local disk.
#[derive(Debug, Clone)]
pub struct FileRegistryStore {
    path: PathBuf,
}

impl FileRegistryStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the registry; `None` when the file does not exist yet.
    pub fn load(&self) -> Result<Option<Catalog>, FileRegistryError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FileRegistryError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let proto = core::Registry::decode(bytes.as_slice()).map_err(|source| {
            FileRegistryError::Corrupt {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(Some(Catalog::from_proto(proto)))
    }

    /// Loads the registry, or an empty one when the file does not exist.
    pub fn load_or_empty(&self) -> Result<Catalog, FileRegistryError> {
        Ok(self.load()?.unwrap_or_default())
    }

    /// Atomically replaces the file with `catalog` (already stamped by the caller).
    pub fn save(&self, catalog: &Catalog) -> Result<(), FileRegistryError> {
        self.save_proto(catalog.proto())
    }

    /// Atomically replaces the file with a registry proto.
    pub fn save_proto(&self, registry: &core::Registry) -> Result<(), FileRegistryError> {
        let err = |source| FileRegistryError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let bytes = registry.encode_to_vec();
        let mut tmp = tempfile::Builder::new()
            .prefix(".registry.db.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(err)?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        if let Ok(d) = fs::File::open(&dir) {
            // Make the rename itself durable; not every filesystem supports this.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::timestamp;

    #[test]
    fn missing_file_is_none_and_save_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileRegistryStore::new(dir.path().join("nested/registry.db"));
        assert!(store.load().unwrap().is_none());
        let mut catalog = Catalog::new();
        catalog.ensure_project("demo", timestamp(chrono::Utc::now()));
        catalog.stamp_commit(timestamp(chrono::Utc::now()));
        store.save(&catalog).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded, catalog);
        // no temp files left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("registry.db")]);
    }

    #[test]
    fn corrupt_file_is_reported_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        fs::write(&path, b"\xff\xff\xff not a registry").unwrap();
        let err = FileRegistryStore::new(&path).load().unwrap_err();
        assert!(matches!(err, FileRegistryError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("left untouched"));
        assert_eq!(fs::read(&path).unwrap(), b"\xff\xff\xff not a registry");
    }
}
