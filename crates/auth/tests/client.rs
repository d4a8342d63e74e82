//! Client-side tokens (PROTOCOLS.md §5.2) against the loopback test issuer: what a
//! feature_store.yaml's `auth:` makes a feast-rs client send, and that servers accept it.

use std::path::Path;

use feast_auth::testing::TestIssuer;
use feast_auth::{AuthError, OidcValidator, TokenProvider};
use feast_core::config::RepoConfig;
use serde_json::json;

fn auth_config(auth_yaml: &str) -> feast_core::config::AuthConfig {
    let yaml = format!(
        "project: p\nregistry: data/registry.db\nprovider: local\nauth:\n{}",
        auth_yaml
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    RepoConfig::from_yaml_str(&yaml, "feature_store.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{yaml}: {e}"))
        .auth
}

fn provider(auth_yaml: &str) -> std::sync::Arc<TokenProvider> {
    TokenProvider::from_config(&auth_config(auth_yaml))
        .unwrap()
        .expect("a provider for an auth config")
}

#[tokio::test]
async fn client_credentials_token_is_fetched_once_and_renewed_after_a_refusal() {
    let issuer = TestIssuer::start().await;
    issuer.add_client(
        "online-server",
        "s3cret",
        json!({"roles": ["feast-writer"]}),
    );
    let p = provider(&format!(
        "type: oidc\nclient_id: online-server\nclient_secret: s3cret\nauth_discovery_url: {}",
        issuer.discovery_url()
    ));
    let first = p.token().await.unwrap();
    let again = p.token().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        issuer.token_requests(),
        1,
        "the token is reused until it expires"
    );

    let validator = OidcValidator::new(issuer.settings()).unwrap();
    let user = validator.validate(&first).await.unwrap();
    assert_eq!(user.username, "online-server");
    assert_eq!(user.roles, ["feast-writer"]);

    p.invalidate();
    p.token().await.unwrap();
    assert_eq!(
        issuer.token_requests(),
        2,
        "a refused token is fetched again"
    );
    assert_eq!(
        p.header_value().await.unwrap().to_str().unwrap(),
        format!("Bearer {}", p.token().await.unwrap())
    );
}

#[tokio::test]
async fn password_grant_carries_the_users_identity() {
    let issuer = TestIssuer::start().await;
    issuer.add_client("feast-cli", "cli-secret", json!({}));
    issuer.add_user("ann", "pw", json!({"groups": ["analysts"]}));
    let p = provider(&format!(
        "type: oidc\nclient_id: feast-cli\nclient_secret: cli-secret\nusername: ann\npassword: pw\nauth_discovery_url: {}",
        issuer.discovery_url()
    ));
    let token = p.token().await.unwrap();
    let user = OidcValidator::new(issuer.settings())
        .unwrap()
        .validate(&token)
        .await
        .unwrap();
    assert_eq!(user.username, "ann");
    assert_eq!(user.groups, ["analysts"]);
}

#[tokio::test]
async fn refused_credentials_say_why() {
    let issuer = TestIssuer::start().await;
    issuer.add_client("svc", "right", json!({}));
    let p = provider(&format!(
        "type: oidc\nclient_id: svc\nclient_secret: wrong\nauth_discovery_url: {}",
        issuer.discovery_url()
    ));
    let err = p.token().await.unwrap_err();
    assert!(
        matches!(&err, AuthError::ProviderUnavailable(m) if m.contains("invalid_client")),
        "{err}"
    );
}

#[tokio::test]
async fn static_and_environment_tokens() {
    let p = provider("type: oidc\ntoken: abc.def.ghi");
    assert_eq!(p.token().await.unwrap(), "abc.def.ghi");

    // SAFETY: this variable is read by this test only.
    unsafe { std::env::set_var("FEAST_RS_TEST_CLIENT_TOKEN", "from-env") };
    let p = provider("type: oidc\ntoken_env_var: FEAST_RS_TEST_CLIENT_TOKEN");
    assert_eq!(p.token().await.unwrap(), "from-env");
    let p = provider("type: oidc\ntoken_env_var: FEAST_RS_TEST_CLIENT_TOKEN_UNSET");
    assert!(matches!(p.token().await, Err(AuthError::Config(m)) if m.contains("not set")));

    let p = provider("type: kubernetes\nuser_token: k8s-user");
    assert_eq!(p.token().await.unwrap(), "k8s-user");

    assert!(
        TokenProvider::from_config(&auth_config("type: no_auth"))
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn service_account_token_file_is_read_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "sa-token-1\n").unwrap();
    let p =
        TokenProvider::from_config_with_service_account(&auth_config("type: kubernetes"), &file)
            .unwrap()
            .unwrap();
    assert_eq!(p.token().await.unwrap(), "sa-token-1");
    // Kubelet rotates the file in place.
    std::fs::write(&file, "sa-token-2").unwrap();
    assert_eq!(p.token().await.unwrap(), "sa-token-2");
}
