//! Running the offline Flight service: one tonic server with Arrow Flight, gRPC health and
//! (optionally) TLS, authentication in front of every call but the health check.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::flight::{MAX_MESSAGE_BYTES, OfflineFlightService};
use crate::store::OfflineStore;

/// PEM certificate chain and private key of a TLS server.
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight calls
/// finish. `authenticator` (`NoAuth` for none) checks the bearer token of every call except
/// `grpc.health.v1`.
pub async fn serve_on<S: OfflineStore + 'static>(
    listener: TcpListener,
    service: OfflineFlightService<S>,
    authenticator: feast_auth::Authenticator,
    tls: Option<TlsPem>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FlightServiceServer<OfflineFlightService<S>>>()
        .await;
    // Ready ("") once the registry is loaded; "liveness" always.
    feast_registry::report_health(health_reporter, Some(service.registry().clone())).await;

    // Uploads of the legacy read path that nobody fetches are dropped in the background.
    let sweeper = service.sweeper();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            if sweeper().is_none() {
                break;
            }
        }
    });

    let auth = feast_auth::AuthLayer::new(authenticator).with_public_paths([
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ]);
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(tls.cert, tls.key)))?;
    }
    let flight = FlightServiceServer::from_arc(Arc::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    builder
        .layer(feast_telemetry::TraceLayer::new())
        .layer(auth)
        .add_service(health)
        .add_service(flight)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown,
        )
        .await
}
