//! Added latency of authentication on the request path with a cached JWKS: header extraction
//! plus RS256 / ES256 verification and claims mapping (a new token) or the verified-token
//! lookup (a token seen before), and the permission check.
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
        // Distinct tokens measure a first verification; the same tokens again measure what
        // a client that reuses its token (every SDK does, until it expires) costs per request.
        let n = 2_000;
        for (alg, mint) in [
            (
                "RS256",
                Box::new(|i: u32| idp.user_token(&format!("user{i}"), &["reader"], &["g"]))
                    as Box<dyn Fn(u32) -> String>,
            ),
            (
                "ES256",
                Box::new(|i: u32| {
                    idp.token_with_kid(
                        "ec-1",
                        serde_json::json!({"preferred_username": format!("user{i}")}),
                    )
                }),
            ),
        ] {
            let headers: Vec<http::HeaderMap> = (0..n)
                .map(|i| {
                    let mut h = http::HeaderMap::new();
                    h.insert(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", mint(i)).parse().expect("header"),
                    );
                    h
                })
                .collect();
            // The JWKS is fetched once before timing.
            let warm = &headers[0];
            auth.authenticate(warm).await.expect("valid");
            let start = Instant::now();
            for h in &headers[1..] {
                std::hint::black_box(auth.authenticate(h).await.expect("valid"));
            }
            report(
                &format!("authenticate {alg}, new token"),
                n - 1,
                start.elapsed(),
            );
            let rounds = 25;
            let start = Instant::now();
            for _ in 0..rounds {
                for h in &headers {
                    std::hint::black_box(auth.authenticate(h).await.expect("valid"));
                }
            }
            report(
                &format!("authenticate {alg}, token seen before"),
                n * rounds,
                start.elapsed(),
            );
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
