//! Bearer-token extraction (Feast's `token_extractor.py`, PROTOCOLS.md §5.3), shared by HTTP
//! headers, gRPC metadata (`MetadataMap::as_ref()` / `into_headers()`) and Flight headers: all
//! three arrive as an `http::HeaderMap`, whose names are already case-insensitive.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::AuthError;

/// The token of an `authorization: Bearer <token>` header.
///
/// As Feast: the value must start with `Bearer ` (scheme case-insensitive, then a space) and
/// split on whitespace into exactly two parts. A missing or empty header is
/// [`AuthError::MissingToken`]; anything else that does not fit is
/// [`AuthError::MalformedHeader`] (the value is not echoed: it may be a credential).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        // Two authorization headers: which one would a proxy have checked? Refuse both.
        return Err(AuthError::MalformedHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    if value.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    parse_bearer(value)
}

/// The token of an `authorization` header value (`Bearer <token>`).
pub fn parse_bearer(value: &str) -> Result<&str, AuthError> {
    let scheme_ok = value
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "));
    // Feast's `(?i)Bearer .+`: at least one character after the space.
    if !scheme_ok || value.len() < 8 {
        return Err(AuthError::MalformedHeader);
    }
    let mut parts = value.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(token), None) => Ok(token),
        _ => Err(AuthError::MalformedHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn extraction_table() {
        let cases: &[(&str, &str, Result<&str, AuthError>)] = &[
            ("authorization", "Bearer abc.def.ghi", Ok("abc.def.ghi")),
            ("Authorization", "bearer tok", Ok("tok")),
            ("AUTHORIZATION", "BEARER tok", Ok("tok")),
            ("authorization", "Bearer  tok", Ok("tok")),
            ("authorization", "Bearer tok ", Ok("tok")),
            ("authorization", "", Err(AuthError::MissingToken)),
            ("authorization", "   ", Err(AuthError::MissingToken)),
            ("authorization", "Bearer", Err(AuthError::MalformedHeader)),
            ("authorization", "Bearer ", Err(AuthError::MalformedHeader)),
            (
                "authorization",
                "Basic dXNlcjpwYXNz",
                Err(AuthError::MalformedHeader),
            ),
            (
                "authorization",
                "Bearer a b",
                Err(AuthError::MalformedHeader),
            ),
            (
                "authorization",
                "Bearer\ttok",
                Err(AuthError::MalformedHeader),
            ),
            (
                "authorization",
                "Bearertok",
                Err(AuthError::MalformedHeader),
            ),
            ("authorization", "tok", Err(AuthError::MalformedHeader)),
            ("x-other", "Bearer tok", Err(AuthError::MissingToken)),
        ];
        for (name, value, want) in cases {
            let h = headers(name, value);
            assert_eq!(bearer_token(&h), *want, "{name}: {value:?}");
        }
    }

    #[test]
    fn duplicate_headers_are_refused() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader));
    }

    #[test]
    fn non_ascii_value_is_malformed_not_a_panic() {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader));
    }
}
