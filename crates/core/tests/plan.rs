//! Registry diff/plan and apply: create, update, delete, no-op, rename, and Feast's upsert
//! rules (timestamps, materialization intervals, view-name conflicts).

use std::collections::BTreeMap;

use feast_core::model::ObjectKind;
use feast_core::registry::diff::{self, DesiredState, Transition};
use feast_core::registry::{Catalog, timestamp};
use feast_core::repo;
use feast_proto::core;
use prost_types::Timestamp;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    schema: [{name: conv_rate, dtype: Float32}]
    source: stats
  - name: other
    entities: [driver]
    schema: [{name: x, dtype: Int64}]
    source: stats
feature_services:
  - {name: svc, features: [driver_stats]}
"#;

fn desired(text: &str) -> DesiredState {
    desired_for(text, "demo")
}

fn desired_for(text: &str, project: &str) -> DesiredState {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.yaml"), text).unwrap();
    repo::load_repo(dir.path(), project).unwrap()
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn applied(text: &str, at: i64) -> Catalog {
    let mut catalog = Catalog::new();
    apply(&mut catalog, text, at);
    catalog
}

fn apply(catalog: &mut Catalog, text: &str, at: i64) -> diff::RegistryDiff {
    let state = desired(text);
    let plan = diff::diff(catalog, "demo", &state);
    diff::apply_diff(catalog, "demo", &state, &plan, ts(at)).unwrap();
    catalog.stamp_commit(ts(at));
    plan
}

#[test]
fn create_then_no_op() {
    let mut catalog = Catalog::new();
    let plan = apply(&mut catalog, DEFS, 100);
    assert_eq!(
        plan.names(Transition::Create),
        [
            (ObjectKind::Project, "demo"),
            (ObjectKind::DataSource, "stats"),
            (ObjectKind::Entity, "__dummy"),
            (ObjectKind::Entity, "driver"),
            (ObjectKind::FeatureView, "driver_stats"),
            (ObjectKind::FeatureView, "other"),
            (ObjectKind::FeatureService, "svc"),
        ]
    );
    let rendered = plan.render(false);
    assert!(
        rendered.contains("Created feature view driver_stats\n"),
        "{rendered}"
    );
    assert!(
        !rendered.contains("__dummy") && !rendered.contains("data source"),
        "{rendered}"
    );

    let again = diff::diff(&catalog, "demo", &desired(DEFS));
    assert!(!again.has_changes(), "{again:?}");
    assert_eq!(again.render(false), "No changes to registry\n");
}

#[test]
fn update_reports_changed_fields_and_keeps_server_state() {
    let mut catalog = applied(DEFS, 100);
    // The materializer recorded an interval; a re-apply must keep it.
    catalog.apply_materialization("driver_stats", "demo", ts(1), ts(2), ts(150));

    let plan = apply(&mut catalog, &DEFS.replace("ttl: 1d", "ttl: 2d"), 200);
    assert_eq!(
        plan.names(Transition::Update),
        [(ObjectKind::FeatureView, "driver_stats")]
    );
    let update = plan
        .objects
        .iter()
        .find(|o| o.transition == Transition::Update)
        .unwrap();
    assert_eq!(update.properties.len(), 1);
    assert_eq!(update.properties[0].property, "ttl");
    assert_eq!(update.properties[0].existing, "86400s");
    assert_eq!(update.properties[0].declared, "172800s");
    assert!(
        plan.render(false)
            .contains("Updated feature view driver_stats\n\tttl: 86400s -> 172800s\n")
    );

    let fv = catalog
        .get::<core::FeatureView>("driver_stats", "demo")
        .unwrap();
    let meta = fv.meta.as_ref().unwrap();
    assert_eq!(
        meta.created_timestamp,
        Some(ts(100)),
        "created timestamp kept"
    );
    assert_eq!(meta.last_updated_timestamp, Some(ts(200)));
    assert_eq!(meta.materialization_intervals.len(), 1, "intervals kept");
    assert_eq!(
        meta.state,
        core::FeatureViewState::AvailableOnline as i32,
        "state kept"
    );
    assert_eq!(fv.spec.as_ref().unwrap().ttl.unwrap().seconds, 172_800);

    // A client that sets a state (Feast's materialize flips a view to MATERIALIZING
    // through `apply_feature_view`) has it applied; intervals are still the server's.
    let mut flipped = fv.clone();
    flipped.meta.as_mut().unwrap().state = core::FeatureViewState::Materializing as i32;
    flipped
        .meta
        .as_mut()
        .unwrap()
        .materialization_intervals
        .clear();
    catalog.apply(flipped, "demo", ts(300)).unwrap();
    let fv = catalog
        .get::<core::FeatureView>("driver_stats", "demo")
        .unwrap();
    let meta = fv.meta.as_ref().unwrap();
    assert_eq!(meta.state, core::FeatureViewState::Materializing as i32);
    assert_eq!(meta.materialization_intervals.len(), 1, "intervals kept");
    // Unchanged objects keep their last_updated.
    let other = catalog.get::<core::FeatureView>("other", "demo").unwrap();
    assert_eq!(
        other.meta.as_ref().unwrap().last_updated_timestamp,
        Some(ts(100))
    );
}

#[test]
fn delete_and_rename() {
    let mut catalog = applied(DEFS, 100);
    let renamed = DEFS.replace("name: other", "name: other_v2");
    let plan = apply(&mut catalog, &renamed, 200);
    assert_eq!(
        plan.names(Transition::Delete),
        [(ObjectKind::FeatureView, "other")]
    );
    assert_eq!(
        plan.names(Transition::Create),
        [(ObjectKind::FeatureView, "other_v2")]
    );
    assert!(catalog.get::<core::FeatureView>("other", "demo").is_err());
    assert!(catalog.get::<core::FeatureView>("other_v2", "demo").is_ok());

    let without_service = renamed.replace(
        "feature_services:\n  - {name: svc, features: [driver_stats]}\n",
        "",
    );
    let plan = apply(&mut catalog, &without_service, 300);
    assert_eq!(
        plan.names(Transition::Delete),
        [(ObjectKind::FeatureService, "svc")]
    );
    assert!(plan.render(false).contains("Deleted feature service svc"));
    let none = BTreeMap::new();
    assert_eq!(
        catalog.list::<core::FeatureService>("demo", &none).count(),
        0
    );
}

#[test]
fn a_view_may_change_kind_in_one_apply() {
    let mut catalog = applied(DEFS, 100);
    let as_odfv = DEFS.replace(
        "  - name: other\n    entities: [driver]\n    schema: [{name: x, dtype: Int64}]\n    source: stats\n",
        "",
    ) + "on_demand_feature_views:\n  - name: other\n    sources: [driver_stats]\n    schema: [{name: y, dtype: Float64}]\n";
    let plan = apply(&mut catalog, &as_odfv, 200);
    assert_eq!(
        plan.names(Transition::Delete),
        [(ObjectKind::FeatureView, "other")]
    );
    assert_eq!(
        plan.names(Transition::Create),
        [(ObjectKind::OnDemandFeatureView, "other")]
    );
    assert_eq!(
        catalog.feature_view_kind("other", "demo"),
        Some(ObjectKind::OnDemandFeatureView)
    );
}

#[test]
fn conflicting_view_kinds_are_rejected_by_the_catalog() {
    let mut catalog = applied(DEFS, 100);
    let odfv = core::OnDemandFeatureView {
        spec: Some(core::OnDemandFeatureViewSpec {
            name: "driver_stats".into(),
            ..Default::default()
        }),
        meta: None,
    };
    let err = catalog.apply(odfv, "demo", ts(200)).unwrap_err();
    assert_eq!(
        err.class,
        feast_core::error::ErrorClass::ConflictingFeatureViewNames
    );
    assert!(
        err.message.contains("already used by a FeatureView"),
        "{}",
        err.message
    );
}

#[test]
fn projects_are_isolated() {
    let mut catalog = applied(DEFS, 100);
    let state = desired_for(DEFS, "other_project");
    let plan = diff::diff(&catalog, "other_project", &state);
    assert!(
        plan.objects
            .iter()
            .all(|o| o.transition == Transition::Create)
    );
    diff::apply_diff(
        &mut catalog,
        "other_project",
        &state,
        &plan,
        timestamp(chrono::Utc::now()),
    )
    .unwrap();
    catalog.delete_project("other_project").unwrap();
    assert!(!diff::diff(&catalog, "demo", &desired(DEFS)).has_changes());
    assert!(
        catalog
            .get::<core::FeatureView>("driver_stats", "other_project")
            .is_err()
    );
}

#[test]
fn embedded_sources_carry_the_registered_metadata_and_nothing_else() {
    let text = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
  - name: req
    type: request
    schema: [{name: a, dtype: Int64}, {name: b, dtype: Int64}]
feature_views:
  - {name: driver_stats, entities: [driver], schema: [{name: x, dtype: Float32}], source: stats}
on_demand_feature_views:
  - {name: odfv, sources: [driver_stats, req], schema: [{name: y, dtype: Float64}]}
"#;
    let catalog = applied(text, 100);
    let odfv = catalog
        .get::<core::OnDemandFeatureView>("odfv", "demo")
        .unwrap();
    let sources = &odfv.spec.as_ref().unwrap().sources;
    let Some(core::on_demand_source::Source::RequestDataSource(req)) = &sources["req"].source
    else {
        panic!("request source expected: {sources:?}");
    };
    let Some(core::data_source::Options::RequestDataOptions(opts)) = &req.options else {
        panic!("request options expected");
    };
    assert_eq!(
        opts.schema.len(),
        2,
        "rewriting embedded sources must not duplicate repeated fields"
    );
    let registered = catalog.get::<core::DataSource>("req", "demo").unwrap();
    assert_eq!(req.meta, registered.meta);
    assert!(req.meta.is_some());
    let fv = catalog
        .get::<core::FeatureView>("driver_stats", "demo")
        .unwrap();
    let batch = fv.spec.as_ref().unwrap().batch_source.as_ref().unwrap();
    assert_eq!(
        batch.meta,
        catalog
            .get::<core::DataSource>("stats", "demo")
            .unwrap()
            .meta
    );
}

#[test]
fn schema_changes_make_feature_view_versions() {
    let versions = |c: &Catalog| -> Vec<(String, i32, String)> {
        let mut v: Vec<_> = c
            .proto()
            .feature_view_version_history
            .as_ref()
            .map(|h| {
                h.records
                    .iter()
                    .map(|r| {
                        (
                            r.feature_view_name.clone(),
                            r.version_number,
                            r.feature_view_type.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let current = |c: &Catalog| {
        c.get::<core::FeatureView>("driver_stats", "demo")
            .unwrap()
            .meta
            .as_ref()
            .unwrap()
            .current_version_number
    };
    let mut catalog = applied(DEFS, 100);
    assert_eq!(
        versions(&catalog),
        [
            ("driver_stats".into(), 0, "feature_view".into()),
            ("other".into(), 0, "feature_view".into())
        ]
    );
    // ttl is configuration, not schema: no new version.
    apply(&mut catalog, &DEFS.replace("ttl: 1d", "ttl: 3d"), 200);
    assert_eq!(versions(&catalog).len(), 2);
    assert_eq!(current(&catalog), 0);
    // A new feature is a schema change: version 1.
    let more = DEFS.replace(
        "schema: [{name: conv_rate, dtype: Float32}]",
        "schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]",
    );
    apply(&mut catalog, &more, 300);
    assert!(versions(&catalog).contains(&("driver_stats".into(), 1, "feature_view".into())));
    assert_eq!(current(&catalog), 1);
    let record = catalog
        .proto()
        .feature_view_version_history
        .as_ref()
        .unwrap()
        .records
        .iter()
        .find(|r| r.feature_view_name == "driver_stats" && r.version_number == 1)
        .unwrap();
    let snapshot =
        <core::FeatureView as prost::Message>::decode(record.feature_view_proto.as_slice())
            .unwrap();
    assert_eq!(snapshot.spec.unwrap().features.len(), 2);
    // Deleting a view drops its history, as Feast does.
    apply(&mut catalog, &more.replace("  - name: other\n    entities: [driver]\n    schema: [{name: x, dtype: Int64}]\n    source: stats\n", ""), 400);
    assert!(versions(&catalog).iter().all(|(n, _, _)| n != "other"));
}

#[test]
fn pinned_versions_restore_or_declare_as_feast() {
    let current = |c: &Catalog| {
        let fv = c.get::<core::FeatureView>("driver_stats", "demo").unwrap();
        let spec = fv.spec.as_ref().unwrap();
        (
            fv.meta.as_ref().unwrap().current_version_number,
            spec.features.len(),
            spec.version.clone(),
        )
    };
    let pinned = |text: &str, version: &str| {
        text.replace(
            "  - name: driver_stats\n",
            &format!("  - name: driver_stats\n    version: {version}\n"),
        )
    };
    let try_apply = |catalog: &mut Catalog, text: &str| {
        let state = desired(text);
        let plan = diff::diff(catalog, "demo", &state);
        diff::apply_diff(catalog, "demo", &state, &plan, ts(900))
    };
    let more = DEFS.replace(
        "schema: [{name: conv_rate, dtype: Float32}]",
        "schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]",
    );
    let mut catalog = applied(DEFS, 100);
    apply(&mut catalog, &more, 200);
    assert_eq!(current(&catalog), (1, 2, "latest".into()));

    // Pinning a recorded version with only the version changed restores its definition.
    apply(&mut catalog, &pinned(&more, "v0"), 300);
    assert_eq!(current(&catalog), (0, 1, "v0".into()));
    let history_len = |c: &Catalog| {
        c.proto()
            .feature_view_version_history
            .as_ref()
            .unwrap()
            .records
            .len()
    };
    assert_eq!(history_len(&catalog), 3, "a pin records no new version");

    // Pinning while also changing the definition is refused, and nothing changes.
    let before = catalog.proto().clone();
    let err = try_apply(
        &mut catalog,
        &pinned(&DEFS.replace("ttl: 1d", "ttl: 2d"), "v1"),
    )
    .unwrap_err();
    assert_eq!(
        err.class,
        feast_core::error::ErrorClass::FeatureViewPinConflict
    );
    assert!(
        err.message
            .contains("Cannot pin feature view 'driver_stats' to v1")
    );
    assert_eq!(catalog.proto(), &before, "a refused pin changes nothing");

    // Back to the latest definition: a schema change from v0 makes the next version.
    apply(&mut catalog, &more, 400);
    assert_eq!(current(&catalog), (2, 2, "latest".into()));

    // Pinning a version never recorded declares it with this definition.
    let three = more.replace(
        "{name: trips, dtype: Int64}]",
        "{name: trips, dtype: Int64}, {name: rating, dtype: Float64}]",
    );
    apply(&mut catalog, &pinned(&three, "version7"), 500);
    assert_eq!(current(&catalog), (7, 3, "version7".into()));
    let v7 = catalog.view_version("driver_stats", "demo", 7).unwrap();
    let feast_core::registry::ViewVersion::FeatureView(v7) = v7 else {
        panic!("a feature view snapshot expected");
    };
    assert_eq!(v7.spec.unwrap().features.len(), 3);
    assert_eq!(v7.meta.unwrap().current_version_number, 7);
    let missing = catalog.view_version("driver_stats", "demo", 9).unwrap_err();
    assert_eq!(
        missing.message,
        "Version v9 of feature view driver_stats does not exist in project demo"
    );

    // A malformed version is a definition error.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.yaml"), pinned(DEFS, "v2x")).unwrap();
    let err = repo::load_repo(dir.path(), "demo").unwrap_err().to_string();
    assert!(err.contains("Invalid version string 'v2x'"), "{err}");
}
