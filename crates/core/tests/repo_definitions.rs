//! YAML feature-repository definitions: what they build, and how bad input is reported
//! (file, object, field, and line for structural errors).

use std::path::{Path, PathBuf};

use feast_core::repo::{self, RepoErrors};
use feast_proto::core;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn load(files: &[(&str, &str)]) -> Result<feast_core::registry::diff::DesiredState, RepoErrors> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    repo::load_repo(dir.path(), "demo")
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    load(files)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const BASE: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
data_sources:
  - name: stats
    type: file
    path: data/stats.parquet
    timestamp_field: event_timestamp
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Array(Int64)}
    source: stats
"#;

#[test]
fn builds_feast_shaped_protos() {
    let state = load(&[
        ("features.yaml", BASE),
        ("feature_store.yaml", "project: demo\n"),
    ])
    .unwrap();
    assert_eq!(state.project.spec.as_ref().unwrap().name, "demo");
    let fv = &state.feature_views[0];
    let spec = fv.spec.as_ref().unwrap();
    assert_eq!(spec.name, "driver_stats");
    assert_eq!(spec.ttl.unwrap().seconds, 86_400);
    assert_eq!(spec.version, "latest");
    assert_eq!(spec.entities, ["driver"]);
    assert_eq!(spec.entity_columns[0].name, "driver_id");
    assert_eq!(spec.features.len(), 2);
    assert_eq!(
        spec.features[1].value_type,
        feast_proto::types::value_type::Enum::Int64List as i32
    );
    let source = spec.batch_source.as_ref().unwrap();
    assert_eq!(source.data_source_class_type, repo::FILE_SOURCE_CLASS);
    // Feast always registers its placeholder entity.
    assert!(
        state
            .entities
            .iter()
            .any(|e| e.spec.as_ref().unwrap().name == "__dummy")
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let errs = errors(&[(
        "bad.yaml",
        "entities:\n  - name: driver\n    join_keys: [driver_id\n",
    )]);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("bad.yaml: line "), "{errs:?}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = "entities:\n  - name: driver\n    join_key: [driver_id]\n";
    let errs = errors(&[("e.yaml", text)]);
    assert!(errs[0].contains("e.yaml: line 3"), "{errs:?}");
    assert!(errs[0].contains("unknown field `join_key`"), "{errs:?}");
}

#[test]
fn unknown_dtype_names_object_and_field() {
    let text = BASE.replace("dtype: Float32", "dtype: Flaot32");
    let errs = errors(&[("features.yaml", &text)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("features.yaml: feature view \"driver_stats\": schema[0].dtype: "),
        "{errs:?}"
    );
    assert!(errs[0].contains("Flaot32"), "{errs:?}");
}

#[test]
fn duplicate_names_across_view_kinds_are_rejected() {
    let odfv = r#"
data_sources:
  - name: req
    type: request
    schema: [{name: x, dtype: Int64}]
on_demand_feature_views:
  - name: driver_stats
    sources: [req]
    schema: [{name: y, dtype: Int64}]
"#;
    let errs = errors(&[("a.yaml", BASE), ("b.yaml", odfv)]);
    assert!(
        errs.iter()
            .any(|e| e.contains("duplicate feature view name") && e.contains("a.yaml")),
        "{errs:?}"
    );
}

#[test]
fn feature_service_naming_a_missing_view() {
    let fs = "feature_services:\n  - name: svc\n    features: [missing_view]\n";
    let errs = errors(&[("a.yaml", BASE), ("fs.yaml", fs)]);
    assert_eq!(
        errs,
        [
            "fs.yaml: feature service \"svc\": features[0]: no feature view or on demand feature view named \"missing_view\""
        ]
    );
}

#[test]
fn feature_service_selection_of_unknown_feature() {
    let fs = "feature_services:\n  - name: svc\n    features:\n      - driver_stats: [conv_rate, nope]\n";
    let errs = errors(&[("a.yaml", BASE), ("fs.yaml", fs)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("features[0].features[1]"), "{errs:?}");
    assert!(errs[0].contains("has no feature \"nope\""), "{errs:?}");
}

#[test]
fn missing_references_are_all_reported() {
    let text = BASE
        .replace("entities: [driver]", "entities: [rider]")
        .replace("source: stats", "source: nope");
    let errs = errors(&[("f.yaml", &text)]);
    assert!(
        errs.iter()
            .any(|e| e.contains("source: no data source named \"nope\"")),
        "{errs:?}"
    );
}

#[test]
fn projections_alias_and_join_key_map() {
    let fs = r#"
feature_services:
  - name: svc
    features:
      - feature_view: driver_stats
        features: [conv_rate]
        alias: ds
        join_key_map: {driver_id: rider_id}
"#;
    let state = load(&[("a.yaml", BASE), ("fs.yaml", fs)]).unwrap();
    let p = &state.feature_services[0].spec.as_ref().unwrap().features[0];
    assert_eq!(p.feature_view_name, "driver_stats");
    assert_eq!(p.feature_view_name_alias, "ds");
    assert_eq!(p.feature_columns.len(), 1);
    assert_eq!(
        p.join_key_map.get("driver_id").map(String::as_str),
        Some("rider_id")
    );

    let bad = fs.replace("driver_id: rider_id", "nope: rider_id");
    let errs = errors(&[("a.yaml", BASE), ("fs.yaml", &bad)]);
    assert!(
        errs[0].contains("\"nope\" is not a join key of \"driver_stats\""),
        "{errs:?}"
    );
}

#[test]
fn permissions_accept_feast_spellings() {
    let text = r#"
permissions:
  - name: readers
    types: [feature_view, FeatureService, ON_DEMAND_FEATURE_VIEW]
    name_patterns: ["driver.*"]
    actions: [read, describe]
    policy: {roles: [reader]}
  - name: everyone
    actions: [all]
    policy: {allow_all: true}
"#;
    let state = load(&[("p.yaml", text)]).unwrap();
    use core::permission_spec::{AuthzedAction as A, Type as T};
    let readers = state.permissions[0].spec.as_ref().unwrap();
    assert_eq!(
        readers.types,
        [
            T::FeatureView as i32,
            T::FeatureService as i32,
            T::OnDemandFeatureView as i32
        ]
    );
    assert_eq!(
        readers.actions,
        [
            A::ReadOffline as i32,
            A::ReadOnline as i32,
            A::Describe as i32
        ]
    );
    let everyone = state.permissions[1].spec.as_ref().unwrap();
    assert_eq!(
        everyone.types.len(),
        12,
        "empty types = every resource type, as Feast"
    );
    assert_eq!(everyone.actions.len(), 8);
    assert!(everyone.policy.as_ref().unwrap().policy_type.is_none());

    let bad = text
        .replace("\"driver.*\"", "\"driver(\"")
        .replace("[read, describe]", "[read, fly]");
    let errs = errors(&[("p.yaml", &bad)]);
    assert!(
        errs.iter()
            .any(|e| e.contains("name_patterns[0]: invalid regular expression")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("actions[1]: unknown action \"fly\"")),
        "{errs:?}"
    );
}

#[test]
fn push_source_feeds_a_view_from_its_batch_source() {
    let text = format!(
        "{BASE}\n  - name: fresh\n    entities: [driver]\n    schema: [{{name: conv_rate, dtype: Float32}}]\n    source: pushed\n"
    )
    .replace(
        "data_sources:\n",
        "data_sources:\n  - name: pushed\n    type: push\n    batch_source: stats\n",
    );
    let state = load(&[("f.yaml", &text)]).unwrap();
    let fresh = state
        .feature_views
        .iter()
        .find(|v| v.spec.as_ref().unwrap().name == "fresh")
        .unwrap();
    let spec = fresh.spec.as_ref().unwrap();
    assert_eq!(spec.batch_source.as_ref().unwrap().name, "stats");
    assert_eq!(spec.stream_source.as_ref().unwrap().name, "pushed");
    assert_eq!(
        spec.ttl.unwrap().seconds,
        0,
        "no ttl = 0s, as Feast's default"
    );
}

#[test]
fn entity_without_type_is_inferred_or_reported() {
    let text = BASE.replace("    value_type: INT64\n", "");
    let errs = errors(&[("f.yaml", &text)]);
    assert!(
        errs.iter()
            .any(|e| e.contains("entity \"driver\": value_type")),
        "{errs:?}"
    );
}

fn write_parquet(path: &PathBuf) {
    use arrow_array::{
        Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("rate", DataType::Float64, true),
        Field::new("city", DataType::Utf8, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Float64Array::from(vec![0.5, 0.7])),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(TimestampMicrosecondArray::from(vec![0, 1]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn schema_and_entity_type_inferred_from_parquet_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    write_parquet(&dir.path().join("data/stats.parquet"));
    std::fs::write(
        dir.path().join("data/trips.csv"),
        "driver_id,trips,event_timestamp\n1,3,2024-05-01T10:00:00\n2,4,2024-05-01T11:00:00\n",
    )
    .unwrap();
    let defs = r#"
entities:
  - {name: driver, join_keys: [driver_id]}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
  - {name: trips, type: file, path: data/trips.csv, timestamp_field: event_timestamp}
feature_views:
  - {name: stats_view, entities: [driver], source: stats}
  - {name: trips_view, entities: [driver], source: trips}
"#;
    write(dir.path(), "f.yaml", defs);
    let state = repo::load_repo(dir.path(), "demo").unwrap();
    use feast_proto::types::value_type::Enum as VT;
    let stats = state.feature_views[0].spec.as_ref().unwrap();
    let names: Vec<(&str, i32)> = stats
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.value_type))
        .collect();
    assert_eq!(
        names,
        [("rate", VT::Double as i32), ("city", VT::String as i32)]
    );
    assert_eq!(stats.entity_columns[0].value_type, VT::Int64 as i32);
    let driver = state
        .entities
        .iter()
        .find(|e| e.spec.as_ref().unwrap().name == "driver")
        .unwrap();
    assert_eq!(driver.spec.as_ref().unwrap().value_type, VT::Int64 as i32);
    let trips = state.feature_views[1].spec.as_ref().unwrap();
    assert_eq!(
        trips
            .features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["trips"]
    );

    // A missing file is reported against the view's schema.
    write(
        dir.path(),
        "f.yaml",
        &defs.replace("data/trips.csv", "data/missing.csv"),
    );
    let errs: Vec<String> = repo::load_repo(dir.path(), "demo")
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("trips_view") && e.contains("does not exist")),
        "{errs:?}"
    );
}

#[test]
fn feastignore_and_feature_store_yaml_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "feature_store.yaml",
        "project: demo\nregistry: r.db\n",
    );
    std::fs::create_dir(dir.path().join("ignored")).unwrap();
    write(&dir.path().join("ignored"), "junk.yaml", "not: [valid");
    write(dir.path(), ".feastignore", "ignored/\n");
    write(dir.path(), "f.yaml", BASE);
    let files = repo::definition_files(dir.path()).unwrap();
    assert_eq!(files, vec![dir.path().join("f.yaml")]);
}

#[test]
fn postgres_source_is_stored_as_feasts_custom_source() {
    let text = "data_sources:\n  - {name: trips_pg, type: postgres, table: trips, timestamp_field: event_ts}\n";
    let state = load(&[("s.yaml", text)]).unwrap();
    let src = &state.data_sources[0];
    assert_eq!(
        src.r#type,
        core::data_source::SourceType::CustomSource as i32
    );
    assert_eq!(src.data_source_class_type, repo::POSTGRES_SOURCE_CLASS);
    let Some(core::data_source::Options::CustomOptions(opts)) = &src.options else {
        panic!("custom options expected");
    };
    // PostgreSQLOptions.to_proto(): json.dumps({"name", "query", "table"}).
    assert_eq!(
        String::from_utf8(opts.configuration.clone()).unwrap(),
        r#"{"name": "trips_pg", "query": "", "table": "trips"}"#
    );
    let both = "data_sources:\n  - {name: p, type: postgres, table: t, query: SELECT 1, timestamp_field: ts}\n";
    let errs = errors(&[("s.yaml", both)]);
    assert!(
        errs[0].contains("exactly one of `table` or `query`"),
        "{errs:?}"
    );
}
