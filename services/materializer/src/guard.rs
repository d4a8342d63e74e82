//! One materialization of a feature view at a time, across processes. Before a job runs
//! its views it takes each view's lock and holds it until the job ends:
//!
//! - file registry: an OS advisory lock (`flock`) on
//!   `<registry file>.locks/<project>/<view>.lock`, next to the registry every process of
//!   the repository already shares. The kernel drops it when its holder exits, however it
//!   exits (`kill -9` included), so a crashed run never leaves a stale lock behind. While
//!   held, the file names its holder (pid, host, command, since when) for whoever finds it
//!   taken. The files are left in place (deleting one another process has open would let two
//!   holders lock two different files of the same name).
//! - SQL registry: the materializers' leases in the registry's database
//!   ([`SharedLeases`]), renewed while the job runs and expiring if the holder dies.
//!
//! A remote registry (a registry server) offers neither: there the materializer service
//! is the one place that runs materializations.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::lease::{HeldLeases, SharedLeases};

/// How this process claims views against the other processes of the repository.
#[derive(Debug, Clone)]
pub enum ViewLocks {
    /// Lock files next to a file registry.
    Files(FileLocks),
    /// Leases in the SQL registry's database.
    Leases(SharedLeases),
}

/// A view another process (or another job of this one) is materializing, and who.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyView {
    pub view: String,
    /// Who holds it, as its lock says (`pid 123 on host (feast-rs materialize, since ...)`).
    pub holder: String,
}

impl std::fmt::Display for BusyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (being materialized by {})", self.view, self.holder)
    }
}

/// The views a job holds; released when dropped (or by [`Held::release`]).
#[derive(Debug, Default)]
pub struct Held {
    pub views: Vec<String>,
    files: Vec<LockFile>,
    leases: Option<HeldLeases>,
}

impl Held {
    /// Releases every view now (before the job reports that it is done, so whoever starts
    /// next finds them free).
    pub async fn release(mut self) {
        self.files.clear();
        if let Some(leases) = self.leases.take() {
            leases.release().await;
        }
    }
}

impl ViewLocks {
    /// Takes the views that are free; returns them held, and the others with their holders.
    /// A lock that cannot be taken for another reason (an unwritable directory, a database
    /// error) counts as busy, its holder saying why: running without the guard is for
    /// `force` to decide.
    pub async fn acquire(&self, project: &str, views: &[String]) -> (Held, Vec<BusyView>) {
        match self {
            ViewLocks::Files(files) => {
                let mut held = Held::default();
                let mut busy = Vec::new();
                for view in views {
                    match files.lock(project, view) {
                        Ok(file) => {
                            held.views.push(view.clone());
                            held.files.push(file);
                        }
                        Err(holder) => busy.push(BusyView {
                            view: view.clone(),
                            holder,
                        }),
                    }
                }
                (held, busy)
            }
            ViewLocks::Leases(shared) => {
                let leases = shared.acquire_all(project, views).await;
                let mut busy = Vec::new();
                for view in views.iter().filter(|v| !leases.views.contains(*v)) {
                    busy.push(BusyView {
                        view: view.clone(),
                        holder: shared.holder_of(project, view).await,
                    });
                }
                let held = Held {
                    views: leases.views.clone(),
                    files: Vec::new(),
                    leases: Some(leases),
                };
                (held, busy)
            }
        }
    }
}

/// `flock`ed lock files, one per project and view, in one directory.
#[derive(Debug, Clone)]
pub struct FileLocks {
    dir: PathBuf,
    /// What a lock file says while this process holds it.
    holder: String,
}

impl FileLocks {
    /// The locks of the file registry at `registry` (in `<registry>.locks/`), held by this
    /// process running `command` (`feast-rs materialize`, `feast-rs serve`, ...).
    pub fn next_to_registry(registry: &Path, command: &str) -> Self {
        let mut dir = registry.as_os_str().to_owned();
        dir.push(".locks");
        Self {
            dir: PathBuf::from(dir),
            holder: format!(
                "pid {} on {} ({command}, since {})",
                std::process::id(),
                hostname(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }

    /// The lock file of `view` (names are percent-encoded where a file name could not hold
    /// them as they are).
    pub fn path(&self, project: &str, view: &str) -> PathBuf {
        self.dir
            .join(file_name(project))
            .join(format!("{}.lock", file_name(view)))
    }

    /// Locks `view` without waiting: the open lock file (the lock lasts while it is open),
    /// or who holds it.
    fn lock(&self, project: &str, view: &str) -> Result<LockFile, String> {
        let path = self.path(project, view);
        let failed = |e: std::io::Error| {
            format!(
                "nobody known: its lock file {} could not be taken ({e})",
                path.display()
            )
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the error of whoever finds it taken.
                let said = file
                    .set_len(0)
                    .and_then(|()| writeln!(file, "{}", self.holder));
                if let Err(e) = said {
                    tracing::warn!(message = "could not write the holder into a lock file", path = %path.display(), error = %e);
                }
                Ok(LockFile(file))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut said = String::new();
                let _ = file.read_to_string(&mut said);
                let said = said.trim();
                Err(if said.is_empty() {
                    format!("another process (lock file {})", path.display())
                } else {
                    said.to_owned()
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }
}

/// A held lock file: emptied, then closed (which releases the lock) when dropped.
#[derive(Debug)]
struct LockFile(File);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
    }
}

/// `name` as one path component: ASCII letters, digits, `_`, `-` and `.` kept (a leading
/// `.` escaped), anything else percent-encoded.
fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// This machine's name (`HOSTNAME`, else `/etc/hostname`).
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "an unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_names_cannot_escape_their_directory() {
        assert_eq!(file_name("driver_hourly_stats"), "driver_hourly_stats");
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name(".."), "%2E.");
        assert_eq!(file_name("v1.2"), "v1.2");
        assert_eq!(file_name("naïve"), "na%C3%AFve");
    }

    #[tokio::test]
    async fn a_view_is_locked_once_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.db");
        let first = ViewLocks::Files(FileLocks::next_to_registry(&registry, "first"));
        let second = ViewLocks::Files(FileLocks::next_to_registry(&registry, "second"));
        let views = vec!["a".to_owned(), "b".to_owned()];

        let (held, busy) = first.acquire("p", &views[..1]).await;
        assert_eq!(held.views, ["a"]);
        assert!(busy.is_empty());
        // A second open of the same file is locked out, even in this process.
        let (other, busy) = second.acquire("p", &views).await;
        assert_eq!(other.views, ["b"]);
        assert_eq!(busy.len(), 1);
        assert_eq!(busy[0].view, "a");
        assert!(
            busy[0]
                .holder
                .starts_with(&format!("pid {} on ", std::process::id())),
            "{}",
            busy[0].holder
        );
        assert!(busy[0].holder.contains("(first, since "), "{}", busy[0]);
        // Another project's view of the same name is another lock.
        let (elsewhere, busy) = second.acquire("q", &views[..1]).await;
        assert_eq!((elsewhere.views.len(), busy.len()), (1, 0));

        held.release().await;
        let lock = dir.path().join("registry.db.locks/p/a.lock");
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "", "emptied");
        let (again, busy) = second.acquire("p", &views[..1]).await;
        assert_eq!((again.views.len(), busy.len()), (1, 0));
        assert!(
            std::fs::read_to_string(&lock)
                .unwrap()
                .contains("(second, since ")
        );
        drop(other);
        drop(again);
    }
}
