//! `RegistryCache`: how the other services read the registry. It keeps the last registry
//! fetched from its source (a store read directly, or a registry server over gRPC) as an
//! immutable snapshot that requests read without locking or I/O, refreshes it in the
//! background every `cache_ttl_seconds` (and on demand), and when the source is unreachable
//! keeps serving the last good snapshot, logging how stale it is and counting the failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use feast_core::registry::Catalog;
use feast_proto::core;

use crate::client::RemoteRegistry;
use crate::store::{RegistryStore, StoreVersion};

/// Where the cache reads the registry from.
pub enum CacheSource {
    /// A registry store read directly (file or SQL); a refresh first compares the store's
    /// cheap version and only reloads when it moved.
    Store(Box<dyn RegistryStore>),
    /// A registry server (`registry_type: remote`); a refresh fetches `Proto`, or, when the
    /// registry is too large for one message, `project`'s objects through the list RPCs.
    Remote {
        client: Box<RemoteRegistry>,
        project: String,
    },
}

/// One fetched registry. Requests hold an `Arc` of it for as long as they need.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Catalog,
    /// When this registry was fetched.
    pub fetched_at: SystemTime,
    store_version: Option<StoreVersion>,
}

/// Counters for metrics and health endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Successful refreshes that fetched a registry (unchanged-version checks excluded).
    pub reloads: u64,
    /// Refreshes that failed (the previous snapshot kept serving).
    pub failures: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("registry refresh from {source_name} failed: {message}")]
pub struct RefreshError {
    pub source_name: String,
    pub message: String,
}

struct Inner {
    source: CacheSource,
    current: ArcSwapOption<Snapshot>,
    /// Serializes refreshes (a request-triggered one and the background one).
    refreshing: tokio::sync::Mutex<()>,
    last_success: std::sync::Mutex<Option<Instant>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

/// A cheaply cloneable handle; the background refresher stops when every handle is dropped.
#[derive(Clone)]
pub struct RegistryCache {
    inner: Arc<Inner>,
}

impl RegistryCache {
    /// Fetches the registry once (a failure is logged and leaves the cache empty until a
    /// later refresh succeeds) and starts refreshing every `ttl` (zero: only on demand).
    pub async fn start(source: CacheSource, ttl: Duration) -> Self {
        let cache = RegistryCache {
            inner: Arc::new(Inner {
                source,
                current: ArcSwapOption::empty(),
                refreshing: tokio::sync::Mutex::new(()),
                last_success: std::sync::Mutex::new(None),
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        };
        let _ = cache.refresh().await;
        if !ttl.is_zero() {
            let weak = Arc::downgrade(&cache.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(ttl);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    let _ = RegistryCache { inner }.refresh().await;
                }
            });
        }
        cache
    }

    /// The current registry, or `None` if it was never fetched. Never waits on I/O.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.current.load_full()
    }

    /// Time since the last successful refresh (an unchanged-version check counts).
    pub fn staleness(&self) -> Option<Duration> {
        self.lock_last_success().map(|t| t.elapsed())
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            reloads: self.inner.reloads.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
        }
    }

    fn lock_last_success(&self) -> Option<Instant> {
        *self
            .inner
            .last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches the registry now if the source changed. On failure the previous snapshot
    /// stays in place.
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        match self.fetch().await {
            Ok(Some(snapshot)) => {
                self.inner.current.store(Some(Arc::new(snapshot)));
                self.inner.reloads.fetch_add(1, Ordering::Relaxed);
                self.mark_success();
                Ok(())
            }
            Ok(None) => {
                self.mark_success();
                Ok(())
            }
            Err(message) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
                let error = RefreshError {
                    source_name: self.source_name(),
                    message,
                };
                match self.staleness() {
                    Some(stale) => tracing::warn!(
                        message = "registry unreachable; serving the last registry fetched",
                        stale_seconds = stale.as_secs_f64(),
                        error = %error
                    ),
                    None => {
                        tracing::warn!(message = "registry unreachable and never loaded", error = %error)
                    }
                }
                Err(error)
            }
        }
    }

    fn mark_success(&self) {
        *self
            .inner
            .last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn source_name(&self) -> String {
        match &self.inner.source {
            CacheSource::Store(store) => store.location(),
            CacheSource::Remote { client, .. } => client.target().to_owned(),
        }
    }

    /// `Ok(None)`: nothing changed since the current snapshot.
    async fn fetch(&self) -> Result<Option<Snapshot>, String> {
        let current = self.snapshot();
        match &self.inner.source {
            CacheSource::Store(store) => {
                if let Some(snapshot) = &current
                    && let Some(seen) = &snapshot.store_version
                    && store.version().await.map_err(|e| e.to_string())? == *seen
                {
                    return Ok(None);
                }
                let (registry, version) = store.load().await.map_err(|e| e.to_string())?;
                Ok(Some(Snapshot {
                    catalog: registry.map(Catalog::from_proto).unwrap_or_default(),
                    fetched_at: SystemTime::now(),
                    store_version: Some(version),
                }))
            }
            CacheSource::Remote { client, project } => {
                let catalog = match client.grpc().proto(()).await {
                    Ok(response) => Catalog::from_proto(response.into_inner()),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => client
                        .load_project(project)
                        .await
                        .map_err(|e| e.to_string())?,
                    Err(status) => return Err(crate::client::ClientError::from(status).to_string()),
                };
                if current.as_ref().is_some_and(|s| {
                    !s.catalog.version_id().is_empty()
                        && s.catalog.version_id() == catalog.version_id()
                }) {
                    return Ok(None);
                }
                Ok(Some(Snapshot {
                    catalog,
                    fetched_at: SystemTime::now(),
                    store_version: None,
                }))
            }
        }
    }
}

impl Snapshot {
    /// The registry proto of this snapshot.
    pub fn registry(&self) -> &core::Registry {
        self.catalog.proto()
    }
}

/// The `grpc.health.v1` service name that reports liveness: SERVING while the process
/// serves, whatever its dependencies (Kubernetes `livenessProbe: grpc: {service: liveness}`).
pub const LIVENESS_SERVICE: &str = "liveness";

/// Readiness and liveness over `grpc.health.v1`, the same for every feast-rs server: the
/// overall service `""` is SERVING while the server can answer (with `registry`, once a
/// registry snapshot is loaded; it goes back to NOT_SERVING if none is), and
/// [`LIVENESS_SERVICE`] is always SERVING. The statuses are set before this returns; with a
/// registry, a background task follows it until the server drops its cache.
pub async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    registry: Option<RegistryCache>,
) {
    use tonic_health::ServingStatus;
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let status = |ready: bool| {
        if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let Some(registry) = registry else {
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        return;
    };
    let mut last = registry.snapshot().is_some();
    reporter.set_service_status("", status(last)).await;
    // Weak, as the refresher: the task ends when the server drops its cache.
    let weak = Arc::downgrade(&registry.inner);
    drop(registry);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            let ready = inner.current.load().is_some();
            drop(inner);
            if ready != last {
                reporter.set_service_status("", status(ready)).await;
                last = ready;
            }
        }
    });
}
