//! `POST /materialize` and `POST /materialize-incremental` (PROTOCOLS.md §2.5): what the
//! Feast SDK calls when its online store is `remote`. The server resolves the views,
//! checks WRITE_ONLINE on each, refuses views already being materialized (409 unless
//! `?force=true`), then runs the job through its [`MaterializeBackend`]: to completion
//! (200, body `null`) or in the background with `?async=true` (202).
//!
//! The backend is a trait so the feature server does not depend on how jobs run: the CLI
//! plugs in the in-process materializer (`feast-materializer`), and a materializer
//! service client can take its place.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use feast_registry::Snapshot;
use serde::Deserialize;

use crate::serving::ServeError;

/// The time range of a materialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `[start, end]`.
    Between {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// From each view's last materialized end (else now - ttl) to `end`.
    Incremental { end: DateTime<Utc> },
    /// Every row up to now (`disable_event_timestamp`).
    Everything,
}

/// One materialization request: the views (empty: every online view) and the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializeCall {
    pub views: Vec<String>,
    pub range: Range,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs materializations for the feature server.
pub trait MaterializeBackend: Send + Sync + 'static {
    /// The views `call` covers, resolved against `snapshot` (unknown or offline-only views
    /// are errors): what is authorized and guarded against concurrent runs.
    fn resolve(
        &self,
        snapshot: &Snapshot,
        call: &MaterializeCall,
    ) -> Result<Vec<String>, ServeError>;

    /// Starts `call` on the resolved `views`: claims them against other processes where
    /// the backend guards views (a view held elsewhere is [`ServeError::Busy`] unless
    /// `force`, the caller's `?force=true`), and returns the job, which runs it to
    /// completion. The claim comes first so that an async request hears of a busy view
    /// in its answer, not only in the log.
    fn start(
        &self,
        snapshot: Arc<Snapshot>,
        call: MaterializeCall,
        views: Vec<String>,
        force: bool,
    ) -> BoxFuture<Result<Job, ServeError>>;
}

/// A started materialization: runs to completion, releasing its views' claims at the end.
pub type Job = BoxFuture<Result<(), ServeError>>;

/// The views being materialized by this server, so a view is not run twice at once.
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<Mutex<HashSet<String>>>);

impl Running {
    /// Marks `views` as running, unless some already are (those are returned) and `force`
    /// is off. The returned guard unmarks them when dropped.
    pub fn claim(&self, views: &[String], force: bool) -> Result<RunningGuard, Vec<String>> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let busy: Vec<String> = views.iter().filter(|v| set.contains(*v)).cloned().collect();
        if !busy.is_empty() && !force {
            return Err(busy);
        }
        set.extend(views.iter().cloned());
        Ok(RunningGuard {
            running: self.clone(),
            views: views.to_vec(),
        })
    }

    pub fn contains(&self, view: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(view)
    }
}

/// Unmarks its views when dropped (the job ended, failed or panicked).
#[derive(Debug)]
pub struct RunningGuard {
    running: Running,
    views: Vec<String>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut set = self.running.0.lock().unwrap_or_else(|e| e.into_inner());
        for v in &self.views {
            set.remove(v);
        }
    }
}

/// `POST /materialize` body (Feast's `MaterializeRequest`).
#[derive(Debug, Deserialize)]
pub struct MaterializeRequest {
    #[serde(default)]
    pub start_ts: Option<String>,
    #[serde(default)]
    pub end_ts: Option<String>,
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
    #[serde(default)]
    pub disable_event_timestamp: bool,
    #[serde(default)]
    pub full_feature_names: bool,
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /materialize-incremental` body (Feast's `MaterializeIncrementalRequest`).
#[derive(Debug, Deserialize)]
pub struct MaterializeIncrementalRequest {
    pub end_ts: String,
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
    #[serde(default)]
    pub full_feature_names: bool,
    #[serde(default)]
    pub version: Option<String>,
}

fn parse_ts(field: &str, value: &str) -> Result<DateTime<Utc>, ServeError> {
    feast_core::value::parse_iso_timestamp(value)
        .map(|(t, _)| t)
        .ok_or_else(|| {
            ServeError::Unprocessable(format!("Invalid timestamp format: {field} {value:?}"))
        })
}

/// Feast's refusal of a pinned-version materialization without versioning.
pub const VERSIONING_REQUIRED: &str = "Version-aware materialization requires \
     'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml.";

/// Feast's checks of a materialization's `version`: it needs exactly one view, and must be
/// `latest`, `vN` or `versionN`. A pinned version is materialized as the view name
/// `view@vN` (that version's recorded definition, into its own online table); `latest`
/// materializes the view as without it.
fn versioned_views(
    version: &Option<String>,
    views: Option<Vec<String>>,
) -> Result<Vec<String>, ServeError> {
    let views = views.unwrap_or_default();
    let Some(version) = version else {
        return Ok(views);
    };
    if views.len() != 1 {
        return Err(ServeError::Unprocessable(
            "--version requires --views with exactly one feature view.".into(),
        ));
    }
    match feast_core::version::parse_version(version) {
        Err(e) => Err(ServeError::Unprocessable(e.message)),
        Ok(None) => Ok(views),
        Ok(Some(n)) => Ok(vec![format!("{}@v{n}", views[0])]),
    }
}

impl MaterializeRequest {
    /// The call, with Feast's checks: both timestamps unless `disable_event_timestamp`,
    /// and start before end.
    pub fn call(self) -> Result<MaterializeCall, ServeError> {
        let views = versioned_views(&self.version, self.feature_views)?;
        let range = if self.disable_event_timestamp {
            Range::Everything
        } else {
            let (Some(start), Some(end)) = (&self.start_ts, &self.end_ts) else {
                return Err(ServeError::Unprocessable(
                    "start_ts and end_ts are required when disable_event_timestamp is False".into(),
                ));
            };
            let (start, end) = (parse_ts("start_ts", start)?, parse_ts("end_ts", end)?);
            if start >= end {
                return Err(ServeError::Unprocessable(format!(
                    "start_ts ({start}) must be before end_ts ({end})"
                )));
            }
            Range::Between { start, end }
        };
        Ok(MaterializeCall { views, range })
    }
}

impl MaterializeIncrementalRequest {
    pub fn call(self) -> Result<MaterializeCall, ServeError> {
        Ok(MaterializeCall {
            views: versioned_views(&self.version, self.feature_views)?,
            range: Range::Incremental {
                end: parse_ts("end_ts", &self.end_ts)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_runs_once_at_a_time_unless_forced() {
        let running = Running::default();
        let a = running.claim(&["v1".into(), "v2".into()], false).unwrap();
        assert_eq!(
            running
                .claim(&["v2".into(), "v3".into()], false)
                .unwrap_err(),
            vec!["v2".to_string()]
        );
        let forced = running.claim(&["v2".into()], true).unwrap();
        drop(a);
        assert!(!running.contains("v1"));
        drop(forced);
        assert!(running.claim(&["v2".into()], false).is_ok());
    }

    #[test]
    fn requests_are_checked_like_feasts() {
        let req = |j: &str| {
            serde_json::from_str::<MaterializeRequest>(j)
                .unwrap()
                .call()
        };
        assert!(matches!(
            req(r#"{"end_ts": "2024-05-01T00:00:00"}"#),
            Err(ServeError::Unprocessable(m)) if m.contains("start_ts and end_ts are required")
        ));
        assert!(matches!(
            req(r#"{"start_ts": "2024-05-02T00:00:00", "end_ts": "2024-05-01T00:00:00"}"#),
            Err(ServeError::Unprocessable(m)) if m.contains("must be before end_ts")
        ));
        assert_eq!(
            req(r#"{"disable_event_timestamp": true, "feature_views": ["a"]}"#).unwrap(),
            MaterializeCall {
                views: vec!["a".into()],
                range: Range::Everything
            }
        );
        let ok = req(r#"{"start_ts": "2024-05-01T00:00:00", "end_ts": "2024-05-02T00:00:00+00:00", "feature_views": null}"#)
            .unwrap();
        assert!(ok.views.is_empty());
    }
}
