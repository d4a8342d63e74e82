//! The client side: the bearer token a feast-rs client sends, from `auth:` of its
//! feature_store.yaml (PROTOCOLS.md §5.2), and the client service that puts it on every gRPC call.
//!
//! Sources, in Feast's order:
//! - `oidc`: `token`; else the environment variable `token_env_var` names; else, with
//!   `client_secret`, a token from the provider's `token_endpoint` (client-credentials grant,
//!   or the password grant with `username`/`password`), reused until
//!   `token_refresh_margin_seconds` before it expires; else `FEAST_OIDC_TOKEN`; else the
//!   Kubernetes service-account token file.
//! - `kubernetes`: `user_token`; else the service-account token file; else `LOCAL_K8S_TOKEN`.
//! - `no_auth`: nothing is sent.
//!
//! A server configured with a plain `oidc` block (no client credentials) uses the same ambient
//! sources (`FEAST_OIDC_TOKEN`, the service-account token) when it calls another service.
//! Unlike Feast, there is no unsigned "intra-communication" token (feast#6785): a service
//! proves who it is with a token the other side verifies.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use feast_core::config::{AuthConfig, OidcClientAuthConfig, OidcClientCredentials};
use http::{HeaderValue, Request, Response};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;
use tower_service::Service;

use crate::error::AuthError;
use crate::fetch::FetchClient;

/// Where Kubernetes mounts a pod's service-account token.
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug)]
enum Source {
    Fixed(String),
    EnvVar(String),
    Grant(Box<Grant>),
    /// `FEAST_OIDC_TOKEN`, then the service-account token file.
    OidcAmbient,
    /// The service-account token file, then `LOCAL_K8S_TOKEN`.
    KubernetesAmbient,
}

#[derive(Debug)]
struct Grant {
    discovery_url: String,
    /// `(name, value)` pairs of the token request, secrets included.
    form: Vec<(&'static str, String)>,
    margin: Duration,
    fetch: FetchClient,
    token_endpoint: AsyncMutex<Option<String>>,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    /// When to fetch a new one (`None`: reuse until the server refuses it).
    renew_at: Option<Instant>,
}

/// The bearer token of a client; cheap to share in an `Arc`.
#[derive(Debug)]
pub struct TokenProvider {
    source: Source,
    cached: Mutex<Option<Cached>>,
    /// Overrides [`SERVICE_ACCOUNT_TOKEN_PATH`] (tests).
    service_account_path: std::path::PathBuf,
}

fn config_error(message: impl Into<String>) -> AuthError {
    AuthError::Config(message.into())
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl TokenProvider {
    /// The provider `auth:` asks for; `None` under `no_auth`.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Arc<Self>>, AuthError> {
        let source = match config {
            AuthConfig::NoAuth => return Ok(None),
            AuthConfig::OidcServer(_) => Source::OidcAmbient,
            AuthConfig::OidcClient(c) => Self::oidc_source(c)?,
            AuthConfig::Kubernetes(k) => match non_empty(&k.user_token) {
                Some(t) => Source::Fixed(t.to_owned()),
                None => Source::KubernetesAmbient,
            },
        };
        Ok(Some(Arc::new(Self::with_source(source))))
    }

    /// A provider that always sends `token`.
    pub fn fixed(token: impl Into<String>) -> Arc<Self> {
        Arc::new(Self::with_source(Source::Fixed(token.into())))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
            service_account_path: SERVICE_ACCOUNT_TOKEN_PATH.into(),
        }
    }

    /// Reads the service-account token from `path` instead of the pod's mount (tests):
    /// `None` under `no_auth`.
    pub fn from_config_with_service_account(
        config: &AuthConfig,
        path: impl Into<std::path::PathBuf>,
    ) -> Result<Option<Arc<Self>>, AuthError> {
        let path = path.into();
        Ok(Self::from_config(config)?.map(|p| {
            let mut p = Arc::into_inner(p).expect("a provider just built has one owner");
            p.service_account_path = path;
            Arc::new(p)
        }))
    }

    fn oidc_source(c: &OidcClientAuthConfig) -> Result<Source, AuthError> {
        Ok(match c.credentials() {
            OidcClientCredentials::Token => Source::Fixed(c.token.clone().unwrap_or_default()),
            OidcClientCredentials::TokenEnvVar => {
                Source::EnvVar(c.token_env_var.clone().unwrap_or_default())
            }
            kind @ (OidcClientCredentials::ClientCredentials | OidcClientCredentials::Password) => {
                let discovery_url = non_empty(&c.auth_discovery_url)
                    .ok_or_else(|| {
                        config_error("`auth.auth_discovery_url` is required with `client_secret`")
                    })?
                    .to_owned();
                let client_id = non_empty(&c.client_id)
                    .ok_or_else(|| {
                        config_error("`auth.client_id` is required with `client_secret`")
                    })?
                    .to_owned();
                let secret = c.client_secret.clone().unwrap_or_default();
                let mut form = vec![("client_id", client_id), ("client_secret", secret)];
                if kind == OidcClientCredentials::Password {
                    form.insert(0, ("grant_type", "password".to_owned()));
                    form.push(("username", c.username.clone().unwrap_or_default()));
                    form.push(("password", c.password.clone().unwrap_or_default()));
                } else {
                    form.insert(0, ("grant_type", "client_credentials".to_owned()));
                }
                let fetch = FetchClient::new(
                    c.verify_ssl,
                    &c.ca_cert_path,
                    Duration::from_secs_f64(c.jwks_request_timeout_seconds.max(0.001)),
                )?;
                Source::Grant(Box::new(Grant {
                    discovery_url,
                    form,
                    margin: Duration::from_secs_f64(c.token_refresh_margin_seconds.max(0.0)),
                    fetch,
                    token_endpoint: AsyncMutex::new(None),
                }))
            }
            OidcClientCredentials::Ambient => Source::OidcAmbient,
        })
    }

    /// The token to send now.
    pub async fn token(&self) -> Result<String, AuthError> {
        match &self.source {
            Source::Fixed(t) => Ok(t.clone()),
            Source::EnvVar(name) => std::env::var(name)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    config_error(format!(
                        "`auth.token_env_var` names {name}, which is not set or empty"
                    ))
                }),
            Source::Grant(grant) => {
                if let Some(c) = self.cached.lock().unwrap().as_ref()
                    && c.renew_at.is_none_or(|at| Instant::now() < at)
                {
                    return Ok(c.token.clone());
                }
                let fresh = grant.request().await?;
                let token = fresh.token.clone();
                *self.cached.lock().unwrap() = Some(fresh);
                Ok(token)
            }
            Source::OidcAmbient => {
                if let Some(t) = std::env::var("FEAST_OIDC_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                {
                    return Ok(t);
                }
                self.service_account_token().ok_or_else(|| {
                    config_error(
                        "no token to send: set `token`, `token_env_var` or `client_secret` under \
                         `auth:`, or FEAST_OIDC_TOKEN, or run with a service-account token",
                    )
                })
            }
            Source::KubernetesAmbient => self
                .service_account_token()
                .or_else(|| {
                    std::env::var("LOCAL_K8S_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                })
                .ok_or_else(|| {
                    config_error(
                        "no Kubernetes token to send: set `auth.user_token`, run in a pod with a \
                         service-account token, or set LOCAL_K8S_TOKEN",
                    )
                }),
        }
    }

    /// Forget a fetched token (the server refused it); the next call fetches a new one.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }

    /// `Bearer <token>` as a header value.
    pub async fn header_value(&self) -> Result<HeaderValue, AuthError> {
        let token = self.token().await?;
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| config_error("the token has characters a header cannot carry"))
    }

    fn service_account_token(&self) -> Option<String> {
        // Kubelet rotates the file; it is read again on every call that needs it.
        std::fs::read_to_string(&self.service_account_path)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }
}

impl Grant {
    async fn endpoint(&self) -> Result<String, AuthError> {
        let mut known = self.token_endpoint.lock().await;
        if let Some(e) = known.as_ref() {
            return Ok(e.clone());
        }
        let doc = self.fetch.get_json(&self.discovery_url).await?;
        let endpoint = doc
            .get("token_endpoint")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                AuthError::ProviderUnavailable(format!(
                    "discovery document {} has no `token_endpoint`",
                    self.discovery_url
                ))
            })?
            .to_owned();
        *known = Some(endpoint.clone());
        Ok(endpoint)
    }

    async fn request(&self) -> Result<Cached, AuthError> {
        let endpoint = self.endpoint().await?;
        let body: Vec<String> = self
            .form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        let answer = self
            .fetch
            .post_form_json(&endpoint, &body.join("&"))
            .await?;
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                let why = answer
                    .get("error_description")
                    .or_else(|| answer.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("no access_token in the answer");
                AuthError::ProviderUnavailable(format!("token request to {endpoint} failed: {why}"))
            })?
            .to_owned();
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_f64)
            .map(Duration::from_secs_f64)
            .or_else(|| seconds_to_exp(&token));
        let renew_at = lifetime.map(|l| Instant::now() + l.saturating_sub(self.margin));
        tracing::debug!(message = "fetched an access token", endpoint = %endpoint, lifetime_secs = ?lifetime.map(|l| l.as_secs()));
        Ok(Cached { token, renew_at })
    }
}

/// Seconds until the (unverified) `exp` claim of a JWT.
fn seconds_to_exp(token: &str) -> Option<Duration> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::from_secs_f64((exp - now).max(0.0)))
}

/// A gRPC client service (around a tonic `Channel`) that puts `authorization: Bearer <token>`
/// on every request, or passes requests through untouched without a provider. When the token
/// cannot be obtained the call fails with `UNAUTHENTICATED` saying why; when the server answers
/// `UNAUTHENTICATED`, a fetched token is dropped so the next call gets a new one.
#[derive(Debug, Clone)]
pub struct WithBearer<S> {
    inner: S,
    provider: Option<Arc<TokenProvider>>,
}

impl<S> WithBearer<S> {
    pub fn new(inner: S, provider: Option<Arc<TokenProvider>>) -> Self {
        Self { inner, provider }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WithBearer<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(provider) = self.provider.clone() else {
            return Box::pin(async move { inner.call(req).await.map_err(Into::into) });
        };
        Box::pin(async move {
            match provider.header_value().await {
                Ok(value) => {
                    req.headers_mut().insert(http::header::AUTHORIZATION, value);
                }
                Err(e) => {
                    let status = tonic::Status::unauthenticated(format!(
                        "cannot obtain a token to call the server: {e}"
                    ));
                    return Err(Box::new(status) as BoxError);
                }
            }
            let response = inner.call(req).await.map_err(Into::into)?;
            // A trailers-only refusal carries grpc-status in the headers.
            if response
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s == "16")
            {
                provider.invalidate();
            }
            Ok(response)
        })
    }
}
