//! The feature server's [`MaterializeBackend`] when a materializer service is configured
//! (`feast-rs serve --materializer http://host:6571`): `/materialize` requests become jobs
//! of that service, so materialization runs where its resources are and is guarded against
//! concurrent runs across every feature server that delegates to it.

use std::sync::Arc;

use feast_core::registry::timestamp;
use feast_online::materialize::{BoxFuture, Job, MaterializeBackend, MaterializeCall, Range};
use feast_online::serving::ServeError;
use feast_proto::feast_rs::materializer::v1 as pb;
use feast_registry::Snapshot;
use tonic::transport::Channel;

/// A client of `serve-materializer`.
#[derive(Clone)]
pub struct RemoteMaterializer {
    client: pb::materializer_client::MaterializerClient<
        feast_telemetry::WithTraceContext<feast_auth::WithBearer<Channel>>,
    >,
    project: String,
}

impl RemoteMaterializer {
    /// A client of the service at `url` (`http://host:port`); the connection is made on
    /// first use and re-made after failures. `token` is this server's own identity: the
    /// service checks WRITE_ONLINE for it, after this server checked the user's.
    /// An `https://` URL is reached over TLS, trusting `ca_cert` (PEM) besides the system
    /// roots.
    pub fn new(
        url: &str,
        project: impl Into<String>,
        token: Option<Arc<feast_auth::TokenProvider>>,
        ca_cert: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let mut endpoint = Channel::from_shared(url.to_string())
            .map_err(|e| format!("materializer address {url:?}: {e}"))?;
        if url.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = ca_cert {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("materializer TLS: {e}"))?;
        } else if ca_cert.is_some() {
            return Err(format!(
                "a CA certificate was given for {url}, which is not https://"
            ));
        }
        Ok(Self {
            client: pb::materializer_client::MaterializerClient::new(
                feast_telemetry::WithTraceContext::new(feast_auth::WithBearer::new(
                    endpoint.connect_lazy(),
                    token,
                )),
            ),
            project: project.into(),
        })
    }
}

fn to_serve(status: tonic::Status, views: &[String]) -> ServeError {
    match status.code() {
        tonic::Code::AlreadyExists => ServeError::Busy(views.to_vec()),
        tonic::Code::NotFound | tonic::Code::InvalidArgument => {
            ServeError::Unprocessable(status.message().to_string())
        }
        tonic::Code::Unavailable => {
            ServeError::Unavailable(format!("materializer service: {}", status.message()))
        }
        _ => ServeError::Internal(format!("materializer service: {}", status.message())),
    }
}

impl MaterializeBackend for RemoteMaterializer {
    fn resolve(
        &self,
        snapshot: &Snapshot,
        call: &MaterializeCall,
    ) -> Result<Vec<String>, ServeError> {
        // The same rules the service applies, on this server's registry: the views to
        // authorize here. The service resolves again on its own fresh registry.
        let planned = crate::plan(
            &snapshot.catalog,
            &self.project,
            &call.views,
            call.range,
            chrono::Utc::now(),
        )?;
        for skipped in &planned.skipped {
            tracing::warn!(message = "feature view not materialized", view = %skipped.view, reason = %skipped);
        }
        Ok(planned.windows.into_iter().map(|w| w.view).collect())
    }

    fn start(
        &self,
        _snapshot: Arc<Snapshot>,
        call: MaterializeCall,
        views: Vec<String>,
        force: bool,
    ) -> BoxFuture<Result<Job, ServeError>> {
        // The service claims the views itself when the job is submitted (its
        // ALREADY_EXISTS becomes a 409 of a sync request).
        let job = self.job(call, views, force);
        Box::pin(async move { Ok(job) })
    }
}

impl RemoteMaterializer {
    fn job(&self, call: MaterializeCall, views: Vec<String>, force: bool) -> Job {
        let mut client = self.client.clone();
        Box::pin(async move {
            if views.is_empty() {
                return Ok(());
            }
            let job = match call.range {
                Range::Incremental { end } => {
                    client
                        .materialize_incremental(pb::MaterializeIncrementalRequest {
                            end: Some(timestamp(end)),
                            feature_views: views.clone(),
                            force,
                            wait: true,
                        })
                        .await
                }
                Range::Between { start, end } => {
                    client
                        .materialize(pb::MaterializeRequest {
                            start: Some(timestamp(start)),
                            end: Some(timestamp(end)),
                            feature_views: views.clone(),
                            disable_event_timestamp: false,
                            force,
                            wait: true,
                        })
                        .await
                }
                Range::Everything => {
                    client
                        .materialize(pb::MaterializeRequest {
                            feature_views: views.clone(),
                            disable_event_timestamp: true,
                            force,
                            wait: true,
                            ..Default::default()
                        })
                        .await
                }
            }
            .map_err(|s| to_serve(s, &views))?
            .into_inner();
            match job.state() {
                pb::JobState::Succeeded => Ok(()),
                state => {
                    let failures: Vec<String> = job
                        .views
                        .iter()
                        .filter(|v| !v.error.is_empty())
                        .map(|v| format!("{}: {}", v.feature_view, v.error))
                        .collect();
                    Err(ServeError::Internal(format!(
                        "materializer job {} ended {}: {} {}",
                        job.id,
                        state.as_str_name(),
                        job.error,
                        failures.join("; ")
                    )))
                }
            }
        })
    }
}
