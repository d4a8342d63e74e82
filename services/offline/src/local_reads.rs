//! Local files read into reused buffers.
//!
//! DataFusion's Parquet reader asks the object store for each column chunk it needs (up to
//! ~8 MB for a million 8-byte values). `object_store`'s `LocalFileSystem` answers each with a
//! new buffer that it zero-fills before `pread` copies the bytes in; buffers that large come
//! fresh from the kernel, so every chunk also pays for page faults and the kernel clearing
//! those pages. On a Flight pull of a 10M-row view that was a fifth of the server's CPU
//! (BENCHMARKS.md). [`LocalReads`] is `LocalFileSystem` with one change: ranged reads go into
//! buffers handed back to a small pool when the last `Bytes` slice of them is dropped, so
//! steady-state reads neither zero-fill nor fault. Everything else is `LocalFileSystem`'s.

use std::fmt;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use futures::stream::BoxStream;

/// Bytes of idle buffers the pool keeps; a buffer returned beyond that is freed.
const POOL_BYTES: usize = 64 << 20;

/// Idle read buffers, each fully initialised (its length is its size).
#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    /// A buffer of at least `len` bytes: the smallest idle one that fits, else a new one (none
    /// for an empty read).
    fn take(&self, len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        match best {
            Some(i) => idle.swap_remove(i),
            None => {
                drop(idle);
                vec![0; len]
            }
        }
    }

    fn give(&self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = idle.iter().map(Vec::len).sum();
        if held + buf.len() <= POOL_BYTES {
            idle.push(buf);
        }
    }

    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter().map(Vec::len).sum()
    }
}

/// A pooled buffer owned by the `Bytes` handed out; back to the pool when they are dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// `LocalFileSystem` whose ranged reads use pooled buffers (see the module documentation).
#[derive(Debug)]
pub struct LocalReads {
    files: LocalFileSystem,
    pool: Arc<Pool>,
}

impl Default for LocalReads {
    fn default() -> Self {
        Self {
            files: LocalFileSystem::new(),
            pool: Arc::default(),
        }
    }
}

impl fmt::Display for LocalReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalReads({})", self.files)
    }
}

impl LocalReads {
    /// Reads `ranges` of the file at `path`, each into its own pooled buffer.
    fn read(pool: &Arc<Pool>, path: &std::path::Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let error = |source: std::io::Error| datafusion::object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("reading {}: {source}", path.display()).into(),
        };
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => datafusion::object_store::Error::NotFound {
                path: path.display().to_string(),
                source: e.into(),
            },
            _ => error(e),
        })?;
        ranges
            .iter()
            .map(|range| {
                let len = usize::try_from(range.end.saturating_sub(range.start))
                    .map_err(|e| error(std::io::Error::other(e)))?;
                let mut buf = pool.take(len);
                // A short file (truncated since it was listed) is an error, as in
                // `LocalFileSystem`: `read_exact_at` fails with UnexpectedEof.
                file.read_exact_at(&mut buf[..len], range.start)
                    .map_err(error)?;
                let owner = Pooled {
                    buf,
                    pool: pool.clone(),
                };
                Ok(Bytes::from_owner(owner).slice(..len))
            })
            .collect()
    }
}

#[async_trait]
impl ObjectStore for LocalReads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.files.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.files.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.files.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.files.path_to_filesystem(location)?;
        let (pool, ranges) = (self.pool.clone(), ranges.to_vec());
        tokio::task::spawn_blocking(move || Self::read(&pool, &path, &ranges))
            .await
            .map_err(|e| datafusion::object_store::Error::Generic {
                store: "LocalFileSystem",
                source: e.into(),
            })?
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.files.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.files.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.files.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.files.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.files.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.files.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One-range reads are meant: `get_ranges` takes a slice of ranges.
    #[allow(clippy::single_range_in_vec_init)]
    #[tokio::test]
    async fn ranges_read_like_the_file_and_buffers_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("data.bin");
        std::fs::write(&file, &bytes).unwrap();
        let store = LocalReads::default();
        let location = Path::from_filesystem_path(&file).unwrap();
        let ranges = [0..10, 5..70_000, 99_990..100_000, 42..42];
        let got = store.get_ranges(&location, &ranges).await.unwrap();
        for (range, got) in ranges.iter().zip(&got) {
            assert_eq!(&got[..], &bytes[range.start as usize..range.end as usize]);
        }
        assert_eq!(
            store.pool.idle_bytes(),
            0,
            "buffers are out while the bytes live"
        );
        let sliced = got[1].slice(10..20);
        drop(got);
        assert_eq!(
            store.pool.idle_bytes(),
            10 + 10,
            "the sliced buffer is still out"
        );
        drop(sliced);
        let idle = store.pool.idle_bytes();
        assert_eq!(idle, 10 + 10 + 69_995);
        // A smaller read takes the smallest idle buffer that fits, and reads right into it.
        let again = store.get_ranges(&location, &[1_000..1_011]).await.unwrap();
        assert_eq!(&again[0][..], &bytes[1_000..1_011]);
        assert_eq!(store.pool.idle_bytes(), 10 + 10);
        // An empty range takes no idle buffer.
        let empty = store.get_ranges(&location, &[7..7]).await.unwrap();
        assert!(empty[0].is_empty());
        assert_eq!(store.pool.idle_bytes(), 10 + 10);

        // Past the end of the file, and a missing file: errors, as LocalFileSystem's.
        assert!(
            store
                .get_ranges(&location, &[99_000..100_001])
                .await
                .is_err()
        );
        let gone = dir.path().join("gone.bin");
        std::fs::write(&gone, b"x").unwrap();
        let missing = Path::from_filesystem_path(&gone).unwrap();
        std::fs::remove_file(&gone).unwrap();
        assert!(matches!(
            store.get_ranges(&missing, &[0..1]).await,
            Err(datafusion::object_store::Error::NotFound { .. })
        ));
    }
}
