//! Kubernetes identities against a loopback Kubernetes API (TokenReview and RBAC objects as
//! the real API serves them): `auth.type: kubernetes`, and service-account tokens reaching an
//! OIDC server.

use std::time::Duration;

use feast_auth::testing::{TestIssuer, unsigned_token};
use feast_auth::testing_k8s::TestKubernetes;
use feast_auth::{AuthError, KubernetesValidator, OidcValidator};
use serde_json::json;

/// The cluster every test starts from: the feast-rs server runs in namespace `feast`.
async fn cluster() -> (TestKubernetes, tempfile::TempDir, std::path::PathBuf) {
    let k8s = TestKubernetes::start().await;
    // Service accounts get Feast roles through RoleBindings in the server's namespace.
    k8s.add_role_binding(
        "feast",
        "online-reads",
        "feast-reader",
        false,
        &[("ServiceAccount", "online", Some("team-a"))],
        &[],
    );
    k8s.add_role_binding(
        "feast",
        "ignored-elsewhere",
        "feast-writer",
        false,
        &[("ServiceAccount", "online", Some("team-b"))],
        &[],
    );
    // Groups with access to team-a: a RoleBinding there, and a ClusterRole that reads namespaces.
    k8s.add_role_binding(
        "team-a",
        "editors",
        "edit",
        true,
        &[("Group", "team-a-editors", None)],
        &[],
    );
    k8s.add_cluster_role(
        "namespace-reader",
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]),
    );
    k8s.add_cluster_role(
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    );
    k8s.add_cluster_role_binding(
        "ns-readers",
        "namespace-reader",
        &[("Group", "auditors", None)],
    );
    k8s.add_cluster_role_binding("pod-readers", "pod-reader", &[("Group", "ops", None)]);
    // Users: roles from bindings naming them or their groups, anywhere.
    k8s.add_role_binding(
        "team-a",
        "alice-admin",
        "admin",
        true,
        &[("User", "alice", None)],
        &[],
    );
    k8s.add_role_binding(
        "team-c",
        "dashboard-permissions-alice",
        "view",
        true,
        &[("User", "alice", None)],
        &[("opendatahub.io/dashboard", "true")],
    );
    k8s.add_cluster_role_binding("data-scientists", "feast-reader", &[("Group", "ds", None)]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = k8s.kubeconfig(dir.path(), "feast");
    (k8s, dir, kubeconfig)
}

#[tokio::test]
async fn service_accounts_get_roles_from_the_servers_namespace() {
    let (k8s, _dir, kubeconfig) = cluster().await;
    let v = KubernetesValidator::from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let token = k8s.service_account_token("team-a", "online");
    let user = v.validate(&token).await.unwrap();
    assert_eq!(user.username, "team-a:online");
    assert_eq!(user.roles, ["feast-reader"]);
    assert_eq!(user.namespaces, ["team-a"]);
    // Review groups, plus the groups with access to the namespace.
    assert_eq!(
        user.groups,
        [
            "auditors",
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "team-a-editors"
        ]
    );
    // Reviewed once, then remembered.
    v.validate(&token).await.unwrap();
    assert_eq!(k8s.reviews(), 1);
}

#[tokio::test]
async fn users_get_roles_from_every_binding_naming_them_or_their_groups() {
    let (k8s, _dir, kubeconfig) = cluster().await;
    let v = KubernetesValidator::from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let user = v.validate(&k8s.user_token("alice", &["ds"])).await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.roles, ["admin", "feast-reader", "view"]);
    assert_eq!(user.groups, ["ds", "system:authenticated"]);
    // Project membership: the admin binding and the labelled dashboard binding.
    assert_eq!(user.namespaces, ["team-a", "team-c"]);

    let bob = v.validate(&k8s.user_token("bob", &["ops"])).await.unwrap();
    assert_eq!(bob.roles, ["pod-reader"]);
    assert!(bob.namespaces.is_empty());
}

#[tokio::test]
async fn tokens_the_cluster_does_not_authenticate_are_rejected() {
    let (k8s, _dir, kubeconfig) = cluster().await;
    let v = KubernetesValidator::from_kubeconfig(&kubeconfig)
        .await
        .unwrap()
        .cache_ttl(Duration::ZERO);
    let err = v.validate("made-up").await.unwrap_err();
    assert!(
        matches!(&err, AuthError::Rejected(m) if m.contains("Kubernetes token validation failed")),
        "{err}"
    );
    // Feast trusted the unverified `sub` of a JWT; here only the review counts.
    let forged = unsigned_token(&json!({"sub": "system:serviceaccount:team-a:online"}));
    assert!(matches!(
        v.validate(&forged).await,
        Err(AuthError::Rejected(_))
    ));
    // A revoked service account stops working once its cached review expires.
    let token = k8s.service_account_token("team-a", "online");
    v.validate(&token).await.unwrap();
    k8s.revoke(&token);
    assert!(matches!(
        v.validate(&token).await,
        Err(AuthError::Rejected(_))
    ));
    // 401s, not 500s.
    assert_eq!(err.http_status(), http::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable() {
    let (k8s, _dir, kubeconfig) = cluster().await;
    drop(k8s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v = KubernetesValidator::from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let err = v.validate("whatever").await.unwrap_err();
    assert!(matches!(err, AuthError::ProviderUnavailable(_)), "{err}");
    assert_eq!(err.grpc_code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn oidc_servers_review_service_account_tokens_with_the_cluster() {
    let (k8s, _dir, kubeconfig) = cluster().await;
    let idp = TestIssuer::start().await;
    let kubernetes = std::sync::Arc::new(
        KubernetesValidator::from_kubeconfig(&kubeconfig)
            .await
            .unwrap(),
    );
    let v = OidcValidator::new(idp.settings())
        .unwrap()
        .with_kubernetes(kubernetes);
    // A projected service-account token (the cluster signs it; the IdP does not know it).
    let claims = json!({"sub": "system:serviceaccount:team-a:trainer", "aud": ["https://kubernetes.default.svc"],
                        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "trainer"}}});
    let sa_token = rs256_shaped(&claims, "cluster-signature");
    k8s.register(
        &sa_token,
        "system:serviceaccount:team-a:trainer",
        &["system:serviceaccounts:team-a"],
    );
    let user = v.validate(&sa_token).await.unwrap();
    assert_eq!(user.username, "system:serviceaccount:team-a:trainer");
    assert_eq!(user.namespaces, ["team-a"]);
    assert!(user.roles.is_empty() && user.groups.is_empty());
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "service-account tokens never reach the IdP's keys"
    );

    // The same claims the cluster never issued: refused.
    let forged = rs256_shaped(&claims, "forged-signature");
    assert!(matches!(
        v.validate(&forged).await,
        Err(AuthError::Rejected(_))
    ));
    // Ordinary IdP tokens are unaffected.
    let u = v
        .validate(&idp.user_token("ann", &["reader"], &[]))
        .await
        .unwrap();
    assert_eq!(u.username, "ann");
}

/// A JWT with an RS256 header, `claims` and `signature` (opaque to feast-rs: the cluster's
/// review decides).
fn rs256_shaped(claims: &serde_json::Value, signature: &str) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({"alg": "RS256", "kid": "cluster-key"});
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature.as_bytes())
    )
}
