//! OIDC access-token validation (Feast's `oidc_token_parser.py`, PROTOCOLS.md §5.4 step 4).
//!
//! The discovery document is read once (it must name `jwks_uri`, and, as Feast requires,
//! `token_endpoint` and `authorization_endpoint`); the JWKS is cached for
//! `jwks_cache_lifespan_seconds` and refetched early when a token names an unknown `kid`
//! (key rotation), at most once per [`OidcSettings::unknown_kid_refresh_interval`].
//!
//! Hot path: a token already verified against the current key set is looked up (an
//! `ArcSwap` load and a read-locked map lookup) instead of checking its signature again,
//! until its `exp` or until the key set is refetched, whichever comes first: the answer is
//! the one a new verification against the same keys would give. A new token costs a key
//! lookup and the signature check (~35 µs for RS256): no I/O.
//!
//! Only RS256 and ES256 signatures are accepted. Unsigned (`alg: none`) and HMAC tokens are
//! rejected before any key lookup, and there is no "intra-communication" username that skips
//! verification (feast#6785). Tokens with a `kubernetes.io` claim (service-account tokens) are
//! not the IdP's: they go to the cluster's TokenReview ([`crate::kubernetes`]) before any key
//! lookup, so they neither trigger JWKS refetches nor pass without the cluster's word.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use feast_core::config::{OidcClientAuthConfig, OidcServerAuthConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::fetch::FetchClient;
use crate::user::User;

/// Clock skew tolerated on `exp` / `nbf` (Feast: `leeway=10`).
pub const LEEWAY_SECONDS: u64 = 10;

/// What the validator needs from `auth:` (`type: oidc`).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub auth_discovery_url: String,
    /// Reads client roles from `resource_access.<client_id>.roles`.
    pub client_id: Option<String>,
    /// Required `aud` (None = not checked).
    pub audience: Option<String>,
    /// Required `iss` (None = not checked).
    pub issuer: Option<String>,
    pub verify_ssl: bool,
    pub ca_cert_path: String,
    pub jwks_cache_lifespan: Duration,
    pub jwks_request_timeout: Duration,
    /// Minimum time between two JWKS refetches caused by unknown `kid`s.
    pub unknown_kid_refresh_interval: Duration,
}

impl OidcSettings {
    /// Defaults as Feast's (`jwks_cache_lifespan_seconds=300`, timeout 10 s), with a 10 s
    /// rate limit on unknown-`kid` refreshes.
    pub fn new(auth_discovery_url: impl Into<String>) -> Self {
        Self {
            auth_discovery_url: auth_discovery_url.into(),
            client_id: None,
            audience: None,
            issuer: None,
            verify_ssl: true,
            ca_cert_path: String::new(),
            jwks_cache_lifespan: Duration::from_secs(300),
            jwks_request_timeout: Duration::from_secs(10),
            unknown_kid_refresh_interval: Duration::from_secs(10),
        }
    }

    pub fn from_server_config(c: &OidcServerAuthConfig) -> Self {
        Self {
            client_id: c.client_id.clone(),
            audience: c.audience.clone(),
            issuer: c.issuer.clone(),
            verify_ssl: c.verify_ssl,
            ca_cert_path: c.ca_cert_path.clone(),
            jwks_cache_lifespan: Duration::from_secs(c.jwks_cache_lifespan_seconds.max(1) as u64),
            jwks_request_timeout: Duration::from_secs_f64(
                c.jwks_request_timeout_seconds.max(0.001),
            ),
            ..Self::new(c.auth_discovery_url.clone())
        }
    }

    /// A server given a client-shaped `oidc` block (it has `client_secret`, ...) validates
    /// with the same server keys, as Feast does.
    pub fn from_client_config(c: &OidcClientAuthConfig) -> Result<Self, AuthError> {
        let url = c
            .auth_discovery_url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                AuthError::Config(
                    "`auth.auth_discovery_url` is required to validate OIDC tokens".into(),
                )
            })?;
        Ok(Self {
            client_id: c.client_id.clone(),
            audience: c.audience.clone(),
            issuer: c.issuer.clone(),
            verify_ssl: c.verify_ssl,
            ca_cert_path: c.ca_cert_path.clone(),
            jwks_cache_lifespan: Duration::from_secs(c.jwks_cache_lifespan_seconds.max(1) as u64),
            jwks_request_timeout: Duration::from_secs_f64(
                c.jwks_request_timeout_seconds.max(0.001),
            ),
            ..Self::new(url)
        })
    }
}

/// One usable verification key of the JWKS.
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A fetched JWKS.
struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg),
            None => {
                // No `kid`: only unambiguous when one key of that algorithm is published.
                let mut it = self.keys.iter().filter(|k| k.alg == alg);
                match (it.next(), it.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

/// After a failed discovery/JWKS fetch, requests fail fast with the same error for this
/// long instead of queueing behind one fetch (and its timeout) each.
pub const FETCH_FAILURE_BACKOFF: Duration = Duration::from_secs(2);

/// State touched only when the JWKS must be (re)fetched.
#[derive(Default)]
struct RefreshState {
    jwks_uri: Option<String>,
    last_unknown_kid_refresh: Option<Instant>,
    last_failure: Option<(Instant, AuthError)>,
}

/// Validates OIDC bearer tokens and maps their claims to a [`User`]. Share it in an `Arc`.
pub struct OidcValidator {
    settings: OidcSettings,
    client: FetchClient,
    rs256: Validation,
    es256: Validation,
    keys: ArcSwapOption<KeySet>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Tokens already verified, by token text.
    verified: std::sync::RwLock<HashMap<String, Verified>>,
    /// Reviews service-account tokens (in-cluster configuration unless set).
    kubernetes: Arc<crate::kubernetes::KubernetesValidator>,
}

impl std::fmt::Debug for OidcValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcValidator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A token whose signature and claims were checked against one key set.
struct Verified {
    user: User,
    /// `fetched_at` of the key set it was verified with: a refetched key set (rotation,
    /// retired keys) means verifying again.
    keys_fetched_at: Instant,
    /// Its `exp` (Unix seconds).
    expires: u64,
}

/// Verified tokens remembered at most (beyond, expired entries go, then all).
const VERIFIED_CAPACITY: usize = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The parts of a JWT header we look at before choosing a key.
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

fn malformed(why: impl Into<String>) -> AuthError {
    AuthError::MalformedToken(why.into())
}

fn raw_segments(token: &str) -> Result<(&str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(_sig), None) => Ok((h, p)),
        _ => Err(malformed("not a JWT (expected three dot-separated parts)")),
    }
}

fn decode_segment(segment: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| malformed(format!("{what} is not a JSON object")))
}

fn raw_header(token: &str) -> Result<RawHeader, AuthError> {
    let (h, _) = raw_segments(token)?;
    let header = decode_segment(h, "header")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("header has no `alg`"))?
        .to_owned();
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok(RawHeader { alg, kid })
}

/// Whether the (unverified) payload carries a `kubernetes.io` object claim.
fn is_kubernetes_token(token: &str) -> bool {
    raw_segments(token)
        .ok()
        .and_then(|(_, p)| decode_segment(p, "payload").ok())
        .is_some_and(|claims| claims.get("kubernetes.io").is_some_and(Value::is_object))
}

fn validation(alg: Algorithm, s: &OidcSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = LEEWAY_SECONDS;
    v.validate_exp = true;
    v.validate_nbf = true;
    match &s.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    if let Some(iss) = &s.issuer {
        v.set_issuer(&[iss]);
    }
    v
}

impl OidcValidator {
    pub fn new(settings: OidcSettings) -> Result<Self, AuthError> {
        let client = FetchClient::new(
            settings.verify_ssl,
            &settings.ca_cert_path,
            settings.jwks_request_timeout,
        )?;
        Ok(Self {
            rs256: validation(Algorithm::RS256, &settings),
            es256: validation(Algorithm::ES256, &settings),
            settings,
            client,
            keys: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            verified: std::sync::RwLock::new(HashMap::new()),
            kubernetes: crate::kubernetes::lazy_in_cluster(),
        })
    }

    /// Reviews service-account tokens with `kubernetes` instead of the in-cluster API.
    pub fn with_kubernetes(
        mut self,
        kubernetes: Arc<crate::kubernetes::KubernetesValidator>,
    ) -> Self {
        self.kubernetes = kubernetes;
        self
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Fetch the discovery document and JWKS now (e.g. at start-up, to fail fast).
    pub async fn prefetch(&self) -> Result<(), AuthError> {
        let mut state = self.refresh.lock().await;
        self.fetch_keys(&mut state).await
    }

    /// Verify `token` and return the user it identifies.
    pub async fn validate(&self, token: &str) -> Result<User, AuthError> {
        if let Some(user) = self.already_verified(token) {
            return Ok(user);
        }
        let header = raw_header(token)?;
        let (alg, validation) = match header.alg.as_str() {
            "RS256" => (Algorithm::RS256, &self.rs256),
            "ES256" => (Algorithm::ES256, &self.es256),
            other => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
        };
        if is_kubernetes_token(token) {
            return self.kubernetes.validate_service_account(token).await;
        }
        let kid = header.kid.as_deref();
        let keys = self.fresh_keys().await?;
        let keys = match keys.find(kid, alg) {
            Some(_) => keys,
            None => match self.refresh_for_unknown_kid(kid, alg).await? {
                Some(keys) => keys,
                None => {
                    return Err(AuthError::UnknownKey(
                        kid.map(|k| format!("`{k}`"))
                            .unwrap_or_else(|| "(no kid)".to_owned()),
                    ));
                }
            },
        };
        let key = keys
            .find(kid, alg)
            .expect("refresh_for_unknown_kid returns a key set holding the key");
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
            Ok(data) => data.claims,
            Err(e) => return Err(map_jwt_error(e.kind())),
        };
        let user = user_from_claims(&claims, self.settings.client_id.as_deref())?;
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            self.remember(token, &user, keys.fetched_at, exp.max(0.0) as u64);
        }
        Ok(user)
    }

    /// The user of a token verified against the current, fresh key set and not expired.
    fn already_verified(&self, token: &str) -> Option<User> {
        let keys = self.keys.load();
        let keys = keys.as_ref()?;
        if keys.fetched_at.elapsed() >= self.settings.jwks_cache_lifespan {
            return None;
        }
        let verified = self.verified.read().unwrap_or_else(|e| e.into_inner());
        let entry = verified.get(token)?;
        (entry.keys_fetched_at == keys.fetched_at && unix_now() < entry.expires)
            .then(|| entry.user.clone())
    }

    fn remember(&self, token: &str, user: &User, keys_fetched_at: Instant, expires: u64) {
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            let now = unix_now();
            verified.retain(|_, v| v.keys_fetched_at == keys_fetched_at && now < v.expires);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            token.to_owned(),
            Verified {
                user: user.clone(),
                keys_fetched_at,
                expires,
            },
        );
    }

    /// The cached key set if it is younger than the cache lifespan, else a fresh one.
    async fn fresh_keys(&self) -> Result<Arc<KeySet>, AuthError> {
        if let Some(keys) = self.keys.load_full()
            && keys.fetched_at.elapsed() < self.settings.jwks_cache_lifespan
        {
            return Ok(keys);
        }
        let mut state = self.refresh.lock().await;
        // Another request may have refreshed while we waited.
        if let Some(keys) = self.keys.load_full()
            && keys.fetched_at.elapsed() < self.settings.jwks_cache_lifespan
        {
            return Ok(keys);
        }
        self.fetch_keys(&mut state).await?;
        Ok(self.keys.load_full().expect("fetch_keys stores a key set"))
    }

    /// Refetch the JWKS because a token names a key we do not have (rotation), rate-limited.
    /// `Some(keys)` when the refreshed set has the key.
    async fn refresh_for_unknown_kid(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<KeySet>>, AuthError> {
        let mut state = self.refresh.lock().await;
        if let Some(keys) = self.keys.load_full()
            && keys.find(kid, alg).is_some()
        {
            return Ok(Some(keys));
        }
        let interval = self.settings.unknown_kid_refresh_interval;
        if state
            .last_unknown_kid_refresh
            .is_some_and(|t| t.elapsed() < interval)
        {
            return Ok(None);
        }
        state.last_unknown_kid_refresh = Some(Instant::now());
        tracing::info!(
            message = "unknown signing key; refetching the JWKS",
            kid = kid.unwrap_or("")
        );
        self.fetch_keys(&mut state).await?;
        Ok(self.keys.load_full().filter(|k| k.find(kid, alg).is_some()))
    }

    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<(), AuthError> {
        if let Some((at, error)) = &state.last_failure
            && at.elapsed() < FETCH_FAILURE_BACKOFF
        {
            return Err(error.clone());
        }
        let result = self.fetch_keys_now(state).await;
        if let Err(error) = &result {
            tracing::warn!(message = "could not refresh the identity provider's keys", %error);
            state.last_failure = Some((Instant::now(), error.clone()));
        } else {
            state.last_failure = None;
        }
        result
    }

    async fn fetch_keys_now(&self, state: &mut RefreshState) -> Result<(), AuthError> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let jwks = match self.client.get_json(&jwks_uri).await {
            Ok(j) => j,
            Err(e) => {
                // The provider may have moved its JWKS: read the discovery document next time.
                state.jwks_uri = None;
                return Err(e);
            }
        };
        let keys = parse_jwks(&jwks)?;
        tracing::debug!(message = "JWKS fetched", keys = keys.len(), jwks_uri);
        self.keys.store(Some(Arc::new(KeySet {
            keys,
            fetched_at: Instant::now(),
        })));
        Ok(())
    }

    async fn discover(&self) -> Result<String, AuthError> {
        let url = &self.settings.auth_discovery_url;
        let doc = self.client.get_json(url).await?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    AuthError::ProviderUnavailable(format!(
                        "discovery document {url} has no `{name}`"
                    ))
                })
        };
        field("token_endpoint")?;
        field("authorization_endpoint")?;
        field("jwks_uri")
    }
}

/// The usable keys of a JWKS document: RSA keys for RS256 and P-256 keys for ES256, not
/// marked `use: enc`, whose declared `alg` (if any) agrees. Other keys are skipped.
fn parse_jwks(doc: &Value) -> Result<Vec<VerifyingKey>, AuthError> {
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| AuthError::ProviderUnavailable("JWKS has no `keys` array".into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(j) => j,
            Err(error) => {
                tracing::debug!(message = "skipping an unsupported JWK", %error);
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        if let Some(declared) = jwk.common.key_algorithm
            && format!("{declared:?}") != format!("{alg:?}")
        {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(out)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::UnsupportedAlgorithm("(mismatch)".into())
        }
        other => AuthError::MalformedToken(format!("{other:?}")),
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Feast's claim mapping: username is the first *string* among `preferred_username`, `upn`,
/// `azp`, `appid`, `sub`; roles are `resource_access.<client_id>.roles` (when a client id is
/// configured) then the top-level `roles`, de-duplicated in order; groups are `groups`.
pub fn user_from_claims(
    claims: &Map<String, Value>,
    client_id: Option<&str>,
) -> Result<User, AuthError> {
    let username = ["preferred_username", "upn", "azp", "appid", "sub"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .ok_or(AuthError::MissingUsername)?
        .to_owned();
    let mut roles = match client_id {
        Some(id) => string_list(
            claims
                .get("resource_access")
                .and_then(|r| r.get(id))
                .and_then(|c| c.get("roles")),
        ),
        None => Vec::new(),
    };
    roles.extend(string_list(claims.get("roles")));
    let mut seen = HashSet::new();
    roles.retain(|r| seen.insert(r.clone()));
    Ok(User {
        username,
        roles,
        groups: string_list(claims.get("groups")),
        namespaces: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn username_is_first_string_claim() {
        let cases = [
            (json!({"preferred_username": "alice", "sub": "s"}), "alice"),
            (
                json!({"preferred_username": null, "upn": "u@x", "sub": "s"}),
                "u@x",
            ),
            (
                json!({"preferred_username": 3, "azp": "app", "sub": "s"}),
                "app",
            ),
            (json!({"appid": "aid", "sub": "s"}), "aid"),
            (json!({"sub": "s"}), "s"),
        ];
        for (c, want) in cases {
            assert_eq!(user_from_claims(&claims(c), None).unwrap().username, want);
        }
        assert_eq!(
            user_from_claims(&claims(json!({"name": "x"})), None),
            Err(AuthError::MissingUsername)
        );
    }

    #[test]
    fn roles_merge_client_roles_then_top_level_deduplicated() {
        let c = claims(json!({
            "sub": "s",
            "resource_access": {"feast": {"roles": ["reader", "writer"]}, "other": {"roles": ["x"]}},
            "roles": ["writer", "admin", 7],
            "groups": ["g1", "g2"],
            "realm_access": {"roles": ["ignored"]}
        }));
        let u = user_from_claims(&c, Some("feast")).unwrap();
        assert_eq!(u.roles, ["reader", "writer", "admin"]);
        assert_eq!(u.groups, ["g1", "g2"]);
        assert!(u.namespaces.is_empty());
        let u = user_from_claims(&c, None).unwrap();
        assert_eq!(u.roles, ["writer", "admin"]);
        let odd = claims(
            json!({"sub": "s", "resource_access": {"feast": {"roles": "reader"}}, "roles": {"a": 1}, "groups": "g"}),
        );
        let u = user_from_claims(&odd, Some("feast")).unwrap();
        assert!(u.roles.is_empty() && u.groups.is_empty());
    }
}
