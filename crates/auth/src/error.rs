//! `AuthError`: why a request could not be authenticated, and the one place that decides how
//! each transport reports it (HTTP status, gRPC code). Authentication failures are never a
//! 500: a bad or missing token is the caller's problem (401 / `UNAUTHENTICATED`); an identity
//! provider we cannot reach is a dependency outage (503 / `UNAVAILABLE`).
//!
//! Authorization failures are not `AuthError`s: they are Feast's `FeastPermissionError`
//! ([`feast_core::error::FeastError`]) so that the Feast SDK re-raises the right class.

use http::StatusCode;

/// A request failed authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header, or an empty one.
    #[error("Missing authentication token")]
    MissingToken,
    /// The header is not `Bearer <token>`.
    #[error("Invalid authorization header: expected `Bearer <token>`")]
    MalformedHeader,
    /// The token is not a well-formed JWT.
    #[error("Invalid access token: {0}")]
    MalformedToken(String),
    /// The token is unsigned (`alg: none`) or uses an algorithm this server does not accept.
    #[error(
        "Invalid access token: algorithm `{0}` is not accepted (tokens must be signed with RS256 or ES256)"
    )]
    UnsupportedAlgorithm(String),
    /// The token's `kid` is not in the identity provider's JWKS, even after a refresh.
    #[error("Invalid access token: signing key {0} is not published by the identity provider")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("Invalid access token: signature verification failed")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("Invalid or expired access token: the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("Invalid access token: the token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` does not contain the configured audience.
    #[error("Invalid access token: wrong audience")]
    InvalidAudience,
    /// `iss` is not the configured issuer.
    #[error("Invalid access token: wrong issuer")]
    InvalidIssuer,
    /// A required claim (`exp`) is missing.
    #[error("Invalid access token: missing required claim `{0}`")]
    MissingClaim(String),
    /// None of `preferred_username`, `upn`, `azp`, `appid`, `sub` is a string.
    #[error(
        "Missing username claim in access token: expected one of preferred_username, upn, azp, appid or sub."
    )]
    MissingUsername,
    /// A Kubernetes token that could not be authenticated: the cluster's TokenReview refused
    /// it, or this server has no Kubernetes API to ask.
    #[error("{0}")]
    Rejected(String),
    /// The identity provider (discovery document or JWKS) could not be fetched or used.
    #[error("Identity provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The `auth:` configuration cannot be served.
    #[error("Invalid auth configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// The HTTP status a server answers with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::ProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The gRPC status code a server answers with.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::ProviderUnavailable(_) => tonic::Code::Unavailable,
            Self::Config(_) => tonic::Code::Internal,
            _ => tonic::Code::Unauthenticated,
        }
    }

    /// A `tonic::Status` for services that authenticate inside a handler.
    pub fn to_grpc_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.to_string())
    }

    /// FastAPI's `{"detail": "..."}` body for HTTP.
    pub fn http_body(&self) -> String {
        serde_json::json!({ "detail": self.to_string() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_problems_are_401_and_unauthenticated_never_500() {
        for e in [
            AuthError::MissingToken,
            AuthError::MalformedHeader,
            AuthError::MalformedToken("x".into()),
            AuthError::UnsupportedAlgorithm("none".into()),
            AuthError::UnknownKey("k".into()),
            AuthError::InvalidSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::InvalidAudience,
            AuthError::InvalidIssuer,
            AuthError::MissingClaim("exp".into()),
            AuthError::MissingUsername,
            AuthError::Rejected("Kubernetes token validation failed: x".into()),
        ] {
            assert_eq!(e.http_status(), StatusCode::UNAUTHORIZED, "{e}");
            assert_eq!(e.grpc_code(), tonic::Code::Unauthenticated, "{e}");
        }
        let down = AuthError::ProviderUnavailable("timeout".into());
        assert_eq!(down.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.grpc_code(), tonic::Code::Unavailable);
    }

    #[test]
    fn http_body_is_fastapi_detail() {
        assert_eq!(
            AuthError::MissingToken.http_body(),
            r#"{"detail":"Missing authentication token"}"#
        );
    }
}
