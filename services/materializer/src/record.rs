//! Recording a materialized interval in the registry (Feast's `apply_materialization`),
//! wherever the registry lives: a store read and written directly (file or SQL, with an
//! optimistic commit retried on a concurrent writer's conflict), or a registry server
//! (its `ApplyMaterialization` RPC).

use chrono::{DateTime, Utc};
use feast_core::registry::{Catalog, timestamp};
use feast_registry::{RegistryStore, RemoteRegistry, StoreError};

use crate::{MaterializeError, Result};

/// Where intervals are recorded.
pub enum IntervalRecorder {
    Store(Box<dyn RegistryStore>),
    Remote(RemoteRegistry),
}

impl IntervalRecorder {
    /// Appends `[start, end]` to `view`'s materialization intervals (and marks it
    /// `AVAILABLE_ONLINE`) on the current registry, keeping every other change.
    pub async fn record(
        &self,
        project: &str,
        view: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<()> {
        let (start, end) = (timestamp(start), timestamp(end));
        match self {
            IntervalRecorder::Remote(client) => {
                let catalog = client
                    .load_project(project)
                    .await
                    .map_err(|e| registry_error(e.to_string()))?;
                // A stream view goes as the feature view of its name: the registry
                // records the interval on whichever kind holds that name (Feast's
                // ApplyMaterializationRequest carries a FeatureView).
                let feature_view =
                    crate::materializable_view(&catalog, project, view)?.into_owned();
                client
                    .grpc()
                    .apply_materialization(feast_proto::registry::ApplyMaterializationRequest {
                        feature_view: Some(feature_view),
                        project: project.to_string(),
                        start_date: Some(start),
                        end_date: Some(end),
                        commit: true,
                    })
                    .await
                    .map_err(|e| registry_error(e.message().to_string()))?;
                Ok(())
            }
            IntervalRecorder::Store(store) => {
                let mut attempt = 0u32;
                loop {
                    let (proto, version) = store
                        .load()
                        .await
                        .map_err(|e| registry_error(e.to_string()))?;
                    let mut catalog = proto.map(Catalog::from_proto).unwrap_or_default();
                    crate::materializable_view(&catalog, project, view)?;
                    let now = timestamp(Utc::now());
                    catalog.apply_materialization(view, project, start, end, now);
                    catalog.stamp_commit(now);
                    match store.commit(catalog.proto(), &version).await {
                        Ok(_) => return Ok(()),
                        // Another writer (a parallel view of this job, another replica,
                        // `feast apply`) got in between: reload and append again, after a
                        // short jittered pause so parallel recorders do not collide again.
                        Err(StoreError::Conflict { .. }) if attempt < 30 => {
                            attempt += 1;
                            let jitter = u64::from(Utc::now().timestamp_subsec_micros()) % 20;
                            tokio::time::sleep(std::time::Duration::from_millis(
                                2 + jitter + 5 * u64::from(attempt.min(10)),
                            ))
                            .await;
                        }
                        Err(e) => return Err(registry_error(e.to_string())),
                    }
                }
            }
        }
    }
}

fn registry_error(message: String) -> MaterializeError {
    MaterializeError::Registry(message)
}
