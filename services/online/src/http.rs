//! The HTTP feature server (Feast's `feast serve`): `POST /get-online-features` and
//! `GET /health`, on axum.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use feast_registry::RegistryCache;
use serde_json::json;

use crate::serving::{GetOnlineFeaturesRequest, ServeError, get_online_features};
use crate::store::OnlineStore;

/// What the server serves: one project's registry (cached) and one online store.
#[derive(Clone)]
pub struct FeatureServer {
    pub registry: RegistryCache,
    pub store: Arc<dyn OnlineStore>,
    pub project: String,
    /// The repository's `entity_key_serialization_version`.
    pub entity_key_serialization_version: u32,
}

/// The routes.
pub fn router(server: FeatureServer) -> Router {
    Router::new()
        .route("/get-online-features", post(online_features))
        .route("/health", get(health))
        .with_state(Arc::new(server))
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
    let detail = e.to_feast().to_error_detail();
    let body = serde_json::to_vec(&detail).unwrap_or_default();
    json_response(e.http_status(), body)
}

async fn online_features(State(server): State<Arc<FeatureServer>>, body: Bytes) -> Response {
    let request: GetOnlineFeaturesRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            // FastAPI-style validation error.
            let body = json!({"detail": format!("invalid get-online-features request: {e}")});
            return json_response(422, body.to_string().into_bytes());
        }
    };
    let Some(snapshot) = server.registry.snapshot() else {
        return error_response(&ServeError::Unavailable(
            "the registry has not been loaded yet".into(),
        ));
    };
    match get_online_features(
        &snapshot.catalog,
        &server.project,
        &server.store,
        server.entity_key_serialization_version,
        &request,
    )
    .await
    {
        Ok(v) => match serde_json::to_vec(&v) {
            Ok(body) => json_response(200, body),
            Err(e) => error_response(&ServeError::Internal(e.to_string())),
        },
        Err(e) => {
            if e.http_status() >= 500 {
                tracing::warn!(message = "get-online-features failed", error = %e.to_feast());
            }
            error_response(&e)
        }
    }
}

async fn health(State(server): State<Arc<FeatureServer>>) -> Response {
    if server.registry.snapshot().is_some() {
        json_response(200, b"{\"status\":\"ok\"}".to_vec())
    } else {
        json_response(
            503,
            b"{\"status\":\"unavailable\",\"detail\":\"registry not loaded\"}".to_vec(),
        )
    }
}
