//! `auth:` (Feast `permissions/auth_model.py`).
//!
//! `type: oidc` maps to one of two models, chosen the way Feast's
//! `_is_oidc_client_config` does: the client model when the mapping has any of
//! `client_secret`, `token`, `token_env_var`, `username`, `password`, or has no
//! `auth_discovery_url`; the server model otherwise.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, MapAccess};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::de::{boolean, lax_float_gt0, lax_int_gt0, struct_from_map, struct_from_nothing};
use super::error::INVALID_MARK;
use super::tagged::{Tagged, validated};

/// Allowed `auth.type` values.
pub const AUTH_TYPES: &[&str] = &["no_auth", "kubernetes", "oidc"];

/// Keys whose presence selects the OIDC *client* model.
pub const OIDC_CLIENT_KEYS: &[&str] = &[
    "client_secret",
    "token",
    "token_env_var",
    "username",
    "password",
];

/// `auth:` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum AuthConfig {
    /// `type: no_auth` (the default).
    #[default]
    #[serde(rename = "no_auth")]
    NoAuth,
    /// `type: kubernetes`.
    #[serde(rename = "kubernetes")]
    Kubernetes(KubernetesAuthConfig),
    /// `type: oidc` as a server validates tokens (`OidcAuthConfig`).
    #[serde(rename = "oidc")]
    OidcServer(OidcServerAuthConfig),
    /// `type: oidc` as a client obtains tokens (`OidcClientAuthConfig`).
    #[serde(rename = "oidc")]
    OidcClient(OidcClientAuthConfig),
}

impl AuthConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthConfig::NoAuth => "no_auth",
            AuthConfig::Kubernetes(_) => "kubernetes",
            AuthConfig::OidcServer(_) | AuthConfig::OidcClient(_) => "oidc",
        }
    }
}

/// `NoAuthConfig`: nothing but `type` (`extra="forbid"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoAuthConfig {}

/// `KubernetesAuthConfig` (`extra="allow"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubernetesAuthConfig {
    /// Token sent by clients (else the service account token, else `LOCAL_K8S_TOKEN`).
    #[serde(default)]
    pub user_token: Option<String>,
    /// Keys Feast accepts but does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn default_true() -> bool {
    true
}
fn default_jwks_lifespan() -> i64 {
    300
}
fn default_jwks_timeout() -> f64 {
    10.0
}
fn default_refresh_margin() -> f64 {
    30.0
}

/// `OidcAuthConfig` (server side, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcServerAuthConfig {
    /// `.well-known/openid-configuration` URL (required).
    pub auth_discovery_url: String,
    /// Expected client id; also used to read client roles from `resource_access`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client id the UI uses.
    #[serde(default)]
    pub ui_client_id: Option<String>,
    /// Verify TLS when fetching discovery / JWKS.
    #[serde(default = "default_true", deserialize_with = "boolean")]
    pub verify_ssl: bool,
    /// CA bundle for discovery / JWKS ("" = system roots).
    #[serde(default)]
    pub ca_cert_path: String,
    /// Required `aud` (None = not checked).
    #[serde(default)]
    pub audience: Option<String>,
    /// Required `iss` (None = not checked).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Seconds a fetched JWK set is reused (> 0).
    #[serde(default = "default_jwks_lifespan", deserialize_with = "lax_int_gt0")]
    pub jwks_cache_lifespan_seconds: i64,
    /// Timeout of the JWKS fetch in seconds (> 0).
    #[serde(default = "default_jwks_timeout", deserialize_with = "lax_float_gt0")]
    pub jwks_request_timeout_seconds: f64,
}

/// `OidcClientAuthConfig` (client side, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcClientAuthConfig {
    /// Discovery URL (needed for the client-credentials / password grants).
    #[serde(default)]
    pub auth_discovery_url: Option<String>,
    /// OAuth client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client id the UI uses.
    #[serde(default)]
    pub ui_client_id: Option<String>,
    /// Verify TLS.
    #[serde(default = "default_true", deserialize_with = "boolean")]
    pub verify_ssl: bool,
    /// CA bundle.
    #[serde(default)]
    pub ca_cert_path: String,
    /// Server-side `aud` check (unused by clients).
    #[serde(default)]
    pub audience: Option<String>,
    /// Server-side `iss` check (unused by clients).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Server-side JWKS cache lifespan (unused by clients).
    #[serde(default = "default_jwks_lifespan", deserialize_with = "lax_int_gt0")]
    pub jwks_cache_lifespan_seconds: i64,
    /// Server-side JWKS timeout (unused by clients).
    #[serde(default = "default_jwks_timeout", deserialize_with = "lax_float_gt0")]
    pub jwks_request_timeout_seconds: f64,
    /// Password grant user.
    #[serde(default)]
    pub username: Option<String>,
    /// Password grant password.
    #[serde(default)]
    pub password: Option<String>,
    /// Client secret (client-credentials or password grant).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A static bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of an environment variable holding the bearer token.
    #[serde(default)]
    pub token_env_var: Option<String>,
    /// Stop reusing an IdP token this many seconds before it expires (> 0).
    #[serde(default = "default_refresh_margin", deserialize_with = "lax_float_gt0")]
    pub token_refresh_margin_seconds: f64,
}

/// Which credential source an OIDC client configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcClientCredentials {
    /// `token`.
    Token,
    /// `token_env_var`.
    TokenEnvVar,
    /// `client_secret` + `auth_discovery_url` + `client_id` (client-credentials grant).
    ClientCredentials,
    /// The same plus `username` + `password` (password grant).
    Password,
    /// Nothing configured: `FEAST_OIDC_TOKEN`, then the service-account token file.
    Ambient,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

impl OidcClientAuthConfig {
    /// Feast's `_check_mutually_exclusive`: at most one complete credential group, none partial.
    fn validate(&self) -> Result<(), String> {
        let mut network = vec![
            truthy(&self.client_secret),
            truthy(&self.auth_discovery_url),
            truthy(&self.client_id),
        ];
        if truthy(&self.username) || truthy(&self.password) {
            network.push(truthy(&self.username));
            network.push(truthy(&self.password));
        }
        let groups: [(&str, Vec<bool>); 3] = [
            ("token", vec![truthy(&self.token)]),
            ("token_env_var", vec![truthy(&self.token_env_var)]),
            ("client_credentials", network),
        ];
        if let Some((name, _)) = groups
            .iter()
            .find(|(_, v)| v.iter().any(|b| *b) && !v.iter().all(|b| *b))
        {
            return Err(format!(
                "incomplete configuration for '{name}': configure all of its fields together, or none \
                 (client_credentials = client_secret + auth_discovery_url + client_id [+ username + password])"
            ));
        }
        let active: Vec<&str> = groups
            .iter()
            .filter(|(_, v)| v.iter().all(|b| *b))
            .map(|(n, _)| *n)
            .collect();
        if active.len() > 1 {
            return Err(format!(
                "only one of [token, token_env_var, client_credentials] may be set, but got: {}",
                active.join(", ")
            ));
        }
        Ok(())
    }

    /// The credential source this configuration selects.
    pub fn credentials(&self) -> OidcClientCredentials {
        if truthy(&self.token) {
            OidcClientCredentials::Token
        } else if truthy(&self.token_env_var) {
            OidcClientCredentials::TokenEnvVar
        } else if truthy(&self.client_secret) {
            if truthy(&self.username) {
                OidcClientCredentials::Password
            } else {
                OidcClientCredentials::ClientCredentials
            }
        } else {
            OidcClientCredentials::Ambient
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthKind {
    NoAuth,
    Kubernetes,
    OidcServer,
    OidcClient,
}

/// Feast's `_is_oidc_client_config`, given the keys of an `auth` mapping with `type: oidc`.
pub fn is_oidc_client_config<'a>(keys: impl IntoIterator<Item = &'a str>) -> bool {
    let keys: BTreeSet<&str> = keys.into_iter().collect();
    OIDC_CLIENT_KEYS.iter().any(|k| keys.contains(k)) || !keys.contains("auth_discovery_url")
}

impl Tagged for AuthConfig {
    type Kind = AuthKind;
    const TAG: &'static str = "type";
    const EXPECTING: &'static str = "an auth type name or a mapping with `type`";

    fn resolve(name: &str, keys: Option<&BTreeSet<String>>) -> Result<AuthKind, String> {
        match name {
            "no_auth" => Ok(AuthKind::NoAuth),
            "kubernetes" => Ok(AuthKind::Kubernetes),
            "oidc" => {
                let client = match keys {
                    None => true,
                    Some(k) => is_oidc_client_config(k.iter().map(String::as_str)),
                };
                Ok(if client {
                    AuthKind::OidcClient
                } else {
                    AuthKind::OidcServer
                })
            }
            _ => Err(format!(
                "{INVALID_MARK}auth configuration has invalid authentication type `{name}`, expected one of `no_auth`, `kubernetes`, `oidc`"
            )),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<AuthKind, String> {
        Err("missing field `type` (the auth type: no_auth, kubernetes or oidc)".to_owned())
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: AuthKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            AuthKind::NoAuth => {
                let _: NoAuthConfig = struct_from_map(map, "type")?;
                AuthConfig::NoAuth
            }
            AuthKind::Kubernetes => AuthConfig::Kubernetes(struct_from_map(map, "type")?),
            AuthKind::OidcServer => AuthConfig::OidcServer(struct_from_map(map, "type")?),
            AuthKind::OidcClient => {
                let c: OidcClientAuthConfig = struct_from_map(map, "type")?;
                AuthConfig::OidcClient(validated(c, OidcClientAuthConfig::validate)?)
            }
        })
    }

    fn from_name<E: de::Error>(kind: AuthKind) -> Result<Self, E> {
        Ok(match kind {
            AuthKind::NoAuth => AuthConfig::NoAuth,
            AuthKind::Kubernetes => AuthConfig::Kubernetes(KubernetesAuthConfig::default()),
            AuthKind::OidcServer => AuthConfig::OidcServer(struct_from_nothing()?),
            AuthKind::OidcClient => AuthConfig::OidcClient(struct_from_nothing()?),
        })
    }

    /// `auth: null` is treated as the default, `no_auth`.
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Ok(Some(AuthConfig::NoAuth))
    }
}
