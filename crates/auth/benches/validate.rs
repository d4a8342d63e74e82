//! Added latency of authentication on the request path with a cached JWKS: header extraction
//! plus RS256 / ES256 verification and claims mapping, and the permission check.
//! `cargo bench -p feast-auth --features testing` (a timed loop; no criterion dependency).

use std::time::{Duration, Instant};

use feast_auth::testing::TestIssuer;
use feast_auth::{
    Action, Authenticator, Authorizer, OidcValidator, ResourceKind, ResourceRef, User,
};
use feast_proto::core::permission_spec::Type;
use feast_proto::core::policy::PolicyType;
use feast_proto::core::{Permission, PermissionSpec, Policy, RoleBasedPolicy};

fn report(name: &str, n: u32, elapsed: Duration) {
    println!(
        "{name:<40} {:>10.2} µs/op  ({n} ops)",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let idp = TestIssuer::start().await;
        let auth = Authenticator::Oidc(std::sync::Arc::new(
            OidcValidator::new(idp.settings()).expect("validator"),
        ));
        for (name, token) in [
            (
                "authenticate RS256 (cached JWKS)",
                idp.user_token("alice", &["reader"], &["g"]),
            ),
            (
                "authenticate ES256 (cached JWKS)",
                idp.token_with_kid("ec-1", serde_json::json!({"preferred_username": "alice"})),
            ),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
            auth.authenticate(&headers).await.expect("valid");
            let n = 5_000;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(auth.authenticate(&headers).await.expect("valid"));
            }
            report(name, n, start.elapsed());
        }

        let perms: Vec<Permission> = (0..20)
            .map(|i| Permission {
                spec: Some(PermissionSpec {
                    name: format!("p{i}"),
                    types: vec![Type::FeatureView as i32],
                    name_patterns: vec![format!("team{i}_.*")],
                    actions: vec![Action::ReadOnline as i32],
                    policy: Some(Policy {
                        policy_type: Some(PolicyType::RoleBasedPolicy(RoleBasedPolicy {
                            roles: vec![format!("team{i}")],
                        })),
                        ..Policy::default()
                    }),
                    ..PermissionSpec::default()
                }),
                meta: None,
            })
            .collect();
        let authz = Authorizer::new();
        let user = User::new("alice").with_roles(["team19"]);
        let r = ResourceRef::new(ResourceKind::FeatureView, "team19_stats");
        let n = 100_000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(authz.check(&user, &perms, r, &[Action::ReadOnline]).is_ok());
        }
        report("check, 20 permissions, last grants", n, start.elapsed());
    });
}
