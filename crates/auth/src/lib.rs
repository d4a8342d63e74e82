//! feast-rs authentication and authorization, shared by every server.
//!
//! - [`extract`]: the `authorization: Bearer <token>` header (HTTP, gRPC metadata, Flight).
//! - [`oidc`]: OIDC access-token validation against the provider's JWKS → [`User`].
//! - [`kubernetes`]: Kubernetes tokens reviewed by the cluster (TokenReview) → [`User`] with
//!   roles, groups and namespaces from its RBAC.
//! - [`authz`]: Feast's permission engine over the project's `Permission` protos.
//! - [`layer`]: the tower layer that authenticates every request of a server.
//! - [`client`]: the token a client sends (`auth:` of its feature_store.yaml) and the layer
//!   that puts it on every gRPC call.
//! - `testing` (feature `testing`): a loopback OIDC issuer and token minter for tests;
//!   `testing_k8s`: a loopback Kubernetes API (TokenReview and RBAC objects).
//!
//! Errors: authentication failures are [`AuthError`] (401 / `UNAUTHENTICATED`); authorization
//! failures are Feast's `FeastPermissionError` (`feast_core::error::FeastError`, 403 /
//! `PERMISSION_DENIED`).

pub mod authz;
pub mod client;
pub mod error;
pub mod extract;
mod fetch;
pub mod kubernetes;
pub mod layer;
pub mod oidc;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub mod testing_k8s;
pub mod user;

pub use authz::{
    Action, Authorizer, ResourceKind, ResourceRef, permission_error, project_permissions,
};
pub use client::{TokenProvider, WithBearer};
pub use error::AuthError;
pub use extract::bearer_token;
pub use fetch::FetchClient;
pub use kubernetes::{ClusterAccess, KubernetesValidator};
pub use layer::{AuthLayer, AuthService, Authenticator, log_auth_mode};
pub use oidc::{OidcSettings, OidcValidator};
pub use user::User;
