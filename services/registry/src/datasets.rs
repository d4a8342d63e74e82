//! Saved datasets made by the registry server itself (Feast 0.67's UI-facing RPCs):
//! `CreateDatasetFromRetrieval` runs a historical retrieval in a background job and saves
//! the result, `GetDatasetJobStatus` / `ListDatasetJobs` report the jobs, `GetDatasetData`
//! previews a saved dataset's rows.
//!
//! The registry does not compute features: a [`DatasetBackend`] (the binary wires one over
//! the repository's offline store) runs the retrieval and reads the stored rows. Jobs live in
//! memory, as Feast's `DatasetJobManager`: at most [`CONCURRENT_JOBS`] run at once, and
//! finished jobs are forgotten [`FINISHED_JOB_RETENTION`] after they end.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use feast_core::error::FeastError;
use feast_core::registry::Catalog;
use feast_proto::core;
use feast_proto::registry::{CreateDatasetFromRetrievalRequest, GetDatasetJobStatusResponse};

/// Jobs that run at once (Feast's executor has two workers).
pub const CONCURRENT_JOBS: usize = 2;
/// How long a finished job stays listed.
pub const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(3600);

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A saved dataset's first rows: column names and, per row, each value as Feast's
/// `json.dumps(v, default=str)` text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetPreview {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// What computes and reads saved datasets for the registry server.
pub trait DatasetBackend: Send + Sync + 'static {
    /// Runs `request`'s retrieval against `catalog` and persists the result; returns the
    /// saved dataset to register (the job applies it and commits).
    fn create(
        &self,
        catalog: Catalog,
        request: CreateDatasetFromRetrievalRequest,
    ) -> BoxFuture<Result<core::SavedDataset, FeastError>>;

    /// Up to `limit` rows of a saved dataset's storage.
    fn preview(
        &self,
        dataset: core::SavedDataset,
        limit: usize,
    ) -> BoxFuture<Result<DatasetPreview, FeastError>>;
}

/// Feast's `JobStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    name: String,
    project: String,
    status: JobStatus,
    created_at: String,
    completed_at: Option<String>,
    error: Option<String>,
    finished: Option<Instant>,
}

impl Job {
    fn to_proto(&self) -> GetDatasetJobStatusResponse {
        GetDatasetJobStatusResponse {
            job_id: self.id.clone(),
            dataset_name: self.name.clone(),
            project: self.project.clone(),
            status: self.status.as_str().to_owned(),
            created_at: self.created_at.clone(),
            completed_at: self.completed_at.clone().unwrap_or_default(),
            error: self.error.clone().unwrap_or_default(),
        }
    }
}

/// The server's dataset jobs.
pub(crate) struct DatasetJobs {
    jobs: Mutex<HashMap<String, Job>>,
    pub(crate) slots: tokio::sync::Semaphore,
}

impl Default for DatasetJobs {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            slots: tokio::sync::Semaphore::new(CONCURRENT_JOBS),
        }
    }
}

/// Python's `datetime.now(timezone.utc).isoformat()`.
fn iso_now() -> String {
    let now = chrono::Utc::now();
    if now.timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

impl DatasetJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a pending job; returns its status.
    pub(crate) fn submit(&self, name: &str, project: &str) -> GetDatasetJobStatusResponse {
        let mut jobs = self.lock();
        jobs.retain(|_, j| {
            j.finished
                .is_none_or(|at| at.elapsed() < FINISHED_JOB_RETENTION)
        });
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            project: project.to_owned(),
            status: JobStatus::Pending,
            created_at: iso_now(),
            completed_at: None,
            error: None,
            finished: None,
        };
        let out = job.to_proto();
        jobs.insert(job.id.clone(), job);
        out
    }

    pub(crate) fn running(&self, id: &str) {
        if let Some(job) = self.lock().get_mut(id) {
            job.status = JobStatus::Running;
        }
    }

    pub(crate) fn finish(&self, id: &str, outcome: Result<(), String>) {
        if let Some(job) = self.lock().get_mut(id) {
            job.completed_at = Some(iso_now());
            job.finished = Some(Instant::now());
            match outcome {
                Ok(()) => job.status = JobStatus::Completed,
                Err(e) => {
                    job.status = JobStatus::Failed;
                    job.error = Some(e);
                }
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<GetDatasetJobStatusResponse> {
        self.lock().get(id).map(Job::to_proto)
    }

    /// Jobs of `project` (all when `None`) with `status` (any when `None`), newest first.
    pub(crate) fn list(
        &self,
        project: Option<&str>,
        status: Option<JobStatus>,
    ) -> Vec<GetDatasetJobStatusResponse> {
        let mut jobs: Vec<Job> = self
            .lock()
            .values()
            .filter(|j| project.is_none_or(|p| j.project == p))
            .filter(|j| status.is_none_or(|s| j.status == s))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        jobs.iter().map(Job::to_proto).collect()
    }
}

/// The dummy saved dataset Feast checks job permissions on: `SavedDataset(name)`.
pub(crate) fn dummy_dataset(name: &str) -> core::SavedDataset {
    core::SavedDataset {
        spec: Some(core::SavedDatasetSpec {
            name: name.to_owned(),
            ..Default::default()
        }),
        meta: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_move_through_their_states_and_list_newest_first() {
        let jobs = DatasetJobs::default();
        let a = jobs.submit("a", "p1");
        std::thread::sleep(Duration::from_millis(2));
        let b = jobs.submit("b", "p2");
        assert_eq!(a.status, "pending");
        assert!(a.created_at.ends_with("+00:00"), "{}", a.created_at);
        jobs.running(&a.job_id);
        assert_eq!(jobs.get(&a.job_id).unwrap().status, "running");
        jobs.finish(&a.job_id, Err("boom".into()));
        let a2 = jobs.get(&a.job_id).unwrap();
        assert_eq!((a2.status.as_str(), a2.error.as_str()), ("failed", "boom"));
        assert!(!a2.completed_at.is_empty());
        jobs.finish(&b.job_id, Ok(()));
        let all: Vec<String> = jobs
            .list(None, None)
            .into_iter()
            .map(|j| j.dataset_name)
            .collect();
        assert_eq!(all, ["b", "a"]);
        assert_eq!(jobs.list(Some("p1"), None).len(), 1);
        assert_eq!(jobs.list(None, Some(JobStatus::Completed)).len(), 1);
        assert_eq!(JobStatus::parse("running"), Some(JobStatus::Running));
        assert_eq!(JobStatus::parse("RUNNING"), None);
        assert!(jobs.get("nope").is_none());
    }
}
