//! feast-rs registry service: Feast's `feast.registry.RegistryServer` gRPC API (plus
//! `grpc.health.v1` and server reflection) over a registry store, so the Feast SDK with
//! `registry_type: remote` works against it unchanged.

pub mod authz;
pub mod cache;
pub mod client;
pub mod datasets;
pub mod lineage;
pub mod paginate;
pub mod service;
pub mod sql;
pub mod store;

use std::net::SocketAddr;

use feast_auth::Authenticator;
use feast_proto::registry::registry_server_server::RegistryServerServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use cache::{
    CacheSource, CacheStats, LIVENESS_SERVICE, RegistryCache, Snapshot, report_health,
};
pub use client::{AuthChannel, ClientError, RemoteOptions, RemoteRegistry};
pub use datasets::{DatasetBackend, DatasetPreview};
pub use service::{RegistryService, ServiceOptions};
pub use sql::{Leases, SqlStore, SqlStoreOptions};
pub use store::{Committed, FileStore, RegistryStore, StoreError, StoreVersion};

/// Default port of Feast's registry server.
pub const DEFAULT_PORT: u16 = 6570;
/// Requests up to this size are accepted (`Proto`-sized applies of large registries).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// TLS material for the server (`--cert`/`--key`), PEM encoded.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    service: RegistryService,
    authenticator: Authenticator,
    tls: Option<TlsPem>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(listener, service, authenticator, tls, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0). With an enabled
/// `authenticator`, every call but the health check needs a valid bearer token, and every
/// RPC checks the caller's Feast permissions (Feast's defaults unless the service was given
/// its own [`RegistryService::with_authorizer`], e.g. a strict one).
pub async fn serve_on(
    listener: TcpListener,
    mut service: RegistryService,
    authenticator: Authenticator,
    tls: Option<TlsPem>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if authenticator.is_enabled() && service.authorizer().is_none() {
        service = service.with_authorizer(std::sync::Arc::new(feast_auth::Authorizer::new()));
    }
    let auth = feast_auth::AuthLayer::new(authenticator);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RegistryServerServer<RegistryService>>()
        .await;
    // Feast's server reports the overall service ("") as SERVING: the registry is open.
    report_health(health_reporter, None).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(feast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(feast_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(tls.cert, tls.key)))?;
    }
    let local = listener.local_addr().ok();
    tracing::info!(message = "registry server listening", addr = ?local);
    builder
        // Outermost, so that authentication is part of each request's span.
        .layer(feast_telemetry::TraceLayer::new())
        .layer(auth)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            RegistryServerServer::from_arc(service.shared())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        // Small request/response RPCs: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(std::time::Duration::from_secs(60))),
            shutdown,
        )
        .await?;
    Ok(())
}
