//! The in-process [`MaterializeBackend`] of the feature server: jobs run on the server's
//! own runtime, reading the repository's files with the embedded offline engine.

use std::sync::Arc;

use chrono::Utc;
use feast_offline::OfflineStore;
use feast_online::OnlineStore;
use feast_online::materialize::{BoxFuture, MaterializeBackend, MaterializeCall};
use feast_online::serving::ServeError;
use feast_registry::Snapshot;

use crate::{IntervalRecorder, MaterializeError, Options, plan, run_window};

/// Materializes in-process: `offline` → `online`, intervals recorded by `recorder`.
pub struct LocalMaterializer<S> {
    pub offline: Arc<S>,
    pub online: Arc<dyn OnlineStore>,
    pub recorder: Arc<IntervalRecorder>,
    pub project: String,
    pub options: Options,
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
        Ok(crate::resolve_views(
            &snapshot.catalog,
            &self.project,
            call,
        )?)
    }

    fn run(
        &self,
        snapshot: Arc<Snapshot>,
        call: MaterializeCall,
        views: Vec<String>,
        _force: bool,
    ) -> BoxFuture<Result<(), ServeError>> {
        let offline = self.offline.clone();
        let online = self.online.clone();
        let recorder = self.recorder.clone();
        let project = self.project.clone();
        let options = self.options.clone();
        Box::pin(async move {
            let catalog = &snapshot.catalog;
            let windows = plan(catalog, &project, &views, call.range, Utc::now())?;
            for window in &windows {
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
            Ok(())
        })
    }
}
