//! The materializer service (`feast-rs serve-materializer`): materialization jobs with ids,
//! per-view progress and cancellation over gRPC (`feast_rs.materializer.v1.Materializer`),
//! and an optional schedule that runs an incremental job of every online view at a fixed
//! interval, so a deployment needs no external scheduler.
//!
//! A job resolves its views and windows on a freshly loaded registry, claims the views (a
//! view already being materialized by this service is refused unless `force`), then runs
//! up to [`JobManager::parallelism`] views at once, each streamed by [`run_window`] and its
//! interval recorded when the view is complete. A cancelled job stops at once; views it
//! had not finished record nothing, so the next incremental run redoes them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use feast_core::registry::timestamp;
use feast_offline::OfflineStore;
use feast_online::OnlineStore;
use feast_online::materialize::{MaterializeCall, Range, Running};
use feast_proto::feast_rs::materializer::v1 as pb;
use feast_registry::RegistryCache;
use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::guard::{BusyView, ViewLocks};
use crate::metrics::Metrics;
use crate::{
    IntervalRecorder, MaterializeError, Options, SkippedView, ViewWindow, plan, run_window,
};

/// What each RPC of `feast_rs.materializer.v1.Materializer` needs under `auth:` (a test fails
/// when the proto has an RPC without a row). Scheduled jobs run as the service itself.
pub const RPC_RULES: &[(&str, &str)] = &[
    ("Materialize", "WRITE_ONLINE on every view of the job"),
    (
        "MaterializeIncremental",
        "WRITE_ONLINE on every view of the job",
    ),
    ("GetJob", "DESCRIBE on every view of the job"),
    (
        "ListJobs",
        "the jobs whose every view the caller may DESCRIBE",
    ),
    ("CancelJob", "WRITE_ONLINE on every view of the job"),
];

/// Jobs kept for GetJob / ListJobs (the oldest finished ones are dropped beyond this).
const KEPT_JOBS: usize = 1000;

/// One view of a job.
struct ViewRecord {
    window: ViewWindow,
    state: Mutex<(pb::JobState, String)>,
    rows: AtomicU64,
    written: AtomicU64,
}

/// One job.
pub struct JobRecord {
    id: String,
    kind: &'static str,
    trigger: &'static str,
    created: DateTime<Utc>,
    views: Vec<ViewRecord>,
    /// Views "every view" covers that feast-rs cannot compute (not run, reported).
    skipped: Vec<SkippedView>,
    status: Mutex<JobStatus>,
    done: tokio::sync::watch::Sender<bool>,
    metrics: Option<Arc<Metrics>>,
}

struct JobStatus {
    state: pb::JobState,
    finished: Option<DateTime<Utc>>,
    error: String,
    abort: Option<tokio::task::AbortHandle>,
}

impl JobRecord {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> pb::JobState {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Waits until the job has finished (succeeded, failed or cancelled).
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    pub fn to_proto(&self) -> pb::Job {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        pb::Job {
            id: self.id.clone(),
            state: status.state as i32,
            kind: self.kind.to_string(),
            views: self
                .views
                .iter()
                .map(|v| {
                    let (state, error) = v.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    pb::ViewProgress {
                        feature_view: v.window.view.clone(),
                        start: Some(timestamp(v.window.start)),
                        end: Some(timestamp(v.window.end)),
                        state: state as i32,
                        rows: v.rows.load(Ordering::Relaxed),
                        written: v.written.load(Ordering::Relaxed),
                        error,
                    }
                })
                .collect(),
            created: Some(timestamp(self.created)),
            finished: status.finished.map(timestamp),
            error: status.error.clone(),
            trigger: self.trigger.to_string(),
            skipped: self
                .skipped
                .iter()
                .map(|s| pb::SkippedView {
                    feature_view: s.view.clone(),
                    kind: s.kind.to_string(),
                    reason: s.reason.clone(),
                })
                .collect(),
        }
    }

    fn finish(&self, state: pb::JobState, error: String) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.finished.is_some() {
            return;
        }
        status.state = state;
        status.error = error;
        status.finished = Some(Utc::now());
        status.abort = None;
        drop(status);
        if let Some(metrics) = &self.metrics {
            let state = match state {
                pb::JobState::Succeeded => "succeeded",
                pb::JobState::Cancelled => "cancelled",
                _ => "failed",
            };
            metrics.job_finished(self.trigger, state);
        }
        let _ = self.done.send(true);
    }
}

/// Who starts a job: a caller of the API (authorized when the service authenticates; the
/// user is `None` only when it does not), or the service's own schedule.
#[derive(Debug, Clone, Copy)]
pub enum Trigger<'a> {
    Api(Option<&'a feast_auth::User>),
    Schedule,
}

impl Trigger<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Trigger::Api(_) => "api",
            Trigger::Schedule => "schedule",
        }
    }
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Plan(#[from] MaterializeError),
    /// Some views are being materialized by another job (of this service, or of another
    /// process of the repository).
    #[error("feature views already being materialized: {}; wait for that job or use force", busy_list(.0))]
    Busy(Vec<BusyView>),
    #[error("the registry has not been loaded yet")]
    NoRegistry,
    /// Feast's permission error message.
    #[error("{0}")]
    Denied(String),
}

fn busy_list(busy: &[BusyView]) -> String {
    busy.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The views of this service's own running jobs among `names`, as [`BusyView`]s.
fn busy_here(names: Vec<String>) -> SubmitError {
    SubmitError::Busy(
        names
            .into_iter()
            .map(|view| BusyView {
                view,
                holder: "another job of this materializer".to_owned(),
            })
            .collect(),
    )
}

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Self {
        match &e {
            SubmitError::Busy(_) => Status::already_exists(e.to_string()),
            SubmitError::NoRegistry => Status::unavailable(e.to_string()),
            SubmitError::Denied(m) => Status::permission_denied(m.clone()),
            SubmitError::Plan(MaterializeError::Feast(f)) => match f.status() {
                feast_core::error::StatusKind::NotFound => Status::not_found(f.message.clone()),
                _ => Status::invalid_argument(f.message.clone()),
            },
            SubmitError::Plan(p) => Status::invalid_argument(p.to_string()),
        }
    }
}

/// Runs and tracks jobs.
pub struct JobManager<S> {
    pub offline: Arc<S>,
    pub online: Arc<dyn OnlineStore>,
    pub recorder: Arc<IntervalRecorder>,
    pub registry: RegistryCache,
    pub project: String,
    pub options: Options,
    /// Views materialized at once within a job.
    pub parallelism: usize,
    /// `Some` when callers are authenticated: API jobs need WRITE_ONLINE on every view
    /// (scheduled jobs are the service's own).
    pub authorizer: Option<Arc<feast_auth::Authorizer>>,
    /// Prometheus metrics of jobs and views (`None`: not recorded).
    pub metrics: Option<Arc<Metrics>>,
    /// How views are claimed against other processes: lock files next to a file registry,
    /// or leases in a SQL registry shared with the other replicas (`None`: this is the only
    /// process that materializes).
    pub locks: Option<ViewLocks>,
    running: Running,
    jobs: Mutex<VecDeque<Arc<JobRecord>>>,
}

impl<S: OfflineStore + 'static> JobManager<S> {
    pub fn new(
        offline: Arc<S>,
        online: Arc<dyn OnlineStore>,
        recorder: Arc<IntervalRecorder>,
        registry: RegistryCache,
        project: impl Into<String>,
        options: Options,
    ) -> Self {
        Self {
            offline,
            online,
            recorder,
            registry,
            project: project.into(),
            options,
            parallelism: 4,
            authorizer: None,
            metrics: None,
            locks: None,
            running: Running::default(),
            jobs: Mutex::new(VecDeque::new()),
        }
    }

    /// `Ok` when the caller may perform `action` on every view in `names` (always for the
    /// schedule and without `auth`). A view no longer in the registry is checked by name.
    fn authorize(
        &self,
        catalog: &feast_core::registry::Catalog,
        trigger: Trigger<'_>,
        names: &[String],
        action: feast_auth::Action,
    ) -> Result<(), SubmitError> {
        let (Some(authorizer), Trigger::Api(user)) = (&self.authorizer, trigger) else {
            return Ok(());
        };
        let user = user.ok_or_else(|| {
            SubmitError::Denied("no authenticated user on a call that needs one".into())
        })?;
        let permissions = feast_auth::project_permissions(catalog, &self.project);
        for name in names {
            let resource = match catalog.get::<feast_proto::core::FeatureView>(name, &self.project)
            {
                Ok(view) => feast_auth::ResourceRef::of(view),
                Err(_) => feast_auth::ResourceRef::new(feast_auth::ResourceKind::FeatureView, name),
            };
            authorizer
                .check(user, &permissions, resource, &[action])
                .map_err(|e| SubmitError::Denied(e.message))?;
        }
        Ok(())
    }

    /// Whether the caller may see or cancel `job` (`action` on each of its views).
    pub fn authorize_job(
        &self,
        job: &JobRecord,
        user: Option<&feast_auth::User>,
        action: feast_auth::Action,
    ) -> Result<(), SubmitError> {
        if self.authorizer.is_none() {
            return Ok(());
        }
        let snapshot = self.registry.snapshot().ok_or(SubmitError::NoRegistry)?;
        let names: Vec<String> = job.views.iter().map(|v| v.window.view.clone()).collect();
        self.authorize(&snapshot.catalog, Trigger::Api(user), &names, action)
    }

    /// Plans `call` on a fresh registry, claims its views and starts it in the background.
    pub async fn submit(
        self: &Arc<Self>,
        call: MaterializeCall,
        force: bool,
        trigger: Trigger<'_>,
    ) -> Result<Arc<JobRecord>, SubmitError> {
        self.submit_reporting(call, force, trigger, Vec::new())
            .await
    }

    /// [`JobManager::submit`], the job also reporting `skipped` (views its caller left out
    /// of `call` because feast-rs cannot compute them).
    pub(crate) async fn submit_reporting(
        self: &Arc<Self>,
        call: MaterializeCall,
        force: bool,
        trigger: Trigger<'_>,
        skipped: Vec<SkippedView>,
    ) -> Result<Arc<JobRecord>, SubmitError> {
        if let Err(e) = self.registry.refresh().await {
            tracing::warn!(message = "registry refresh before a job failed", error = %e);
        }
        let snapshot = self.registry.snapshot().ok_or(SubmitError::NoRegistry)?;
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
        let skipped: Vec<SkippedView> = skipped.into_iter().chain(planned.skipped).collect();
        let windows = planned.windows;
        let mut names: Vec<String> = windows.iter().map(|w| w.view.clone()).collect();
        self.authorize(
            &snapshot.catalog,
            trigger,
            &names,
            feast_auth::Action::WriteOnline,
        )?;
        let mut guard = self.running.claim(&names, force).map_err(busy_here)?;
        // Other processes of the repository (replicas on a SQL registry, a CLI run or a
        // feature server on a file registry): take each view's lock first, then plan the
        // windows again on a registry read after that, so a window starts where the last
        // holder's recorded interval ended and no window runs twice.
        let (held, windows, snapshot) = match &self.locks {
            Some(locks) => {
                let (held, busy) = locks.acquire(&self.project, &names).await;
                if !busy.is_empty() {
                    if force {
                        tracing::warn!(
                            message = "materializing views held elsewhere, as forced",
                            views = %busy_list(&busy)
                        );
                    } else if matches!(trigger, Trigger::Api(_)) || held.views.is_empty() {
                        drop(held);
                        return Err(SubmitError::Busy(busy));
                    } else {
                        tracing::info!(message = "views left to other processes", views = %busy_list(&busy));
                        names = held.views.clone();
                        drop(guard);
                        guard = self.running.claim(&names, false).map_err(busy_here)?;
                    }
                }
                if let Err(e) = self.registry.refresh().await {
                    tracing::warn!(message = "registry refresh after taking the views' locks failed", error = %e);
                }
                let snapshot = self.registry.snapshot().ok_or(SubmitError::NoRegistry)?;
                // (No views: nothing to plan; an empty list would mean every view.)
                let windows = if names.is_empty() {
                    Vec::new()
                } else {
                    plan(
                        &snapshot.catalog,
                        &self.project,
                        &crate::plan_names(&windows, &names),
                        call.range,
                        Utc::now(),
                    )?
                    .windows
                };
                (Some(held), windows, snapshot)
            }
            None => (None, windows, snapshot),
        };
        let (done, _) = tokio::sync::watch::channel(false);
        let job = Arc::new(JobRecord {
            id: uuid_like(),
            kind: match call.range {
                Range::Between { .. } => "range",
                Range::Incremental { .. } => "incremental",
                Range::Everything => "everything",
            },
            trigger: trigger.name(),
            created: Utc::now(),
            views: windows
                .into_iter()
                .map(|window| ViewRecord {
                    window,
                    state: Mutex::new((pb::JobState::Unspecified, String::new())),
                    rows: AtomicU64::new(0),
                    written: AtomicU64::new(0),
                })
                .collect(),
            skipped,
            status: Mutex::new(JobStatus {
                state: pb::JobState::Running,
                finished: None,
                error: String::new(),
                abort: None,
            }),
            done,
            metrics: self.metrics.clone(),
        });
        if let Some(metrics) = &self.metrics {
            metrics.job_started();
        }
        self.keep(job.clone());
        tracing::info!(message = "job started", job = %job.id, views = ?names, trigger = trigger.name());
        let manager = self.clone();
        let record = job.clone();
        // The job's work joins the trace of the call that started it (if any).
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _guard = guard;
                let results: Vec<bool> = futures::stream::iter(0..record.views.len())
                    .map(|i| run_view(manager.clone(), record.clone(), snapshot.clone(), i))
                    .buffer_unordered(manager.parallelism.max(1))
                    .collect()
                    .await;
                if let Some(held) = held {
                    held.release().await;
                }
                let failed = results.iter().filter(|ok| !**ok).count();
                if failed == 0 {
                    record.finish(pb::JobState::Succeeded, String::new());
                } else {
                    record.finish(
                        pb::JobState::Failed,
                        format!("{failed} of {} feature views failed", results.len()),
                    );
                }
                tracing::info!(message = "job finished", job = %record.id, state = ?record.state());
            },
            span,
        ));
        {
            let mut status = job.status.lock().unwrap_or_else(|e| e.into_inner());
            if status.finished.is_none() {
                status.abort = Some(task.abort_handle());
            }
        }
        Ok(job)
    }

    fn keep(&self, job: Arc<JobRecord>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.push_front(job);
        while jobs.len() > KEPT_JOBS {
            // Drop the oldest finished job; running ones stay listed.
            match jobs
                .iter()
                .rposition(|j| j.state() != pb::JobState::Running)
            {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
    }

    pub fn job(&self, id: &str) -> Option<Arc<JobRecord>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    pub fn jobs(&self) -> Vec<Arc<JobRecord>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Cancels a running job (its task is aborted: the views it had not finished record
    /// nothing). A finished job is left as it is.
    pub fn cancel(&self, job: &JobRecord) {
        let abort = job
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort
            .take();
        if let Some(abort) = abort {
            abort.abort();
            for view in &job.views {
                let mut state = view.state.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(state.0, pb::JobState::Running | pb::JobState::Unspecified) {
                    *state = (pb::JobState::Cancelled, String::new());
                }
            }
            job.finish(pb::JobState::Cancelled, "cancelled".into());
            // The aborted task drops its claim on the views when it unwinds.
            tracing::info!(message = "job cancelled", job = %job.id);
        }
    }

    /// Cancels every running job, as a service does when it shuts down: their unfinished
    /// views record nothing, so the next incremental run redoes those windows. Returns how
    /// many jobs were cancelled.
    pub fn cancel_all(&self) -> usize {
        let running: Vec<Arc<JobRecord>> = self
            .jobs()
            .into_iter()
            .filter(|j| j.state() == pb::JobState::Running)
            .collect();
        for job in &running {
            self.cancel(job);
        }
        running.len()
    }
}

/// Runs view `i` of `record`; whether it succeeded.
async fn run_view<S: OfflineStore + 'static>(
    manager: Arc<JobManager<S>>,
    record: Arc<JobRecord>,
    snapshot: Arc<feast_registry::Snapshot>,
    i: usize,
) -> bool {
    let view = &record.views[i];
    *view.state.lock().unwrap_or_else(|e| e.into_inner()) = (pb::JobState::Running, String::new());
    let progress = |rows: u64| view.rows.store(rows, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let result = run_window(
        manager.offline.as_ref(),
        &manager.online,
        &manager.recorder,
        &snapshot.catalog,
        &manager.project,
        &view.window,
        &manager.options,
        &progress,
    )
    .await;
    if let Some(metrics) = &manager.metrics {
        let (state, rows, written) = match &result {
            Ok(report) => ("succeeded", report.rows, report.written),
            Err(_) => ("failed", view.rows.load(Ordering::Relaxed), 0),
        };
        metrics.view_done(&view.window.view, state, rows, written, started.elapsed());
    }
    let mut state = view.state.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(report) => {
            view.rows.store(report.rows, Ordering::Relaxed);
            view.written.store(report.written, Ordering::Relaxed);
            *state = (pb::JobState::Succeeded, String::new());
            true
        }
        Err(e) => {
            tracing::error!(message = "view failed", view = %view.window.view, error = %e);
            *state = (pb::JobState::Failed, e.to_string());
            false
        }
    }
}

fn uuid_like() -> String {
    // Time-ordered and unique enough for job ids within one service.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{:04x}",
        Utc::now().timestamp_micros(),
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn utc(t: &Option<prost_types::Timestamp>, what: &str) -> Result<DateTime<Utc>, Status> {
    let t = t
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?;
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .ok_or_else(|| Status::invalid_argument(format!("{what} is out of range")))
}

/// The gRPC face of a [`JobManager`].
pub struct MaterializerService<S>(pub Arc<JobManager<S>>);

impl<S: OfflineStore + 'static> MaterializerService<S> {
    async fn start(
        &self,
        user: Option<feast_auth::User>,
        call: MaterializeCall,
        force: bool,
        wait: bool,
    ) -> Result<Response<pb::Job>, Status> {
        let job = self
            .0
            .submit(call, force, Trigger::Api(user.as_ref()))
            .await?;
        if wait {
            job.wait().await;
        }
        Ok(Response::new(job.to_proto()))
    }
}

#[tonic::async_trait]
impl<S: OfflineStore + 'static> pb::materializer_server::Materializer for MaterializerService<S> {
    async fn materialize(
        &self,
        request: Request<pb::MaterializeRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let user = request.extensions().get::<feast_auth::User>().cloned();
        let r = request.into_inner();
        let range = if r.disable_event_timestamp {
            Range::Everything
        } else {
            let (start, end) = (utc(&r.start, "start")?, utc(&r.end, "end")?);
            if start >= end {
                return Err(Status::invalid_argument(format!(
                    "start ({start}) must be before end ({end})"
                )));
            }
            Range::Between { start, end }
        };
        let call = MaterializeCall {
            views: r.feature_views,
            range,
        };
        self.start(user, call, r.force, r.wait).await
    }

    async fn materialize_incremental(
        &self,
        request: Request<pb::MaterializeIncrementalRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let user = request.extensions().get::<feast_auth::User>().cloned();
        let r = request.into_inner();
        let call = MaterializeCall {
            views: r.feature_views,
            range: Range::Incremental {
                end: utc(&r.end, "end")?,
            },
        };
        self.start(user, call, r.force, r.wait).await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let user = request.extensions().get::<feast_auth::User>().cloned();
        let id = request.into_inner().id;
        let job = self
            .0
            .job(&id)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        self.0
            .authorize_job(&job, user.as_ref(), feast_auth::Action::Describe)?;
        Ok(Response::new(job.to_proto()))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let user = request.extensions().get::<feast_auth::User>().cloned();
        let limit = request.into_inner().limit as usize;
        // The jobs whose every view the caller may describe.
        let jobs: Vec<pb::Job> = self
            .0
            .jobs()
            .iter()
            .filter(|j| {
                self.0
                    .authorize_job(j, user.as_ref(), feast_auth::Action::Describe)
                    .is_ok()
            })
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|j| j.to_proto())
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let user = request.extensions().get::<feast_auth::User>().cloned();
        let id = request.into_inner().id;
        let job = self
            .0
            .job(&id)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        self.0
            .authorize_job(&job, user.as_ref(), feast_auth::Action::WriteOnline)?;
        self.0.cancel(&job);
        Ok(Response::new(job.to_proto()))
    }
}

/// PEM certificate chain and private key of the TLS server (`--cert`/`--key`).
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Serves `manager` on `listener` until `shutdown` (gRPC health included; `authenticator`
/// checks every call but the health check).
pub async fn serve_on<S: OfflineStore + 'static>(
    listener: tokio::net::TcpListener,
    manager: Arc<JobManager<S>>,
    authenticator: feast_auth::Authenticator,
    tls: Option<TlsPem>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Ready ("") once the registry is loaded; "liveness" always.
    feast_registry::report_health(health_reporter, Some(manager.registry.clone())).await;
    let auth = feast_auth::AuthLayer::new(authenticator).with_public_paths([
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ]);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(tls.cert, tls.key)),
        )?;
    }
    builder
        .layer(feast_telemetry::TraceLayer::new())
        .layer(auth)
        .add_service(health)
        .add_service(pb::materializer_server::MaterializerServer::new(
            MaterializerService(manager),
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Serves `GET /metrics` (Prometheus text: the manager's job and view metrics and the
/// freshness of the project's views, from the registry as refreshed at each scrape) until
/// `shutdown`. Answers 404 without `manager.metrics`.
pub async fn serve_metrics<S: OfflineStore + 'static>(
    listener: tokio::net::TcpListener,
    manager: Arc<JobManager<S>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    let route = axum::routing::get(move || {
        let manager = manager.clone();
        async move {
            let Some(metrics) = &manager.metrics else {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            };
            // Freshness as of now: the latest intervals, whoever recorded them.
            if let Err(e) = manager.registry.refresh().await {
                tracing::debug!(message = "registry refresh before a scrape failed", error = %e);
            }
            let snapshot = manager.registry.snapshot();
            let text = metrics.render(snapshot.as_ref().map(|s| &s.catalog), &manager.project);
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
    });
    axum::serve(listener, axum::Router::new().route("/metrics", route))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::RPC_RULES;

    #[test]
    fn every_rpc_has_a_rule() {
        let pool = prost_reflect::DescriptorPool::decode(feast_proto::FILE_DESCRIPTOR_SET).unwrap();
        let service = pool
            .get_service_by_name("feast_rs.materializer.v1.Materializer")
            .unwrap();
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        for m in &methods {
            assert!(
                RPC_RULES.iter().any(|(r, _)| r == m),
                "no authorization rule for {m}"
            );
        }
        for (r, _) in RPC_RULES {
            assert!(
                methods.iter().any(|m| m == r),
                "rule for an unknown RPC {r}"
            );
        }
    }
}
