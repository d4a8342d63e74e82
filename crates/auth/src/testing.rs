//! Test support (feature `testing`): a loopback OIDC identity provider and a token minter, so
//! services can drive their authorization tests without a real IdP.
//!
//! [`TestIssuer::start`] serves, on `127.0.0.1:<ephemeral>`:
//! - `/.well-known/openid-configuration` (issuer, jwks_uri, token_endpoint, authorization_endpoint),
//! - `/jwks` (the published keys; [`TestIssuer::rotate`] publishes a new one and signs with it,
//!   [`TestIssuer::retire`] unpublishes one),
//! - `/token` (`client_credentials` and `password` grants for registered clients and users).
//!
//! RSA keys are pre-generated test keys committed under `tests/data` (RSA key generation is
//! too slow in debug builds and `ring` cannot generate RSA keys); they sign nothing but test
//! tokens. The ES256 keys are generated per run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Map, Value, json};

use crate::oidc::OidcSettings;

/// The `aud` tokens carry by default, and the client id [`TestIssuer::settings`] configures.
pub const AUDIENCE: &str = "feast";
/// Lifetime of minted tokens by default.
pub const TOKEN_LIFETIME_SECONDS: i64 = 300;

const RSA_KEYS: [&[u8]; 3] = [
    include_bytes!("../tests/data/rsa1.der"),
    include_bytes!("../tests/data/rsa2.der"),
    include_bytes!("../tests/data/rsa3.der"),
];
/// Never published: signs "bad signature" tokens.
const ATTACKER_RSA_KEY: &[u8] = include_bytes!("../tests/data/rsa4.der");

/// A signing key and its public JWK.
struct IssuerKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &str, der: &[u8]) -> IssuerKey {
    let pair = ring::rsa::KeyPair::from_der(der).expect("committed test RSA key parses");
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    IssuerKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der),
        jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64(&public.n), "e": b64(&public.e)}),
    }
}

fn ec_key(kid: &str) -> IssuerKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("P-256 key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("generated P-256 key parses");
    // Uncompressed point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    IssuerKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A broken token for the authorization matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadToken {
    /// `exp` a minute ago (beyond the 10 s leeway).
    Expired,
    /// `nbf` a minute ahead.
    NotYetValid,
    /// `aud` is someone else.
    WrongAudience,
    /// `iss` is someone else.
    WrongIssuer,
    /// Signed with a key the issuer never publishes.
    UnknownKid,
    /// Names the current signing key but is signed by another key.
    BadSignature,
    /// Unsigned: `alg: none` and an empty signature.
    AlgNone,
    /// HMAC-signed with a made-up secret.
    Hs256,
    /// Not a JWT at all.
    Malformed,
}

impl BadToken {
    pub const ALL: [BadToken; 9] = [
        Self::Expired,
        Self::NotYetValid,
        Self::WrongAudience,
        Self::WrongIssuer,
        Self::UnknownKid,
        Self::BadSignature,
        Self::AlgNone,
        Self::Hs256,
        Self::Malformed,
    ];
}

struct Account {
    secret: String,
    claims: Value,
}

struct IssuerState {
    url: String,
    /// Every key ever created, by kid.
    keys: HashMap<String, Arc<IssuerKey>>,
    /// Kids in `/jwks`, in order.
    published: Vec<String>,
    signing_kid: String,
    next_rsa: usize,
    clients: HashMap<String, Account>,
    users: HashMap<String, Account>,
}

struct Shared {
    /// Delay before `/jwks` answers (simulates a slow IdP), in milliseconds.
    jwks_delay_ms: std::sync::atomic::AtomicU64,
    state: Mutex<IssuerState>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    token_requests: AtomicUsize,
}

/// A loopback OIDC issuer. Stops when dropped.
pub struct TestIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stranger: IssuerKey,
    attacker: IssuerKey,
    _server: StopOnDrop,
}

impl TestIssuer {
    /// Start on `127.0.0.1:0` with one published RSA key (`rsa-1`, the signing key) and one
    /// published ES256 key (`ec-1`).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("http://{addr}");
        let rsa = Arc::new(rsa_key("rsa-1", RSA_KEYS[0]));
        let ec = Arc::new(ec_key("ec-1"));
        let state = IssuerState {
            url,
            keys: HashMap::from([(rsa.kid.clone(), rsa.clone()), (ec.kid.clone(), ec.clone())]),
            published: vec![rsa.kid.clone(), ec.kid.clone()],
            signing_kid: rsa.kid.clone(),
            next_rsa: 1,
            clients: HashMap::new(),
            users: HashMap::new(),
        };
        let shared = Arc::new(Shared {
            jwks_delay_ms: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(state),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token_endpoint))
            .with_state(shared.clone());
        let server = serve_until_dropped(listener, app);
        Self {
            addr,
            shared,
            stranger: {
                let mut k = ec_key("unknown-kid");
                k.jwk = Value::Null;
                k
            },
            attacker: rsa_key("attacker", ATTACKER_RSA_KEY),
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port>`: also the `iss` of minted tokens.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.url())
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url())
    }

    /// Validator settings for this issuer: client id and audience [`AUDIENCE`], issuer checked.
    pub fn settings(&self) -> OidcSettings {
        OidcSettings {
            client_id: Some(AUDIENCE.to_owned()),
            audience: Some(AUDIENCE.to_owned()),
            issuer: Some(self.url()),
            ..OidcSettings::new(self.discovery_url())
        }
    }

    /// Make `/jwks` answer only after `delay` (a slow or hanging identity provider).
    pub fn set_jwks_delay(&self, delay: std::time::Duration) {
        self.shared
            .jwks_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many times `/jwks` was served.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times `/token` was called.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was served.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The kid new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.lock().signing_kid.clone()
    }

    /// Kids currently published in `/jwks`.
    pub fn published_kids(&self) -> Vec<String> {
        self.lock().published.clone()
    }

    /// Key rotation: publish the next RSA key and sign new tokens with it. Returns its kid.
    pub fn rotate(&self) -> String {
        let mut s = self.lock();
        let i = s.next_rsa;
        assert!(
            i < RSA_KEYS.len(),
            "the test issuer has {} RSA keys",
            RSA_KEYS.len()
        );
        s.next_rsa += 1;
        let key = Arc::new(rsa_key(&format!("rsa-{}", i + 1), RSA_KEYS[i]));
        let kid = key.kid.clone();
        s.keys.insert(kid.clone(), key);
        s.published.push(kid.clone());
        s.signing_kid = kid.clone();
        kid
    }

    /// Stop publishing `kid` (tokens it signed no longer verify once caches expire).
    pub fn retire(&self, kid: &str) {
        self.lock().published.retain(|k| k != kid);
    }

    /// Register an OAuth client for the `client_credentials` grant; `claims` are added to
    /// its tokens (e.g. `{"roles": ["writer"]}`).
    pub fn add_client(&self, client_id: &str, secret: &str, claims: Value) {
        self.lock().clients.insert(
            client_id.to_owned(),
            Account {
                secret: secret.to_owned(),
                claims,
            },
        );
    }

    /// Register a user for the `password` grant; `claims` are added to their tokens.
    pub fn add_user(&self, username: &str, password: &str, claims: Value) {
        self.lock().users.insert(
            username.to_owned(),
            Account {
                secret: password.to_owned(),
                claims,
            },
        );
    }

    /// A valid RS256 token: default claims (`iss`, `aud`, `sub`, `iat`, `exp`) overlaid with
    /// `claims` (a JSON object; a `null` value removes a default claim).
    pub fn token(&self, claims: Value) -> String {
        let kid = self.signing_kid();
        self.token_with_kid(&kid, claims)
    }

    /// A valid token signed with the issuer key `kid` (`rsa-N` → RS256, `ec-1` → ES256).
    pub fn token_with_kid(&self, kid: &str, claims: Value) -> String {
        let key = self
            .lock()
            .keys
            .get(kid)
            .cloned()
            .unwrap_or_else(|| panic!("the test issuer has no key {kid}"));
        sign(&key, &key.kid, &self.claims(claims))
    }

    /// A token for `username` with client roles (`resource_access.feast.roles`) and groups.
    pub fn user_token(&self, username: &str, roles: &[&str], groups: &[&str]) -> String {
        self.token(json!({
            "preferred_username": username,
            "resource_access": {AUDIENCE: {"roles": roles}},
            "groups": groups,
        }))
    }

    /// A token that must be rejected, for `preferred_username = username`.
    pub fn bad_token(&self, kind: BadToken, username: &str) -> String {
        let base = json!({"preferred_username": username});
        let with = |extra: Value| {
            let mut c = self.claims(base.clone());
            if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
                for (k, v) in extra {
                    c.insert(k.clone(), v.clone());
                }
            }
            c
        };
        let signing = {
            let s = self.lock();
            s.keys[&s.signing_kid].clone()
        };
        match kind {
            BadToken::Expired => sign(
                &signing,
                &signing.kid,
                &with(json!({"iat": now() - 600, "exp": now() - 60})),
            ),
            BadToken::NotYetValid => {
                sign(&signing, &signing.kid, &with(json!({"nbf": now() + 60})))
            }
            BadToken::WrongAudience => sign(
                &signing,
                &signing.kid,
                &with(json!({"aud": "someone-else"})),
            ),
            BadToken::WrongIssuer => sign(
                &signing,
                &signing.kid,
                &with(json!({"iss": "https://evil.example.com"})),
            ),
            BadToken::UnknownKid => sign(&self.stranger, &self.stranger.kid, &with(json!({}))),
            BadToken::BadSignature => sign(&self.attacker, &signing.kid, &with(json!({}))),
            BadToken::AlgNone => unsigned_token(&with(json!({}))),
            BadToken::Hs256 => {
                let header = Header {
                    kid: Some(signing.kid.clone()),
                    ..Header::new(Algorithm::HS256)
                };
                jsonwebtoken::encode(
                    &header,
                    &with(json!({})),
                    &EncodingKey::from_secret(b"guess"),
                )
                .expect("HS256 signing")
            }
            BadToken::Malformed => "not-a-jwt".to_owned(),
        }
    }

    /// POST `form` to `/token` (as an OIDC client would) and return the JSON answer.
    pub async fn request_token(&self, form: &[(&str, &str)]) -> Result<Value, crate::AuthError> {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::client::form_encode(k),
                    crate::client::form_encode(v)
                )
            })
            .collect();
        crate::fetch::FetchClient::new(true, "", std::time::Duration::from_secs(10))?
            .post_form_json(&self.token_url(), &body.join("&"))
            .await
    }

    /// Default claims overlaid with `extra`.
    fn claims(&self, extra: Value) -> Value {
        let t = now();
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.url()));
        c.insert("aud".into(), json!(AUDIENCE));
        c.insert("sub".into(), json!("test-subject"));
        c.insert("iat".into(), json!(t));
        c.insert("exp".into(), json!(t + TOKEN_LIFETIME_SECONDS));
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IssuerState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops a loopback test server when dropped.
pub(crate) struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `app` on `listener` in the background until the returned guard is dropped (the
/// test stand-ins: the OIDC issuer, the Kubernetes API).
pub(crate) fn serve_until_dropped(listener: tokio::net::TcpListener, app: Router) -> StopOnDrop {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    StopOnDrop(Some(tx))
}

fn sign(key: &IssuerKey, kid: &str, claims: &Value) -> String {
    let header = Header {
        kid: Some(kid.to_owned()),
        ..Header::new(key.alg)
    };
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("test token signing")
}

/// An unsigned JWT (`alg: none`), as Feast's intra-communication client builds them.
pub fn unsigned_token(claims: &Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let url = shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .url
        .clone();
    Json(json!({
        "issuer": url,
        "jwks_uri": format!("{url}/jwks"),
        "token_endpoint": format!("{url}/token"),
        "authorization_endpoint": format!("{url}/auth"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let delay = shared.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let keys: Vec<Value> = s.published.iter().map(|k| s.keys[k].jwk.clone()).collect();
    Json(json!({ "keys": keys }))
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let client_id = field("client_id");
    let client_ok = s
        .clients
        .get(client_id)
        .is_some_and(|c| c.secret == field("client_secret"));
    if !client_ok {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut claims = Map::new();
    let t = now();
    claims.insert("iss".into(), json!(s.url));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("iat".into(), json!(t));
    claims.insert("exp".into(), json!(t + TOKEN_LIFETIME_SECONDS));
    claims.insert("azp".into(), json!(client_id));
    let extra = match field("grant_type") {
        "client_credentials" => {
            claims.insert("sub".into(), json!(format!("service-account-{client_id}")));
            s.clients[client_id].claims.clone()
        }
        "password" => {
            let username = field("username");
            match s.users.get(username) {
                Some(u) if u.secret == field("password") => {
                    claims.insert("sub".into(), json!(format!("user-{username}")));
                    claims.insert("preferred_username".into(), json!(username));
                    u.claims.clone()
                }
                _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    let key = s.keys[&s.signing_kid].clone();
    let token = sign(&key, &key.kid, &Value::Object(claims));
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECONDS,
    }))
    .into_response()
}

/// Calls the unary gRPC method `path` (`/package.Service/Method`) with an already encoded
/// request and an optional `authorization` header value; the encoded response, or the
/// status. Lets authorization tests walk every method of a service from its descriptors.
pub async fn grpc_unary_raw(
    channel: tonic::transport::Channel,
    path: &str,
    request: Vec<u8>,
    authorization: Option<&str>,
) -> Result<bytes::Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(bytes::Bytes::from(request));
    if let Some(value) = authorization {
        let value = value
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("authorization header value"))?;
        req.metadata_mut().insert("authorization", value);
    }
    let path = path
        .parse()
        .map_err(|_| tonic::Status::invalid_argument(format!("gRPC path {path}")))?;
    grpc.unary(req, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Protobuf bytes in and out, unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
