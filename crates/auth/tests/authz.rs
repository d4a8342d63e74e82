//! Feast's permission semantics (enforcer.py, matcher.py, policy.py, decision.py), table-driven
//! with the cases of Feast's `tests/unit/permissions` suite rebuilt from the Python sources.

use std::collections::BTreeMap;

use feast_auth::authz::actions;
use feast_auth::{Action, Authorizer, ResourceKind, ResourceRef, User};
use feast_proto::core::permission_spec::Type as T;
use feast_proto::core::policy::PolicyType;
use feast_proto::core::{
    CombinedGroupNamespacePolicy, GroupBasedPolicy, NamespaceBasedPolicy, Permission,
    PermissionSpec, Policy, RoleBasedPolicy,
};
use pretty_assertions::assert_eq;

#[derive(Clone)]
enum Pol {
    AllowAll,
    Roles(&'static [&'static str]),
    Groups(&'static [&'static str]),
    Namespaces(&'static [&'static str]),
    Combined(&'static [&'static str], &'static [&'static str]),
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn perm(name: &str, types: &[T], patterns: &[&str], acts: &[Action], policy: Pol) -> Permission {
    let policy_type = match policy {
        Pol::AllowAll => None,
        Pol::Roles(r) => Some(PolicyType::RoleBasedPolicy(RoleBasedPolicy {
            roles: strings(r),
        })),
        Pol::Groups(g) => Some(PolicyType::GroupBasedPolicy(GroupBasedPolicy {
            groups: strings(g),
        })),
        Pol::Namespaces(n) => Some(PolicyType::NamespaceBasedPolicy(NamespaceBasedPolicy {
            namespaces: strings(n),
        })),
        Pol::Combined(g, n) => Some(PolicyType::CombinedGroupNamespacePolicy(
            CombinedGroupNamespacePolicy {
                groups: strings(g),
                namespaces: strings(n),
            },
        )),
    };
    Permission {
        spec: Some(PermissionSpec {
            name: name.into(),
            project: "p".into(),
            types: types.iter().map(|t| *t as i32).collect(),
            name_patterns: strings(patterns),
            actions: acts.iter().map(|a| *a as i32).collect(),
            policy: Some(Policy {
                policy_type,
                ..Policy::default()
            }),
            ..PermissionSpec::default()
        }),
        meta: None,
    }
}

fn fv(name: &str) -> ResourceRef<'_> {
    ResourceRef::new(ResourceKind::FeatureView, name)
}

fn err(r: Result<(), feast_core::error::FeastError>) -> String {
    let e = r.expect_err("expected a denial");
    assert_eq!(e.class, feast_core::error::ErrorClass::FeastPermissionError);
    e.message
}

#[test]
fn no_permissions_lets_named_users_through_and_strict_denies() {
    let a = Authorizer::new();
    let u = User::new("alice");
    assert!(a.check(&u, &[], fv("fv"), actions::ALL).is_ok());
    assert_eq!(
        err(a.check(&User::default(), &[], fv("fv"), &[Action::Describe])),
        "Permission error:\nNo permissions defined and no authenticated user context. Access denied."
    );
    let s = Authorizer::strict();
    assert!(err(s.check(&u, &[], fv("fv"), &[Action::Describe])).contains("strict"));
    assert!(
        s.filter(&u, &[], vec!["a"], |n| fv(n), &[Action::Describe])
            .is_err()
    );
    assert_eq!(
        a.filter(&u, &[], vec!["a", "b"], |n| fv(n), &[Action::Describe])
            .unwrap(),
        vec!["a", "b"]
    );
}

#[test]
fn type_match_follows_python_subclasses() {
    use ResourceKind as K;
    let cases: &[(&[T], K, bool)] = &[
        (&[T::FeatureView], K::FeatureView, true),
        (&[T::FeatureView], K::BatchFeatureView, true),
        (&[T::FeatureView], K::StreamFeatureView, true),
        (&[T::FeatureView], K::OnDemandFeatureView, false),
        (&[T::FeatureView], K::LabelView, false),
        (&[T::BatchFeatureView], K::FeatureView, false),
        (&[T::StreamFeatureView], K::StreamFeatureView, true),
        (&[T::OnDemandFeatureView], K::OnDemandFeatureView, true),
        (&[T::LabelView], K::LabelView, true),
        (&[T::Entity, T::DataSource], K::DataSource, true),
        (&[T::Entity, T::DataSource], K::FeatureService, false),
        (&[T::Project], K::Project, true),
        (&[T::Permission], K::Permission, true),
        (&[T::SavedDataset], K::ValidationReference, false),
        (&[T::ValidationReference], K::ValidationReference, true),
        (&[], K::SavedDataset, true),
        (&[], K::LabelView, true),
    ];
    let a = Authorizer::new();
    for (types, kind, want) in cases {
        let p = perm("p", types, &[], actions::ALL, Pol::AllowAll);
        let r = ResourceRef::new(*kind, "x");
        assert_eq!(a.match_resource(&p, &r), *want, "{types:?} vs {kind:?}");
    }
}

#[test]
fn name_patterns_full_match_any() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&[], "anything", true),
        (&["test"], "test", true),
        (&["test"], "test1", false),
        (&["test"], "a_test", false),
        (&["test.*"], "test1", true),
        (&[".*test"], "a_test", true),
        (&[".*test.*"], "a_test_b", true),
        (&["driver_.*", "customer_.*"], "customer_stats", true),
        (&["driver_.*", "customer_.*"], "orders", false),
        (&["a|b"], "ab", false),
        (&["a|b"], "b", true),
        (&[" padded "], "padded", true),
        (&["(unclosed"], "(unclosed", false),
    ];
    let a = Authorizer::new();
    for (patterns, name, want) in cases {
        let p = perm(
            "p",
            &[T::FeatureView],
            patterns,
            actions::ALL,
            Pol::AllowAll,
        );
        assert_eq!(
            a.match_resource(&p, &fv(name)),
            *want,
            "{patterns:?} vs {name}"
        );
        // Cached compilation gives the same answer.
        assert_eq!(a.match_resource(&p, &fv(name)), *want);
    }
}

#[test]
fn required_tags_match_the_resource_tags() {
    let mut p = perm("p", &[T::FeatureView], &[], actions::ALL, Pol::AllowAll);
    p.spec.as_mut().unwrap().required_tags =
        BTreeMap::from([("team".into(), "a".into()), ("env".into(), "prod".into())]);
    let a = Authorizer::new();
    let both = BTreeMap::from([
        ("team".to_string(), "a".to_string()),
        ("env".to_string(), "prod".to_string()),
        ("x".to_string(), "y".to_string()),
    ]);
    let wrong = BTreeMap::from([
        ("team".to_string(), "b".to_string()),
        ("env".to_string(), "prod".to_string()),
    ]);
    let partial = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert!(a.match_resource(&p, &fv("f").with_tags(&both)));
    assert!(!a.match_resource(&p, &fv("f").with_tags(&wrong)));
    assert!(!a.match_resource(&p, &fv("f").with_tags(&partial)));
    assert!(!a.match_resource(&p, &fv("f")));
}

#[test]
fn every_requested_action_must_be_allowed() {
    let reader = User::new("r").with_roles(["reader"]);
    let perms = [perm(
        "read",
        &[T::FeatureView],
        &[],
        &[Action::Describe, Action::ReadOnline],
        Pol::Roles(&["reader"]),
    )];
    let a = Authorizer::new();
    assert!(
        a.check(&reader, &perms, fv("f"), &[Action::Describe])
            .is_ok()
    );
    assert!(
        a.check(
            &reader,
            &perms,
            fv("f"),
            &[Action::Describe, Action::ReadOnline]
        )
        .is_ok()
    );
    assert_eq!(
        err(a.check(
            &reader,
            &perms,
            fv("f"),
            &[Action::ReadOnline, Action::WriteOnline]
        )),
        "Permission error:\nNo permissions defined to manage [<AuthzedAction.READ_ONLINE: 'read_online'>, \
         <AuthzedAction.WRITE_ONLINE: 'write_online'>] on <class 'feast.feature_view.FeatureView'>/f."
    );
}

/// Feast's `test_security_manager.py` users and permissions, as a table.
#[test]
fn security_manager_matrix() {
    let perms = vec![
        perm(
            "read_permission",
            &[T::FeatureView],
            &[],
            &[Action::Describe],
            Pol::Roles(&["reader"]),
        ),
        perm(
            "write_permission",
            &[T::FeatureView],
            &[],
            &[Action::Update],
            Pol::Roles(&["writer"]),
        ),
        perm(
            "special",
            &[T::FeatureView],
            &["special.*"],
            &[Action::Describe, Action::Update],
            Pol::Roles(&["admin", "special-reader"]),
        ),
    ];
    let r = User::new("r").with_roles(["reader"]);
    let w = User::new("w").with_roles(["writer"]);
    let rw = User::new("rw").with_roles(["reader", "writer"]);
    let special = User::new("special").with_roles(["special-reader"]);
    let admin = User::new("admin").with_roles(["reader", "writer", "admin"]);
    let nobody = User::new("nobody");
    let a = Authorizer::new();
    let d = [Action::Describe];
    let u = [Action::Update];
    let du = [Action::Describe, Action::Update];
    let cases: &[(&User, &str, &[Action], bool)] = &[
        (&r, "fv1", &d, true),
        (&r, "fv1", &u, false),
        (&r, "fv1", &du, false),
        (&w, "fv1", &d, false),
        (&w, "fv1", &u, true),
        (&rw, "fv1", &d, true),
        (&rw, "fv1", &u, true),
        // No single permission has both actions for a non-special name.
        (&rw, "fv1", &du, false),
        (&special, "special1", &du, true),
        (&special, "special1", &d, true),
        (&special, "fv1", &d, false),
        (&admin, "special1", &du, true),
        (&nobody, "fv1", &d, false),
        (&nobody, "special1", &d, false),
    ];
    for (user, name, acts, want) in cases {
        let got = a.check(user, &perms, fv(name), acts).is_ok();
        assert_eq!(got, *want, "{} {name} {acts:?}", user.username);
    }
}

#[test]
fn affirmative_decision_and_explanations() {
    let perms = vec![
        perm(
            "p1",
            &[T::FeatureView],
            &[],
            &[Action::Describe],
            Pol::Roles(&["a", "b"]),
        ),
        perm("p2", &[], &[], &[Action::Describe], Pol::Groups(&["g"])),
        perm(
            "p3",
            &[T::FeatureView],
            &[],
            &[Action::Describe],
            Pol::Namespaces(&["ns"]),
        ),
        perm(
            "p4",
            &[T::FeatureView],
            &[],
            &[Action::Describe],
            Pol::Combined(&["g2"], &["ns2"]),
        ),
    ];
    let a = Authorizer::new();
    // Any one grant suffices, in any position.
    for u in [
        User::new("x").with_roles(["b"]),
        User::new("x").with_groups(["g"]),
        User::new("x").with_namespaces(["ns"]),
        User::new("x").with_groups(["g2"]),
        User::new("x").with_namespaces(["ns2"]),
    ] {
        assert!(
            a.check(&u, &perms, fv("f"), &[Action::Describe]).is_ok(),
            "{u:?}"
        );
    }
    assert_eq!(
        err(a.check(&User::new("x"), &perms, fv("f"), &[Action::Describe])),
        "Permission error:\n\
         Permission p1 denied execution of ['DESCRIBE'] to FeatureView:f: Requires roles ['a', 'b'],\
         Permission p2 denied execution of ['DESCRIBE'] to FeatureView:f: User is not added into the permitted groups,\
         Permission p3 denied execution of ['DESCRIBE'] to FeatureView:f: User is not added into the permitted namespaces,\
         Permission p4 denied execution of ['DESCRIBE'] to FeatureView:f: User must be in at least one of the permitted groups or namespaces"
    );
}

#[test]
fn explanation_names_the_concrete_class() {
    let perms = [perm(
        "ds",
        &[T::DataSource],
        &[],
        &[Action::Describe],
        Pol::Roles(&["it's"]),
    )];
    let a = Authorizer::new();
    let r = ResourceRef::new(ResourceKind::DataSource, "src")
        .with_python_class("feast.infra.offline_stores.file_source.FileSource");
    assert_eq!(
        err(a.check(
            &User::new("x"),
            &perms,
            r,
            &[Action::Describe, Action::ReadOffline]
        )),
        "Permission error:\nNo permissions defined to manage [<AuthzedAction.DESCRIBE: 'describe'>, \
         <AuthzedAction.READ_OFFLINE: 'read_offline'>] on \
         <class 'feast.infra.offline_stores.file_source.FileSource'>/src."
    );
    assert_eq!(
        err(a.check(&User::new("x"), &perms, r, &[Action::Describe])),
        "Permission error:\nPermission ds denied execution of ['DESCRIBE'] to FileSource:src: \
         Requires roles [\"it's\"]"
    );
    let bfv = ResourceRef::new(ResourceKind::BatchFeatureView, "b");
    let perms = [perm(
        "fv",
        &[T::FeatureView],
        &[],
        &[Action::Describe],
        Pol::Roles(&["r"]),
    )];
    assert_eq!(
        err(a.check(&User::new("x"), &perms, bfv, &[Action::Describe])),
        "Permission error:\nPermission fv denied execution of ['DESCRIBE'] to BatchFeatureView:b: \
         Requires roles ['r']"
    );
}

#[test]
fn empty_policy_is_allow_all() {
    let perms = [perm("all", &[], &[], actions::ALL, Pol::AllowAll)];
    let a = Authorizer::new();
    assert!(
        a.check(&User::new("x"), &perms, fv("f"), actions::ALL)
            .is_ok()
    );
    // An empty username is not special once permissions exist: AllowAll admits it, as Feast.
    assert!(
        a.check(&User::default(), &perms, fv("f"), &[Action::Describe])
            .is_ok()
    );
}

#[test]
fn intra_communication_username_gets_no_bypass() {
    // Feast 0.67 skips every check for username == $INTRA_COMMUNICATION_BASE64 (feast#6785).
    let perms = [perm(
        "read",
        &[T::FeatureView],
        &[],
        &[Action::Describe],
        Pol::Roles(&["reader"]),
    )];
    let a = Authorizer::new();
    let intra = User::new("aW50cmEtY29tbXVuaWNhdGlvbg==");
    assert!(
        a.check(&intra, &perms, fv("f"), &[Action::Describe])
            .is_err()
    );
    assert!(
        a.filter(&intra, &perms, vec!["f"], |n| fv(n), &[Action::Describe])
            .is_err()
    );
}

#[test]
fn filter_only_quirks() {
    let a = Authorizer::new();
    let reader = User::new("r").with_roles(["reader"]);
    let d = [Action::Describe];
    let names = || vec!["driver_a", "driver_b", "customer"];

    // Matching permission with name_patterns denies: the resource is dropped silently.
    let perms = vec![
        perm(
            "drivers",
            &[T::FeatureView],
            &["driver_.*"],
            &d,
            Pol::Roles(&["reader"]),
        ),
        perm(
            "customers",
            &[T::FeatureView],
            &["customer"],
            &d,
            Pol::Roles(&["admin"]),
        ),
    ];
    assert_eq!(
        a.filter(&reader, &perms, names(), |n| fv(n), &d).unwrap(),
        vec!["driver_a", "driver_b"]
    );

    // Matching permission without name_patterns denies: the whole listing fails.
    let perms = vec![perm(
        "all_fv",
        &[T::FeatureView],
        &[],
        &d,
        Pol::Roles(&["admin"]),
    )];
    let e = a
        .filter(&reader, &perms, names(), |n| fv(n), &d)
        .unwrap_err();
    assert!(
        e.message
            .starts_with("Permission error:\nPermission all_fv denied"),
        "{}",
        e.message
    );

    // No matching permission, but a same-type permission has name_patterns: dropped.
    let perms = vec![perm(
        "drivers",
        &[T::FeatureView],
        &["driver_.*"],
        &d,
        Pol::Roles(&["reader"]),
    )];
    assert_eq!(
        a.filter(&reader, &perms, names(), |n| fv(n), &d).unwrap(),
        vec!["driver_a", "driver_b"]
    );

    // No permission of this type at all: the listing fails.
    let perms = vec![perm(
        "ents",
        &[T::Entity],
        &["e.*"],
        &d,
        Pol::Roles(&["reader"]),
    )];
    let e = a
        .filter(&reader, &perms, names(), |n| fv(n), &d)
        .unwrap_err();
    assert_eq!(
        e.message,
        "Permission error:\nNo permissions defined to manage [<AuthzedAction.DESCRIBE: 'describe'>] on \
         <class 'feast.feature_view.FeatureView'>/driver_a."
    );

    // Same-type permissions exist but none has name_patterns (actions differ): the listing fails.
    let perms = vec![perm(
        "upd",
        &[T::FeatureView],
        &[],
        &[Action::Update],
        Pol::Roles(&["reader"]),
    )];
    assert!(a.filter(&reader, &perms, names(), |n| fv(n), &d).is_err());

    // Last matching permission decides the silent skip: p_named denies first, p_plain last.
    let perms = vec![
        perm(
            "p_named",
            &[T::FeatureView],
            &["driver_.*"],
            &d,
            Pol::Roles(&["admin"]),
        ),
        perm(
            "p_plain",
            &[T::FeatureView],
            &[],
            &d,
            Pol::Roles(&["admin"]),
        ),
    ];
    assert!(a.filter(&reader, &perms, names(), |n| fv(n), &d).is_err());
    let perms = vec![
        perm(
            "p_plain",
            &[T::FeatureView],
            &[],
            &d,
            Pol::Roles(&["admin"]),
        ),
        perm(
            "p_named",
            &[T::FeatureView],
            &["driver_.*"],
            &d,
            Pol::Roles(&["admin"]),
        ),
    ];
    // driver_* : last match has patterns → skipped; customer: only p_plain matches → error.
    assert!(a.filter(&reader, &perms, names(), |n| fv(n), &d).is_err());
    assert_eq!(
        a.filter(&reader, &perms, vec!["driver_a"], |n| fv(n), &d)
            .unwrap(),
        Vec::<&str>::new()
    );
}

#[test]
fn resource_ref_of_registry_objects() {
    let ds = feast_proto::core::DataSource {
        name: "src".into(),
        data_source_class_type: "feast.infra.offline_stores.file_source.FileSource".into(),
        tags: BTreeMap::from([("team".into(), "a".into())]),
        ..Default::default()
    };
    let r = ResourceRef::of(&ds);
    assert_eq!(r.kind, ResourceKind::DataSource);
    assert_eq!(r.name, "src");
    assert_eq!(r.tags.unwrap()["team"], "a");
    let perms = [perm(
        "p",
        &[T::DataSource],
        &[],
        &[Action::Describe],
        Pol::Roles(&["r"]),
    )];
    let e = err(Authorizer::new().check(&User::new("x"), &perms, r, &[Action::Describe]));
    assert!(e.contains("to FileSource:src:"), "{e}");
}
