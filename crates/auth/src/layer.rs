//! Authentication for every request of a server: an [`Authenticator`] built from `auth:` and
//! a tower [`AuthLayer`] usable on axum routers and tonic servers alike (both are
//! `http::Request` services). The layer lets a short allow-list of paths through (health,
//! readiness, metrics), verifies the bearer token of everything else, puts the [`User`] into
//! the request extensions, and answers failures itself: HTTP `401 {"detail": ...}`, or, for
//! gRPC (content-type `application/grpc*`), a trailers-only `UNAUTHENTICATED` response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use feast_core::config::AuthConfig;
use http::{HeaderMap, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::AuthError;
use crate::extract::bearer_token;
use crate::kubernetes::{ClusterAccess, KubernetesValidator};
use crate::oidc::{OidcSettings, OidcValidator};
use crate::user::User;

/// Paths served without a token: health, readiness and metrics, over HTTP and gRPC.
pub const DEFAULT_PUBLIC_PATHS: &[&str] = &[
    "/health",
    "/healthz",
    "/ready",
    "/readyz",
    "/metrics",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// How a server identifies callers (`auth.type`).
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// `no_auth`: no identity; every request passes and no [`User`] is attached.
    NoAuth,
    /// `oidc`: bearer tokens verified against the identity provider's JWKS.
    Oidc(Arc<OidcValidator>),
    /// `kubernetes`: bearer tokens reviewed by the cluster, identities from its RBAC.
    Kubernetes(Arc<KubernetesValidator>),
}

impl Authenticator {
    /// The authenticator `auth:` asks for. `kubernetes` reaches the cluster's API through the
    /// in-cluster configuration (or `KUBECONFIG`) on the first request.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        match config {
            AuthConfig::NoAuth => Ok(Self::NoAuth),
            AuthConfig::OidcServer(c) => Ok(Self::Oidc(Arc::new(OidcValidator::new(
                OidcSettings::from_server_config(c),
            )?))),
            AuthConfig::OidcClient(c) => Ok(Self::Oidc(Arc::new(OidcValidator::new(
                OidcSettings::from_client_config(c)?,
            )?))),
            AuthConfig::Kubernetes(_) => Ok(Self::Kubernetes(Arc::new(KubernetesValidator::new(
                ClusterAccess::Infer,
            )))),
        }
    }

    /// Whether requests are authenticated at all.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::NoAuth)
    }

    /// The caller of a request, from its `authorization` header. `Ok(None)` under `no_auth`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<User>, AuthError> {
        match self {
            Self::NoAuth => Ok(None),
            Self::Oidc(v) => {
                let token = bearer_token(headers)?;
                v.validate(token).await.map(Some)
            }
            Self::Kubernetes(v) => {
                let token = bearer_token(headers)?;
                v.validate(token).await.map(Some)
            }
        }
    }
}

/// Log, at start-up, how `service` authenticates; `no_auth` is logged loudly.
pub fn log_auth_mode(service: &str, authenticator: &Authenticator) {
    match authenticator {
        Authenticator::NoAuth => tracing::warn!(
            message = "AUTHENTICATION IS DISABLED (auth.type: no_auth): every caller may read and \
                       write every object of every project on this server. Configure `auth:` \
                       in feature_store.yaml for any shared deployment.",
            service
        ),
        Authenticator::Oidc(v) => tracing::info!(
            message = "authenticating requests with OIDC bearer tokens",
            service,
            discovery_url = %v.settings().auth_discovery_url,
            audience = v.settings().audience.as_deref().unwrap_or("(not checked)"),
            issuer = v.settings().issuer.as_deref().unwrap_or("(not checked)"),
        ),
        Authenticator::Kubernetes(_) => tracing::info!(
            message = "authenticating requests with Kubernetes TokenReview and RBAC",
            service
        ),
    }
}

/// Response bodies the layer can write its rejections into.
pub trait RejectionBody: Sized {
    fn from_text(text: String) -> Self;
}

impl RejectionBody for axum::body::Body {
    fn from_text(text: String) -> Self {
        axum::body::Body::from(text)
    }
}

impl RejectionBody for tonic::body::Body {
    fn from_text(text: String) -> Self {
        if text.is_empty() {
            tonic::body::Body::empty()
        } else {
            tonic::body::Body::new(http_body_util::Full::new(Bytes::from(text)))
        }
    }
}

impl RejectionBody for http_body_util::Full<Bytes> {
    fn from_text(text: String) -> Self {
        http_body_util::Full::new(Bytes::from(text))
    }
}

impl RejectionBody for String {
    fn from_text(text: String) -> Self {
        text
    }
}

/// Whether a request is gRPC (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// gRPC's `grpc-message` percent-encoding (everything outside printable ASCII, and `%`).
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The response a rejected request gets.
pub fn rejection<B: RejectionBody>(error: &AuthError, grpc: bool) -> Response<B> {
    if grpc {
        let mut r = Response::new(B::from_text(String::new()));
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(error.grpc_code() as i32));
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&error.to_string())) {
            h.insert("grpc-message", v);
        }
        return r;
    }
    let mut r = Response::new(B::from_text(error.http_body()));
    *r.status_mut() = error.http_status();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if error.http_status() == http::StatusCode::UNAUTHORIZED {
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Tower layer authenticating every request except [`AuthLayer::public_paths`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
    public_paths: Arc<[String]>,
}

impl AuthLayer {
    /// A layer with [`DEFAULT_PUBLIC_PATHS`].
    pub fn new(authenticator: Authenticator) -> Self {
        Self {
            authenticator,
            public_paths: DEFAULT_PUBLIC_PATHS.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Replace the unauthenticated paths (exact matches).
    pub fn with_public_paths<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        paths: I,
    ) -> Self {
        self.public_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    pub fn public_paths(&self) -> &[String] {
        &self.public_paths
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            public_paths: self.public_paths.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a router or gRPC server.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
    public_paths: Arc<[String]>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: RejectionBody + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is unready: keep the service that was polled ready for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.authenticator.is_enabled()
            || self.public_paths.iter().any(|p| p == req.uri().path())
        {
            return Box::pin(inner.call(req));
        }
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            match authenticator.authenticate(req.headers()).await {
                Ok(user) => {
                    if let Some(user) = user {
                        req.extensions_mut().insert(user);
                    }
                    inner.call(req).await
                }
                Err(error) => {
                    tracing::debug!(message = "request rejected", path = req.uri().path(), %error);
                    Ok(rejection(&error, is_grpc(req.headers())))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticator_from_config() {
        use feast_core::config::{KubernetesAuthConfig, OidcServerAuthConfig};
        assert!(
            !Authenticator::from_config(&AuthConfig::NoAuth)
                .unwrap()
                .is_enabled()
        );
        let oidc = AuthConfig::OidcServer(OidcServerAuthConfig {
            auth_discovery_url: "https://idp.example.com/.well-known/openid-configuration".into(),
            client_id: Some("feast".into()),
            ui_client_id: None,
            verify_ssl: true,
            ca_cert_path: String::new(),
            audience: Some("feast".into()),
            issuer: None,
            jwks_cache_lifespan_seconds: 60,
            jwks_request_timeout_seconds: 2.5,
        });
        let Authenticator::Oidc(v) = Authenticator::from_config(&oidc).unwrap() else {
            panic!("oidc config gives an OIDC authenticator");
        };
        assert_eq!(
            v.settings().jwks_cache_lifespan,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            v.settings().jwks_request_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(v.settings().audience.as_deref(), Some("feast"));
        let k8s = AuthConfig::Kubernetes(KubernetesAuthConfig::default());
        assert!(matches!(
            Authenticator::from_config(&k8s),
            Ok(Authenticator::Kubernetes(_))
        ));
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_message("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn grpc_rejection_is_trailers_only_unauthenticated() {
        let r: Response<String> = rejection(&AuthError::MissingToken, true);
        assert_eq!(r.status(), http::StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(r.headers()["grpc-message"], "Missing authentication token");
        assert!(r.body().is_empty());
    }

    #[test]
    fn http_rejection_is_401_detail() {
        let r: Response<String> = rejection(&AuthError::Expired, false);
        assert_eq!(r.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(
            body["detail"],
            "Invalid or expired access token: the token has expired"
        );
    }
}
