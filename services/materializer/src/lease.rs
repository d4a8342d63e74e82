//! Work sharing between materializer replicas: before a job plans a view's window, the
//! replica takes the view's lease in the SQL registry's database
//! ([`feast_registry::Leases`]); it extends the lease while the job runs and drops it when
//! the job ends (or is cancelled). A view leased by another replica is left to it: a
//! scheduled job runs the views it could lease, an API job is refused as busy. A replica
//! that dies holds its leases only until they expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use feast_registry::Leases;

/// This replica's handle on the shared leases.
#[derive(Debug, Clone)]
pub struct SharedLeases {
    leases: Leases,
    holder: String,
    ttl: Duration,
    jobs: Arc<AtomicU64>,
}

impl SharedLeases {
    /// Leases held as `holder` (unique per replica, e.g. [`SharedLeases::holder_id`]) for
    /// `ttl`, extended every third of it while a job runs.
    pub fn new(leases: Leases, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            leases,
            holder: holder.into(),
            ttl: ttl.max(Duration::from_secs(1)),
            jobs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `HOSTNAME/pid/random`: unique per process, readable in the lease table.
    pub fn holder_id() -> String {
        let host = crate::guard::hostname();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!("{host}/{}/{nonce:08x}", std::process::id())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Who holds `view`'s lease, for an error message ("another materializer" when the
    /// lease table cannot say).
    pub(crate) async fn holder_of(&self, project: &str, view: &str) -> String {
        match self.leases.holder(project, view).await {
            // (Without the job number acquire_all appended.)
            Ok(Some((holder, until))) => format!(
                "{}, whose lease runs until {}",
                holder
                    .rsplit_once('#')
                    .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(holder.as_str(), |(h, _)| h),
                chrono::DateTime::<chrono::Utc>::from(until)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Ok(None) => "another materializer (its lease has just ended: try again)".to_owned(),
            Err(e) => format!("another materializer, or none: the lease could not be read ({e})"),
        }
    }

    /// Takes the leases of `views` that are free; the others stay with their holders. A
    /// database error counts as not leased (the view is left for later). Each call holds
    /// its leases under its own name (`HOLDER#n`), so a late release of an earlier job's
    /// leases can never drop a later job's.
    pub(crate) async fn acquire_all(&self, project: &str, views: &[String]) -> HeldLeases {
        let holder = format!(
            "{}#{}",
            self.holder,
            self.jobs.fetch_add(1, Ordering::Relaxed)
        );
        let mut held = Vec::new();
        for view in views {
            match self.leases.acquire(project, view, &holder, self.ttl).await {
                Ok(true) => held.push(view.clone()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(message = "could not take a materialization lease", view = %view, error = %e)
                }
            }
        }
        let heartbeat = (!held.is_empty()).then(|| {
            let leases = self.leases.clone();
            let ttl = self.ttl;
            let project = project.to_owned();
            let holder = holder.clone();
            let views = held.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    for view in &views {
                        match leases.acquire(&project, view, &holder, ttl).await {
                            Ok(true) => {}
                            Ok(false) => tracing::error!(
                                message = "lost the materialization lease of a running view (it expired and another replica took it)",
                                view = %view
                            ),
                            Err(e) => tracing::warn!(message = "could not extend a materialization lease", view = %view, error = %e),
                        }
                    }
                }
            })
        });
        HeldLeases {
            views: held,
            leases: self.leases.clone(),
            holder,
            project: project.to_owned(),
            heartbeat,
        }
    }
}

/// Leases a job holds; extended until released. [`HeldLeases::release`] ends them when
/// the job is done; dropping them (a cancelled job) releases them in the background.
#[derive(Debug)]
pub(crate) struct HeldLeases {
    pub views: Vec<String>,
    leases: Leases,
    holder: String,
    project: String,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLeases {
    /// Releases every lease now (before the job reports that it is done, so whoever starts
    /// next finds them free).
    pub(crate) async fn release(mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        let views = std::mem::take(&mut self.views);
        release(&self.leases, &self.project, &views, &self.holder).await;
    }
}

async fn release(leases: &Leases, project: &str, views: &[String], holder: &str) {
    for view in views {
        if let Err(e) = leases.release(project, view, holder).await {
            tracing::warn!(message = "could not release a materialization lease (it will expire)", view = %view, error = %e);
        }
    }
}

impl Drop for HeldLeases {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        if self.views.is_empty() {
            return;
        }
        let leases = self.leases.clone();
        let project = std::mem::take(&mut self.project);
        let views = std::mem::take(&mut self.views);
        let holder = std::mem::take(&mut self.holder);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { release(&leases, &project, &views, &holder).await });
            }
            Err(_) => tracing::warn!(message = "materialization leases left to expire"),
        }
    }
}
