//! The in-process [`MaterializeBackend`] of the feature server: jobs run on the server's
//! own runtime, reading the repository's files with the embedded offline engine.

use std::sync::Arc;

use chrono::Utc;
use feast_offline::OfflineStore;
use feast_online::OnlineStore;
use feast_online::materialize::{BoxFuture, Job, MaterializeBackend, MaterializeCall};
use feast_online::serving::ServeError;
use feast_registry::Snapshot;

use crate::guard::ViewLocks;
use crate::{IntervalRecorder, MaterializeError, Options, plan, run_window};

/// Materializes in-process: `offline` → `online`, intervals recorded by `recorder`.
pub struct LocalMaterializer<S> {
    pub offline: Arc<S>,
    pub online: Arc<dyn OnlineStore>,
    pub recorder: Arc<IntervalRecorder>,
    pub project: String,
    pub options: Options,
    /// How views are claimed against the repository's other processes (`None`: not).
    pub locks: Option<ViewLocks>,
}

impl From<MaterializeError> for ServeError {
    fn from(e: MaterializeError) -> Self {
        match e {
            MaterializeError::Feast(f) => ServeError::Feast(f),
            MaterializeError::Invalid(m) => ServeError::Unprocessable(m),
            MaterializeError::Online(o) => o.into(),
            other => ServeError::Internal(other.to_string()),
        }
    }
}

impl<S: OfflineStore + 'static> MaterializeBackend for LocalMaterializer<S> {
    fn resolve(
        &self,
        snapshot: &Snapshot,
        call: &MaterializeCall,
    ) -> Result<Vec<String>, ServeError> {
        let planned = plan(
            &snapshot.catalog,
            &self.project,
            &call.views,
            call.range,
            Utc::now(),
        )?;
        for skipped in &planned.skipped {
            tracing::warn!(message = "feature view not materialized", view = %skipped.view, reason = %skipped);
        }
        Ok(planned.windows.into_iter().map(|w| w.view).collect())
    }

    fn start(
        &self,
        snapshot: Arc<Snapshot>,
        call: MaterializeCall,
        views: Vec<String>,
        force: bool,
    ) -> BoxFuture<Result<Job, ServeError>> {
        let offline = self.offline.clone();
        let online = self.online.clone();
        let recorder = self.recorder.clone();
        let project = self.project.clone();
        let options = self.options.clone();
        let locks = self.locks.clone();
        Box::pin(async move {
            // Claimed against the repository's other processes (a CLI run, another server,
            // a materializer) before the job is accepted.
            let held = match &locks {
                Some(locks) => {
                    let (held, busy) = locks.acquire(&project, &views).await;
                    if !busy.is_empty() {
                        let list: Vec<String> = busy.iter().map(ToString::to_string).collect();
                        if !force {
                            tracing::info!(message = "views held by another process", views = ?list);
                            return Err(ServeError::Busy(
                                busy.into_iter().map(|b| b.view).collect(),
                            ));
                        }
                        tracing::warn!(message = "materializing views held by another process, as forced", views = ?list);
                    }
                    Some(held)
                }
                None => None,
            };
            let job: Job = Box::pin(async move {
                if views.is_empty() {
                    // (An empty list would mean every view.)
                    return Ok(());
                }
                let catalog = &snapshot.catalog;
                // The names as asked (a pinned `view@vN` keeps its version); every view
                // when none was named.
                let names = if call.views.is_empty() {
                    &views
                } else {
                    &call.views
                };
                let planned = plan(catalog, &project, names, call.range, Utc::now())?;
                for window in &planned.windows {
                    run_window(
                        offline.as_ref(),
                        &online,
                        &recorder,
                        catalog,
                        &project,
                        window,
                        &options,
                        &|_| {},
                    )
                    .await?;
                }
                if let Some(held) = held {
                    held.release().await;
                }
                Ok(())
            });
            Ok(job)
        })
    }
}
