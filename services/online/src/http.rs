//! The feature server (Feast's `feast serve`) on axum: Feast's HTTP JSON routes and, on the
//! same port, its gRPC services (`feast.serving.ServingService`, `GrpcFeatureServer`,
//! `grpc.health.v1`, reflection). A gRPC client and a JSON client connect to one address: the
//! server speaks HTTP/1.1 and HTTP/2 (with prior knowledge, as gRPC clients connect).
//!
//! | Route | Body → response |
//! |---|---|
//! | `POST /get-online-features` | Feast's `GetOnlineFeaturesRequest` → column-major JSON |
//! | `POST /write-to-online-store` | `WriteToFeatureStoreRequest` → `null` |
//! | `POST /push` | `PushFeaturesRequest` → empty 200 |
//! | `POST /materialize`, `POST /materialize-incremental` | Feast's `MaterializeRequest` / `MaterializeIncrementalRequest` → `null`, or 202 with `?async=true` (see [`crate::materialize`]) |
//! | `GET /health`, `GET /readyz`, `GET /ready` | readiness: 200 once the registry is loaded, else 503 |
//! | `GET /healthz` | liveness: 200 while the process serves |
//! | `GET /metrics` | Prometheus text (with `--metrics`) |
//! | `GET /docs`, `GET /openapi.json` | the OpenAPI document of these routes ([`OPENAPI`]) |
//!
//! Errors are Feast's error envelope with the status of the Feast exception (PROTOCOLS.md
//! §0); a malformed body is a 422 with FastAPI's `{"detail": ...}` shape, a body over the
//! configured limit a 413.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use feast_registry::{RegistryCache, Snapshot};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::authz::Authz;
use crate::grpc::GrpcServices;
use crate::materialize::{
    MaterializeBackend, MaterializeCall, MaterializeIncrementalRequest, MaterializeRequest, Running,
};
use crate::metrics::Metrics;
use crate::serving::{
    GetOnlineFeaturesRequest, OnlineRequest, OnlineResponse, ProjectIndex, ReadOptions, ServeError,
    get_online_features,
};
use crate::store::OnlineStore;
use crate::write::{Frame, PushMode, PushRequest, WriteOutcome, WriteToOnlineStoreRequest};
use feast_auth::User;

/// The OpenAPI 3.1 document of the HTTP routes, served at `/docs` and `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default request body limit: 16 MiB, enough for 10k-row writes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 20;

/// What the server serves: one project's registry (cached) and one online store.
#[derive(Clone)]
pub struct FeatureServer {
    pub registry: RegistryCache,
    pub store: Arc<dyn OnlineStore>,
    pub project: String,
    /// Entity-key version and TTL behaviour of reads.
    pub read_options: ReadOptions,
    /// Largest request body accepted (HTTP and gRPC), in bytes.
    pub max_request_bytes: usize,
    /// Prometheus metrics (`--metrics`): recorded and served at `/metrics` when set.
    pub metrics: Option<Arc<Metrics>>,
    /// The name index of the current registry snapshot (start with `Default::default()`).
    pub index: IndexCache,
    /// Authentication and authorization; `None` under `auth: {type: no_auth}`.
    pub auth: Option<ServerAuth>,
    /// Runs `/materialize` and `/materialize-incremental`; `None`: those routes answer 501.
    pub materializer: Option<Arc<dyn MaterializeBackend>>,
    /// Where offline pushes go; `None`: `to: offline | online_and_offline` answers 501.
    pub offline: Option<Arc<dyn crate::write::OfflineWriter>>,
    /// The views this server is materializing (start with `Default::default()`).
    pub running: Running,
}

/// How a server with `auth` on checks its callers.
#[derive(Clone)]
pub struct ServerAuth {
    /// Verifies the bearer token of every request (the [`feast_auth::AuthLayer`]).
    pub authenticator: feast_auth::Authenticator,
    /// Checks the caller against the project's permissions.
    pub authz: Authz,
}

/// The [`ProjectIndex`] of the latest registry snapshot, rebuilt when the snapshot changes
/// (once per registry refresh that loaded a new registry, not per request).
#[derive(Clone, Default)]
pub struct IndexCache(Arc<arc_swap::ArcSwapOption<(Arc<Snapshot>, ProjectIndex)>>);

impl IndexCache {
    fn get(&self, snapshot: &Arc<Snapshot>, project: &str) -> Arc<(Arc<Snapshot>, ProjectIndex)> {
        if let Some(cached) = self.0.load_full()
            && Arc::ptr_eq(&cached.0, snapshot)
        {
            return cached;
        }
        let built = Arc::new((
            snapshot.clone(),
            ProjectIndex::build(&snapshot.catalog, project),
        ));
        self.0.store(Some(built.clone()));
        built
    }
}

impl FeatureServer {
    fn snapshot(&self) -> Result<Arc<Snapshot>, ServeError> {
        self.registry
            .snapshot()
            .ok_or_else(|| ServeError::Unavailable("the registry has not been loaded yet".into()))
    }

    /// `get_online_features` against the current registry snapshot, as `user`; `endpoint`
    /// names the route or gRPC method in the metrics.
    pub async fn get_online_features(
        &self,
        endpoint: &str,
        user: Option<&User>,
        request: &OnlineRequest,
    ) -> Result<OnlineResponse, ServeError> {
        let started = Instant::now();
        let result = async {
            let snapshot = self.snapshot()?;
            let indexed = self.index.get(&snapshot, &self.project);
            if let Some(auth) = &self.auth {
                auth.authz
                    .read(user, &snapshot.catalog, &indexed.1, request)?;
            }
            get_online_features(
                &snapshot.catalog,
                &indexed.1,
                &self.project,
                &self.store,
                self.read_options,
                request,
            )
            .await
        }
        .await;
        if let Some(m) = &self.metrics {
            match &result {
                Ok(r) => {
                    let stats = &r.stats;
                    m.online_read(stats.entity_rows, stats.store_read);
                    for (view, present, missing) in &stats.per_view {
                        m.statuses(view, *present, *missing);
                    }
                    m.request(
                        endpoint,
                        true,
                        started.elapsed(),
                        stats.features,
                        stats.per_view.len(),
                    );
                }
                Err(_) => m.request(endpoint, false, started.elapsed(), 0, 0),
            }
        }
        result
    }

    /// Records a finished write/push request in the metrics.
    fn record<T>(&self, endpoint: &str, started: Instant, result: &Result<T, ServeError>) {
        if let Some(m) = &self.metrics {
            m.request(endpoint, result.is_ok(), started.elapsed(), 0, 0);
        }
    }

    /// `write_to_online_store` of one view.
    pub async fn write_to_online_store(
        &self,
        endpoint: &str,
        user: Option<&User>,
        view: &str,
        frame: &Frame,
    ) -> Result<WriteOutcome, ServeError> {
        let started = Instant::now();
        let result = async {
            let snapshot = self.snapshot()?;
            if let Some(auth) = &self.auth {
                let indexed = self.index.get(&snapshot, &self.project);
                auth.authz
                    .write(user, &snapshot.catalog, &indexed.1, &self.project, view)?;
            }
            crate::write::write_to_online_store(
                &snapshot.catalog,
                &self.project,
                &self.store,
                self.read_options.write_layout(),
                view,
                frame,
            )
            .await
        }
        .await;
        self.record(endpoint, started, &result);
        result
    }

    /// `push` to every view fed by a push source.
    pub async fn push(
        &self,
        endpoint: &str,
        user: Option<&User>,
        push_source: &str,
        frame: &Frame,
        to: PushMode,
    ) -> Result<WriteOutcome, ServeError> {
        let started = Instant::now();
        let result = async {
            let snapshot = self.snapshot()?;
            if let Some(auth) = &self.auth {
                let indexed = self.index.get(&snapshot, &self.project);
                auth.authz.push(
                    user,
                    &snapshot.catalog,
                    &indexed.1,
                    &self.project,
                    push_source,
                    to,
                )?;
            }
            crate::write::push(
                &snapshot.catalog,
                &self.project,
                &self.store,
                self.offline.as_deref(),
                self.read_options.write_layout(),
                push_source,
                frame,
                to,
            )
            .await
        }
        .await;
        if let Some(m) = &self.metrics {
            m.push(push_source, to.as_str());
        }
        self.record(endpoint, started, &result);
        result
    }
}

/// The HTTP routes and the gRPC services, as one router.
pub fn router(server: FeatureServer) -> Router {
    let server = Arc::new(server);
    let limit = server.max_request_bytes;
    let auth_layer = server
        .auth
        .as_ref()
        .map(|a| feast_auth::AuthLayer::new(a.authenticator.clone()));
    let grpc = GrpcServices::new(server.clone());
    let serving =
        feast_proto::serving::serving_service_server::ServingServiceServer::new(grpc.clone())
            .max_decoding_message_size(limit);
    let feature_server =
        feast_proto::grpc_server::grpc_feature_server_server::GrpcFeatureServerServer::new(grpc)
            .max_decoding_message_size(limit);
    let (reporter, health) = tonic_health::server::health_reporter();
    // Readiness ("" = the registry is loaded) and liveness, as on every feast-rs server.
    tokio::spawn(feast_registry::report_health(
        reporter,
        Some(server.registry.clone()),
    ));
    let mut routes = tonic::service::Routes::new(health)
        .add_service(serving)
        .add_service(feature_server);
    match reflection() {
        Ok((v1, v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        Err(e) => tracing::warn!(message = "gRPC reflection unavailable", error = %e),
    }
    let http = Router::new()
        .route("/get-online-features", post(online_features))
        .route("/write-to-online-store", post(write_to_online_store))
        .route("/push", post(push))
        .route("/materialize", post(materialize))
        .route("/materialize-incremental", post(materialize_incremental))
        .route("/health", get(health_route))
        .route("/readyz", get(health_route))
        .route("/ready", get(health_route))
        .route("/healthz", get(live_route))
        .route("/metrics", get(metrics_route))
        .route("/docs", get(docs_route))
        .route("/openapi.json", get(docs_route))
        .with_state(server);
    // The gRPC routes bring their own fallback (UNIMPLEMENTED for unknown methods).
    let all = http.merge(routes.prepare().into_axum_router());
    // Every route goes through authentication, except the layer's public paths (`/health`,
    // `/metrics`, grpc.health.v1).
    let all = match auth_layer {
        Some(layer) => all.layer(layer),
        None => all,
    };
    // Outermost (axum's last layer): each request's span covers authentication too.
    all.layer(feast_telemetry::TraceLayer::new())
}

type Reflection<S> = tonic_reflection::server::v1::ServerReflectionServer<S>;
type ReflectionAlpha<S> = tonic_reflection::server::v1alpha::ServerReflectionServer<S>;

#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        Reflection<impl tonic_reflection::server::v1::ServerReflection>,
        ReflectionAlpha<impl tonic_reflection::server::v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(feast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(feast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Serves `server` on `listener` (TCP_NODELAY on accepted connections) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: FeatureServer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(message = "could not set TCP_NODELAY", error = %e);
        }
    });
    axum::serve(listener, router(server))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Builds the TLS configuration from PEM files: the certificate chain and its private key
/// (PKCS#8, PKCS#1 or SEC1). ALPN offers `h2` (gRPC) and `http/1.1`.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> std::io::Result<tokio_rustls::rustls::ServerConfig> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("reading the --cert PEM", &e))?;
    if certs.is_empty() {
        return Err(invalid("reading the --cert PEM", &"no CERTIFICATE block"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid("reading the --key PEM", &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("the --cert/--key pair", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `server` over TLS on `listener` until `shutdown`, then waits up to 30 s for open
/// connections to finish their requests. HTTP/1.1 and HTTP/2 (gRPC) as [`serve`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    server: FeatureServer,
    tls: tokio_rustls::rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(server);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(message = "accept failed", error = %e);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(message = "TLS handshake failed", %peer, error = %e);
                    return;
                }
                Err(_) => {
                    tracing::debug!(message = "TLS handshake timed out", %peer);
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(message = "connection ended with an error", %peer, error = %e);
            }
        });
    }
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(message = "connections still open 30 s after shutdown; closing them");
    }
    Ok(())
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Feast's HTTP error body: the error envelope, JSON-encoded as a string.
fn error_response(e: &ServeError) -> Response {
    if let ServeError::Busy(views) = e {
        // Feast's 409 body is plain JSON, not the error envelope.
        let body = json!({"error": crate::serving::busy_message(views), "feature_views": views});
        return json_response(409, body.to_string().into_bytes());
    }
    if e.http_status() >= 500 {
        tracing::warn!(message = "request failed", error = %e.to_feast());
    }
    let detail = e.to_feast().to_error_detail();
    let body = serde_json::to_vec(&detail).unwrap_or_default();
    json_response(e.http_status(), body)
}

/// FastAPI's validation-error shape.
fn invalid_body(what: &str, e: impl std::fmt::Display) -> Response {
    let body = json!({"detail": format!("invalid {what} request: {e}")});
    json_response(422, body.to_string().into_bytes())
}

/// Reads a JSON body of at most `limit` bytes: 413 above it, 422 when it does not parse.
async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
    what: &str,
) -> Result<T, Response> {
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                let body = json!({"detail": format!(
                    "the {what} request body is larger than the server's limit of {limit} bytes \
                     (--max-request-bytes); split it into smaller requests"
                )});
                return Err(json_response(413, body.to_string().into_bytes()));
            }
            return Err(invalid_body(what, e));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| invalid_body(what, e))
}

/// The authenticated caller, when authentication is on.
type Caller = Option<axum::Extension<User>>;

async fn online_features(
    State(server): State<Arc<FeatureServer>>,
    caller: Caller,
    body: Body,
) -> Response {
    let user = caller.as_ref().map(|c| &c.0);
    let request: GetOnlineFeaturesRequest =
        match read_json(body, server.max_request_bytes, "get-online-features").await {
            Ok(r) => r,
            Err(response) => return response,
        };
    let result = match OnlineRequest::try_from(request) {
        Ok(request) => {
            server
                .get_online_features("/get-online-features", user, &request)
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => {
            // Sized up front (a value, its status and its timestamp take ~50 bytes), so a
            // large response is not copied through a series of doublings.
            let values: usize = v.columns.iter().map(|c| c.values.len()).sum();
            let mut body = Vec::with_capacity(256 + 64 * values);
            match v.write_json(&mut body) {
                Ok(()) => json_response(200, body),
                Err(e) => error_response(&ServeError::Internal(e.to_string())),
            }
        }
        Err(e) => error_response(&e),
    }
}

async fn write_to_online_store(
    State(server): State<Arc<FeatureServer>>,
    caller: Caller,
    body: Body,
) -> Response {
    let user = caller.as_ref().map(|c| &c.0);
    let request: WriteToOnlineStoreRequest =
        match read_json(body, server.max_request_bytes, "write-to-online-store").await {
            Ok(r) => r,
            Err(response) => return response,
        };
    let result = match Frame::from_columns(request.df) {
        Ok(frame) => {
            server
                .write_to_online_store(
                    "/write-to-online-store",
                    user,
                    &request.feature_view_name,
                    &frame,
                )
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        // Feast's route returns `None`: the body is JSON `null`.
        Ok(_) => json_response(200, b"null".to_vec()),
        Err(e) => error_response(&e),
    }
}

async fn push(State(server): State<Arc<FeatureServer>>, caller: Caller, body: Body) -> Response {
    let user = caller.as_ref().map(|c| &c.0);
    let request: PushRequest = match read_json(body, server.max_request_bytes, "push").await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let result = async {
        let to = PushMode::parse(&request.to)?;
        let frame = Frame::from_columns(request.df)?;
        server
            .push("/push", user, &request.push_source_name, &frame, to)
            .await
    }
    .await;
    match result {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

/// `?async=true&force=true` (FastAPI's bool spellings: true/1/yes/on).
#[derive(Debug, Default)]
struct MaterializeQuery {
    run_async: bool,
    force: bool,
}

impl MaterializeQuery {
    fn parse(uri: &axum::http::Uri) -> Self {
        let mut q = Self::default();
        for pair in uri.query().unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let on = matches!(
                value.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "on"
            );
            match key {
                "async" => q.run_async = on,
                "force" => q.force = on,
                _ => {}
            }
        }
        q
    }
}

async fn materialize(
    State(server): State<Arc<FeatureServer>>,
    caller: Caller,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    materialize_route(
        server,
        caller,
        uri,
        body,
        "materialize",
        MaterializeRequest::call,
    )
    .await
}

async fn materialize_incremental(
    State(server): State<Arc<FeatureServer>>,
    caller: Caller,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    materialize_route(
        server,
        caller,
        uri,
        body,
        "materialize-incremental",
        MaterializeIncrementalRequest::call,
    )
    .await
}

/// Both materialization routes: the body as `R`, checked into a call, then run.
async fn materialize_route<R: DeserializeOwned>(
    server: Arc<FeatureServer>,
    caller: Caller,
    uri: axum::http::Uri,
    body: Body,
    what: &str,
    to_call: fn(R) -> Result<MaterializeCall, ServeError>,
) -> Response {
    let request: R = match read_json(body, server.max_request_bytes, what).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match to_call(request) {
        Ok(call)
            if !server.read_options.versioning && call.views.iter().any(|v| v.contains('@')) =>
        {
            error_response(&ServeError::Unprocessable(
                crate::materialize::VERSIONING_REQUIRED.into(),
            ))
        }
        Ok(call) => {
            server
                .start_materialization(caller, call, MaterializeQuery::parse(&uri))
                .await
        }
        Err(e) => error_response(&e),
    }
}

impl FeatureServer {
    /// Resolves, authorizes and claims the views of `call`, then runs it (sync: 200
    /// `null` when done; async: 202 at once).
    async fn start_materialization(
        self: &Arc<Self>,
        caller: Caller,
        call: MaterializeCall,
        query: MaterializeQuery,
    ) -> Response {
        let Some(backend) = self.materializer.clone() else {
            return error_response(&ServeError::Unimplemented(
                "this feature server has no materializer configured".into(),
            ));
        };
        // Windows start where the registry says the last run ended: read it fresh (a job is
        // not the hot path), falling back to the cached copy if the registry is unreachable.
        if let Err(e) = self.registry.refresh().await {
            tracing::warn!(message = "registry refresh before materializing failed", error = %e);
        }
        let snapshot = match self.snapshot() {
            Ok(s) => s,
            Err(e) => return error_response(&e),
        };
        let views = match backend.resolve(&snapshot, &call) {
            Ok(v) => v,
            Err(e) => return error_response(&e),
        };
        if let Some(auth) = &self.auth {
            let user = caller.as_ref().map(|c| &c.0);
            let indexed = self.index.get(&snapshot, &self.project);
            for view in &views {
                if let Err(e) =
                    auth.authz
                        .write(user, &snapshot.catalog, &indexed.1, &self.project, view)
                {
                    return error_response(&e);
                }
            }
        }
        let guard = match self.running.claim(&views, query.force) {
            Ok(g) => g,
            Err(busy) => return error_response(&ServeError::Busy(busy)),
        };
        tracing::info!(message = "materialization started", views = ?views, run_async = query.run_async);
        let job = match backend
            .start(snapshot, call, views.clone(), query.force)
            .await
        {
            Ok(job) => job,
            Err(e) => return error_response(&e),
        };
        if query.run_async {
            // The job stays part of the request's trace after the response.
            tokio::spawn(
                async move {
                    let _guard = guard;
                    if let Err(e) = job.await {
                        tracing::error!(message = "async materialization failed", error = %e.to_feast().message);
                    }
                }
                .instrument(tracing::Span::current()),
            );
            let body = json!({"status": "accepted", "feature_views": views});
            return json_response(202, body.to_string().into_bytes());
        }
        let result = job.await;
        drop(guard);
        match result {
            Ok(()) => json_response(200, b"null".to_vec()),
            Err(e) => error_response(&e),
        }
    }
}

async fn health_route(State(server): State<Arc<FeatureServer>>) -> Response {
    if server.registry.snapshot().is_some() {
        json_response(200, b"{\"status\":\"ok\"}".to_vec())
    } else {
        json_response(
            503,
            b"{\"status\":\"unavailable\",\"detail\":\"registry not loaded\"}".to_vec(),
        )
    }
}

/// Liveness: the process answers (readiness, `/readyz`, also needs the registry).
async fn live_route() -> Response {
    json_response(200, b"{\"status\":\"alive\"}".to_vec())
}

async fn metrics_route(State(server): State<Arc<FeatureServer>>) -> Response {
    let Some(metrics) = &server.metrics else {
        let body = json!({"detail": "metrics are off: start the server with --metrics"});
        return json_response(404, body.to_string().into_bytes());
    };
    let snapshot = server.registry.snapshot();
    let text = metrics.render(snapshot.as_ref().map(|s| &s.catalog), &server.project);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn docs_route() -> Response {
    json_response(200, OPENAPI.as_bytes().to_vec())
}
