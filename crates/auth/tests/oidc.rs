//! OIDC validation against the loopback `TestIssuer`: claims mapping, every rejected token
//! shape, key rotation with a rate-limited refetch, and provider failures.

use std::time::{Duration, Instant};

use feast_auth::testing::{AUDIENCE, BadToken, TestIssuer, unsigned_token};
use feast_auth::{AuthError, OidcSettings, OidcValidator};
use serde_json::json;

fn validator(settings: OidcSettings) -> OidcValidator {
    OidcValidator::new(settings).expect("validator")
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_map_claims_like_feast() {
    let idp = TestIssuer::start().await;
    let v = validator(idp.settings());
    let token = idp.token(json!({
        "preferred_username": "alice",
        "resource_access": {AUDIENCE: {"roles": ["reader", "writer"]}},
        "roles": ["writer", "admin"],
        "groups": ["team-a"],
    }));
    let user = v.validate(&token).await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.roles, ["reader", "writer", "admin"]);
    assert_eq!(user.groups, ["team-a"]);
    assert!(user.namespaces.is_empty());

    let es = idp.token_with_kid("ec-1", json!({"preferred_username": null, "azp": "svc"}));
    assert_eq!(v.validate(&es).await.unwrap().username, "svc");
    // One discovery + one JWKS fetch serve every later validation.
    for _ in 0..20 {
        v.validate(&token).await.unwrap();
    }
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn every_bad_token_is_rejected_with_its_reason() {
    let idp = TestIssuer::start().await;
    let v = validator(OidcSettings {
        unknown_kid_refresh_interval: Duration::ZERO,
        ..idp.settings()
    });
    for kind in BadToken::ALL {
        let got = v
            .validate(&idp.bad_token(kind, "mallory"))
            .await
            .unwrap_err();
        let ok = match kind {
            BadToken::Expired => got == AuthError::Expired,
            BadToken::NotYetValid => got == AuthError::NotYetValid,
            BadToken::WrongAudience => got == AuthError::InvalidAudience,
            BadToken::WrongIssuer => got == AuthError::InvalidIssuer,
            BadToken::UnknownKid => matches!(got, AuthError::UnknownKey(_)),
            BadToken::BadSignature => got == AuthError::InvalidSignature,
            BadToken::AlgNone => got == AuthError::UnsupportedAlgorithm("none".into()),
            BadToken::Hs256 => got == AuthError::UnsupportedAlgorithm("HS256".into()),
            BadToken::Malformed => matches!(got, AuthError::MalformedToken(_)),
        };
        assert!(ok, "{kind:?} gave {got:?}");
        assert_eq!(
            got.http_status(),
            http::StatusCode::UNAUTHORIZED,
            "{kind:?}"
        );
    }
    // Missing exp is refused (stricter than PyJWT, which only checks exp when present).
    let no_exp = idp.token(json!({"exp": null, "sub": "x"}));
    assert_eq!(
        v.validate(&no_exp).await.unwrap_err(),
        AuthError::MissingClaim("exp".into())
    );
    // Within the 10 s leeway, expiry and nbf are tolerated.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let skewed = idp.token(json!({"exp": now - 5, "nbf": now + 5, "sub": "x"}));
    assert!(v.validate(&skewed).await.is_ok());
}

#[tokio::test]
async fn intra_communication_token_is_rejected_like_any_unsigned_token() {
    // feast#6785: Feast trusts an unsigned token whose preferred_username equals
    // $INTRA_COMMUNICATION_BASE64. feast-rs has no such path, with or without the variable.
    let idp = TestIssuer::start().await;
    let v = validator(idp.settings());
    let secret = "aW50cmEtc2VydmVyLWNvbW11bmljYXRpb24=";
    // SAFETY: nothing in this test binary reads the environment concurrently; feast-auth never
    // reads this variable at all, the point is that setting it changes nothing.
    unsafe { std::env::set_var("INTRA_COMMUNICATION_BASE64", secret) };
    let forged = unsigned_token(&json!({"preferred_username": secret}));
    assert_eq!(
        v.validate(&forged).await.unwrap_err(),
        AuthError::UnsupportedAlgorithm("none".into())
    );
    // Feast's kubernetes-flavoured intra token too.
    let forged_k8s = unsigned_token(&json!({"sub": format!(":::{secret}")}));
    assert!(v.validate(&forged_k8s).await.is_err());
    // And a none token with a signature segment glued on.
    let glued = format!("{forged}c2lnbmF0dXJl");
    assert!(v.validate(&glued).await.is_err());
}

#[tokio::test]
async fn rotation_refetches_once_and_unknown_kids_are_rate_limited() {
    let idp = TestIssuer::start().await;
    let v = validator(OidcSettings {
        unknown_kid_refresh_interval: Duration::from_secs(3600),
        ..idp.settings()
    });
    let old = idp.user_token("alice", &[], &[]);
    v.validate(&old).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 1);

    let new_kid = idp.rotate();
    let new = idp.user_token("bob", &[], &[]);
    assert!(new_kid != "rsa-1");
    assert_eq!(v.validate(&new).await.unwrap().username, "bob");
    assert_eq!(idp.jwks_fetches(), 2, "rotation refetches once");
    assert_eq!(v.validate(&old).await.unwrap().username, "alice");

    // Unknown kids within the interval do not hammer the IdP.
    for _ in 0..10 {
        let t = idp.bad_token(BadToken::UnknownKid, "x");
        assert!(matches!(
            v.validate(&t).await,
            Err(AuthError::UnknownKey(_))
        ));
    }
    assert_eq!(idp.jwks_fetches(), 2);
    // A second rotation inside the interval is not picked up before the cache expires.
    idp.rotate();
    let newer = idp.user_token("carol", &[], &[]);
    assert!(matches!(
        v.validate(&newer).await,
        Err(AuthError::UnknownKey(_))
    ));
}

#[tokio::test]
async fn retired_keys_stop_verifying_when_the_cache_expires() {
    let idp = TestIssuer::start().await;
    let v = validator(OidcSettings {
        jwks_cache_lifespan: Duration::from_millis(1),
        unknown_kid_refresh_interval: Duration::ZERO,
        ..idp.settings()
    });
    let old = idp.user_token("alice", &[], &[]);
    v.validate(&old).await.unwrap();
    idp.rotate();
    idp.retire("rsa-1");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        v.validate(&old).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert!(v.validate(&idp.user_token("bob", &[], &[])).await.is_ok());
}

#[tokio::test]
async fn audience_and_issuer_are_checked_only_when_configured() {
    let idp = TestIssuer::start().await;
    let lax = validator(OidcSettings::new(idp.discovery_url()));
    for kind in [BadToken::WrongAudience, BadToken::WrongIssuer] {
        assert!(
            lax.validate(&idp.bad_token(kind, "x")).await.is_ok(),
            "{kind:?}"
        );
    }
    // Without client_id, resource_access roles are not read.
    let t = idp.user_token("alice", &["reader"], &[]);
    assert!(lax.validate(&t).await.unwrap().roles.is_empty());
}

#[tokio::test]
async fn token_endpoint_grants_validate() {
    let idp = TestIssuer::start().await;
    idp.add_client(
        "online-server",
        "s3cret",
        json!({"roles": ["feast-writer"]}),
    );
    idp.add_user(
        "alice",
        "pw",
        json!({"resource_access": {AUDIENCE: {"roles": ["reader"]}}}),
    );
    let v = validator(idp.settings());

    let cc = idp
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "online-server"),
            ("client_secret", "s3cret"),
        ])
        .await
        .unwrap();
    let user = v
        .validate(cc["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(user.username, "online-server");
    assert_eq!(user.roles, ["feast-writer"]);

    let pw = idp
        .request_token(&[
            ("grant_type", "password"),
            ("client_id", "online-server"),
            ("client_secret", "s3cret"),
            ("username", "alice"),
            ("password", "pw"),
        ])
        .await
        .unwrap();
    let user = v
        .validate(pw["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.roles, ["reader"]);

    let denied = idp
        .request_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "online-server"),
            ("client_secret", "wrong"),
        ])
        .await;
    assert!(matches!(denied, Err(AuthError::ProviderUnavailable(_))));
}

#[tokio::test]
async fn provider_failures_are_unavailable_not_internal() {
    // Nothing listens here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://{}/.well-known/openid-configuration",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let idp = TestIssuer::start().await;
    let v = validator(OidcSettings::new(dead));
    let e = v
        .validate(&idp.user_token("a", &[], &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::ProviderUnavailable(_)), "{e:?}");
    assert_eq!(e.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);

    // A discovery document without the endpoints Feast requires.
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(|| async { axum::Json(json!({"jwks_uri": "http://127.0.0.1:1/jwks"})) }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/openid-configuration",
        l.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    let v = validator(OidcSettings::new(url));
    let e = v
        .validate(&idp.user_token("a", &[], &[]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("token_endpoint"), "{e}");
    // Garbage never reaches the network.
    assert!(matches!(
        v.validate("a.b").await,
        Err(AuthError::MalformedToken(_))
    ));
}

#[tokio::test]
async fn cached_validation_is_fast() {
    let idp = TestIssuer::start().await;
    let v = validator(idp.settings());
    let t = idp.user_token("alice", &["reader"], &["g"]);
    v.validate(&t).await.unwrap();
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        v.validate(&t).await.unwrap();
    }
    let per = start.elapsed() / n;
    eprintln!("cached RS256 validation: {per:?} per token (debug build)");
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_does_not_block_requests_with_known_keys() {
    let idp = TestIssuer::start().await;
    let v = std::sync::Arc::new(validator(OidcSettings {
        jwks_request_timeout: Duration::from_secs(5),
        unknown_kid_refresh_interval: Duration::ZERO,
        ..idp.settings()
    }));
    let known = idp.user_token("alice", &[], &[]);
    v.validate(&known).await.unwrap();
    idp.set_jwks_delay(Duration::from_millis(1500));
    // An unknown kid starts a refresh that holds the refresh lock for 1.5 s.
    let unknown = idp.bad_token(BadToken::UnknownKid, "x");
    let slow = {
        let v = v.clone();
        tokio::spawn(async move { v.validate(&unknown).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    for _ in 0..10 {
        v.validate(&known).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_millis(700),
        "known-key validations waited for the refresh: {:?}",
        start.elapsed()
    );
    assert!(matches!(slow.await.unwrap(), Err(AuthError::UnknownKey(_))));
}

#[tokio::test]
async fn a_hanging_jwks_endpoint_times_out_as_unavailable() {
    let idp = TestIssuer::start().await;
    idp.set_jwks_delay(Duration::from_secs(5));
    let v = validator(OidcSettings {
        jwks_request_timeout: Duration::from_millis(200),
        ..idp.settings()
    });
    let start = Instant::now();
    let e = v
        .validate(&idp.user_token("a", &[], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::ProviderUnavailable(m) if m.contains("timed out")),
        "{e:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}
