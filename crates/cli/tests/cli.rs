//! The `feast-rs` binary end to end on a temporary directory: init, apply, list/describe,
//! plan, registry-dump, teardown, and bad input that must leave the registry untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::Server;

fn feast_rs(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run feast-rs")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = feast_rs(args, cwd);
    assert!(
        out.status.success(),
        "feast-rs {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = feast_rs(args, cwd);
    assert!(
        !out.status.success(),
        "feast-rs {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn demo_repo(dir: &Path) -> PathBuf {
    let out = ok(&["init", "demo_proj"], dir);
    assert!(out.contains("Creating a new feast-rs repository"), "{out}");
    dir.join("demo_proj").join("feature_repo")
}

#[test]
fn init_apply_list_plan_teardown() {
    let dir = tempfile::tempdir().unwrap();
    let repo = demo_repo(dir.path());
    let r = repo.to_str().unwrap();
    assert!(repo.join("data/driver_stats.parquet").exists());

    let applied = ok(&["-c", r, "apply"], dir.path());
    assert!(
        applied.starts_with("Applying changes for project demo_proj\n"),
        "{applied}"
    );
    assert!(applied.contains("Created entity driver\n"), "{applied}");
    assert!(
        applied.contains("Created feature view driver_hourly_stats\n"),
        "{applied}"
    );
    assert!(
        applied.contains("Created on demand feature view transformed_conv_rate\n"),
        "{applied}"
    );
    assert!(
        applied.contains("Created feature service driver_activity_v1\n"),
        "{applied}"
    );
    assert!(
        applied.contains("\nCreated sqlite table demo_proj_driver_hourly_stats\n"),
        "{applied}"
    );
    let tables = |db: &Path| -> Vec<String> {
        let script = "import sqlite3,sys; print(' '.join(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute(\"select name from sqlite_master where type='table'\"))))";
        let out = Command::new("python3")
            .args(["-c", script, db.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        tables(&repo.join("data/online_store.db")),
        [
            "demo_proj_driver_hourly_stats",
            "demo_proj_driver_hourly_stats_fresh"
        ]
    );
    assert!(repo.join("data/registry.db").exists());

    let views = ok(&["-c", r, "feature-views", "list"], dir.path());
    let header = views.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ENTITIES", "TYPE", "ENABLED", "STATE"]
    );
    assert!(
        views.contains("driver_hourly_stats") && views.contains("{'driver'}"),
        "{views}"
    );
    assert!(views.contains("OnDemandFeatureView"), "{views}");

    let tagged = ok(
        &[
            "-c",
            r,
            "feature-views",
            "list",
            "--tags",
            "team:driver_performance",
        ],
        dir.path(),
    );
    assert!(
        tagged.contains("driver_hourly_stats") && !tagged.contains("transformed_conv_rate"),
        "{tagged}"
    );
    let none = ok(
        &["-c", r, "feature-views", "list", "--tags", "team:nobody"],
        dir.path(),
    );
    assert_eq!(none.lines().count(), 1, "{none}");

    let entities = ok(&["-c", r, "entities", "list"], dir.path());
    assert!(
        entities.contains("ValueType.INT64") && !entities.contains("__dummy"),
        "{entities}"
    );
    let described = ok(&["-c", r, "entities", "describe", "driver"], dir.path());
    assert!(described.contains("joinKey: driver_id"), "{described}");
    let missing = fails(&["-c", r, "feature-views", "describe", "nope"], dir.path());
    assert!(
        missing.contains("Feature view nope does not exist in project demo_proj"),
        "{missing}"
    );

    let services = ok(
        &["-c", r, "feature-services", "list", "-o", "json"],
        dir.path(),
    );
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 2);

    assert_eq!(
        ok(&["-c", r, "plan"], dir.path()),
        "No changes to registry\nNo changes to infrastructure\n"
    );
    let dump: serde_json::Value =
        serde_json::from_str(&ok(&["-c", r, "registry-dump"], dir.path())).unwrap();
    assert_eq!(dump["project"], "demo_proj");
    assert_eq!(dump["featureViews"].as_array().unwrap().len(), 2);
    let projects = ok(&["-c", r, "projects", "list"], dir.path());
    assert!(projects.contains("demo_proj"), "{projects}");
    let config = ok(&["-c", r, "configuration"], dir.path());
    assert!(config.contains("project: demo_proj"), "{config}");

    let torn = ok(&["-c", r, "teardown"], dir.path());
    assert!(torn.contains("Removed the registry"), "{torn}");
    assert!(
        tables(&repo.join("data/online_store.db")).is_empty(),
        "teardown drops the project's tables"
    );
    assert!(!repo.join("data/registry.db").exists());
}

#[test]
fn bad_input_leaves_the_registry_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let repo = demo_repo(dir.path());
    let r = repo.to_str().unwrap();
    ok(&["-c", r, "apply"], dir.path());
    let registry = repo.join("data/registry.db");
    let before = std::fs::read(&registry).unwrap();
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();

    let cases: [(&str, String, &str); 4] = [
        (
            "malformed YAML",
            features.replace("join_keys: [driver_id]", "join_keys: [driver_id"),
            "features.yaml: line ",
        ),
        (
            "unknown dtype",
            features.replacen("dtype: Float32", "dtype: Float33", 1),
            "schema[0].dtype",
        ),
        (
            "duplicate names across view kinds",
            features.replace(
                "  - name: transformed_conv_rate\n",
                "  - name: driver_hourly_stats\n",
            ),
            "duplicate feature view name",
        ),
        (
            "feature service naming a missing view",
            features.replace(
                "      - driver_hourly_stats: [conv_rate]",
                "      - no_such_view: [conv_rate]",
            ),
            "no feature view or on demand feature view named \"no_such_view\"",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(repo.join("features.yaml"), &text).unwrap();
        let err = fails(&["-c", r, "apply"], dir.path());
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(
            std::fs::read(&registry).unwrap(),
            before,
            "{what} changed the registry"
        );
    }

    std::fs::write(repo.join("features.yaml"), &features).unwrap();
    std::fs::write(&registry, b"\x0a\xff\xff garbage").unwrap();
    let err = fails(&["-c", r, "apply"], dir.path());
    assert!(err.contains("is not a Feast registry"), "{err}");
    assert_eq!(std::fs::read(&registry).unwrap(), b"\x0a\xff\xff garbage");
}

#[test]
fn config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: p\nregistry: data/registry.db\nonline_store:\n  type: sqlite\n  pth: x\n",
    )
    .unwrap();
    let err = fails(&["apply"], dir.path());
    assert!(err.contains("pth") && err.contains(":5:"), "{err}");
}

#[test]
fn demo_runs_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["demo", dir.path().to_str().unwrap()], dir.path());
    assert!(
        out.contains("Created feature view driver_hourly_stats"),
        "{out}"
    );
    assert!(
        out.contains("NAME") && out.contains("driver_hourly_stats_fresh"),
        "{out}"
    );
    // A second run finds the repo and reports no changes.
    let again = ok(&["demo", dir.path().to_str().unwrap()], dir.path());
    assert!(again.contains("No changes to registry"), "{again}");
}

#[test]
fn cli_against_a_registry_server() {
    let dir = tempfile::tempdir().unwrap();
    let server_repo = dir.path().join("server");
    std::fs::create_dir_all(&server_repo).unwrap();
    std::fs::write(
        server_repo.join("feature_store.yaml"),
        "project: demo_proj\nregistry: data/registry.db\n",
    )
    .unwrap();
    let server = Server::start(&server_repo, "serve-registry");

    let repo = demo_repo(dir.path());
    let r = repo.to_str().unwrap();
    let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "registry: data/registry.db",
            &format!(
                "registry:\n  registry_type: remote\n  path: 127.0.0.1:{}",
                server.port
            ),
        );
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();

    let applied = ok(&["-c", r, "apply"], dir.path());
    assert!(
        applied.contains("Created feature view driver_hourly_stats"),
        "{applied}"
    );
    assert!(
        !repo.join("data/registry.db").exists(),
        "a remote registry writes nothing locally"
    );
    assert!(server_repo.join("data/registry.db").exists());
    assert_eq!(
        ok(&["-c", r, "plan"], dir.path()),
        "No changes to registry\nNo changes to infrastructure\n"
    );
    let views = ok(&["-c", r, "feature-views", "list"], dir.path());
    assert!(views.contains("driver_hourly_stats_fresh"), "{views}");

    // An update goes through the server too.
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        features.replacen("ttl: 1d", "ttl: 2d", 1),
    )
    .unwrap();
    let updated = ok(&["-c", r, "apply"], dir.path());
    assert!(
        updated.contains("Updated feature view driver_hourly_stats\n\tttl: 86400s -> 172800s"),
        "{updated}"
    );
    let described = ok(
        &[
            "-c",
            r,
            "feature-views",
            "describe",
            "driver_hourly_stats",
            "-o",
            "json",
        ],
        dir.path(),
    );
    assert!(described.contains("\"172800s\""), "{described}");

    let torn = ok(&["-c", r, "teardown"], dir.path());
    assert!(torn.contains("Removed project demo_proj"), "{torn}");
    let empty = ok(&["-c", r, "feature-views", "list"], dir.path());
    assert_eq!(empty.lines().count(), 1, "{empty}");
}

#[test]
fn cli_on_a_sql_registry() {
    let dir = tempfile::tempdir().unwrap();
    let repo = demo_repo(dir.path());
    let r = repo.to_str().unwrap();
    let db = dir.path().join("registry.sqlite");
    let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "registry: data/registry.db",
            &format!(
                "registry:\n  registry_type: sql\n  path: sqlite:///{}",
                db.display()
            ),
        );
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();

    let applied = ok(&["-c", r, "apply"], dir.path());
    assert!(
        applied.contains("Created feature view driver_hourly_stats"),
        "{applied}"
    );
    assert!(db.exists());
    assert_eq!(
        ok(&["-c", r, "plan"], dir.path()),
        "No changes to registry\nNo changes to infrastructure\n"
    );
    let features = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        features.replacen("ttl: 1d", "ttl: 3h", 1),
    )
    .unwrap();
    let updated = ok(&["-c", r, "apply"], dir.path());
    assert!(updated.contains("\tttl: 86400s -> 10800s"), "{updated}");
    let views = ok(&["-c", r, "feature-views", "list"], dir.path());
    assert!(views.contains("driver_hourly_stats_fresh"), "{views}");

    ok(&["-c", r, "teardown"], dir.path());
    let empty = ok(&["-c", r, "feature-views", "list"], dir.path());
    assert_eq!(empty.lines().count(), 1, "{empty}");
}
