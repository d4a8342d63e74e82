//! One materialization of a view at a time across the processes of a repository with a
//! file registry: `feast-rs materialize` runs, feature servers' `/materialize` and the
//! locks they take next to the registry. A run that must hold its lock for a while pulls
//! from an offline server that accepts connections and never answers (a second
//! `feature_store.yaml` of the same repository, `-f stalled.yaml`), so it is stuck inside
//! its materialization, holding its views, until it is killed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::feast_rs;

const VIEW: &str = "driver_hourly_stats";

/// `feast-rs init` + `apply` in a temporary directory, plus `stalled.yaml`: the same
/// repository pulling from `silent`, an offline server that never answers.
fn repo(dir: &Path, silent: &std::net::TcpListener) -> PathBuf {
    repo_with(dir, silent, None)
}

/// [`repo`], its registry in the SQLite database `sql` when given.
fn repo_with(dir: &Path, silent: &std::net::TcpListener, sql: Option<&Path>) -> PathBuf {
    let init = feast_rs()
        .args(["init", "guarded"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let repo = dir.join("guarded/feature_repo");
    if let Some(db) = sql {
        let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
            .unwrap()
            .replace(
                "registry: data/registry.db",
                &format!(
                    "registry:\n  registry_type: sql\n  path: sqlite:///{}",
                    db.display()
                ),
            );
        assert!(config.contains("registry_type: sql"), "{config}");
        std::fs::write(repo.join("feature_store.yaml"), config).unwrap();
    }
    let apply = feast_rs().arg("apply").current_dir(&repo).output().unwrap();
    assert!(apply.status.success(), "{apply:?}");
    let yaml = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "offline_store:\n  type: file\n",
            &format!(
                "offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {}\n",
                silent.local_addr().unwrap().port()
            ),
        );
    assert!(yaml.contains("type: remote"), "{yaml}");
    std::fs::write(repo.join("stalled.yaml"), yaml).unwrap();
    repo
}

fn lock_file(repo: &Path) -> PathBuf {
    repo.join(format!("data/registry.db.locks/guarded/{VIEW}.lock"))
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A stuck `feast-rs materialize-incremental` of [`VIEW`] (killed on drop).
struct Stuck(Child);

impl Stuck {
    /// Started, and past taking its locks: it has announced the view's window.
    fn start(repo: &Path) -> Self {
        use std::io::BufRead;
        let mut child = feast_rs()
            .arg("-c")
            .arg(repo)
            .arg("-f")
            .arg(repo.join("stalled.yaml"))
            .args(["materialize-incremental", &now(), "-v", VIEW])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with(&format!("{VIEW} from")) {
            line.clear();
            let read = stdout.read_line(&mut line).unwrap();
            assert!(read > 0, "the stuck run ended early");
        }
        // The rest of its output (none while it is stuck) goes nowhere.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Stuck(child)
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the view's lock file names `holder` (its holder writes it once it has the
/// lock).
fn wait_for_holder(repo: &Path, holder: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = std::fs::read_to_string(lock_file(repo)).unwrap_or_default();
        if said.contains(holder) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no lock held by {holder:?} after 30 s: {said:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn materialize(repo: &Path, extra: &[&str]) -> Output {
    let mut cmd = feast_rs();
    cmd.arg("-c")
        .arg(repo)
        .args(["materialize", "2020-01-01T00:00:00", &now(), "-v", VIEW])
        .args(extra);
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two `feast-rs materialize` processes on one repository: while one materializes a
/// view, the other is refused with an error naming the view and its holder (exit code 1);
/// `--force` runs it anyway with a warning; killing the holder with SIGKILL frees the view
/// at once (no stale lock).
#[test]
fn a_view_being_materialized_by_another_process_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let repo = repo(dir.path(), &silent);
    let mut stuck = Stuck::start(&repo);
    let holder = format!("pid {} on ", stuck.0.id());
    wait_for_holder(&repo, &holder);

    let refused = materialize(&repo, &[]);
    let (stdout, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "feature view {VIEW} is already being materialized by {holder}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("(feast-rs materialize-incremental, since "),
        "{stderr}"
    );
    assert!(stderr.contains("pass --force"), "{stderr}");
    assert!(
        !stdout.contains(&format!("{VIEW} from")),
        "nothing ran: {stdout}"
    );
    assert!(stuck.still_running(), "the holder was still materializing");

    let forced = materialize(&repo, &["--force"]);
    let (stdout, stderr) = text(&forced);
    assert!(forced.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("materializing anyway (--force)") && stderr.contains(&holder),
        "{stderr}"
    );
    assert!(stdout.contains(&format!("{VIEW} from")), "{stdout}");
    assert!(
        stuck.still_running(),
        "the holder still holds its lock: {}",
        std::fs::read_to_string(lock_file(&repo)).unwrap_or_default()
    );

    // kill -9: the kernel drops the lock with the process.
    stuck.0.kill().unwrap();
    stuck.0.wait().unwrap();
    let after = materialize(&repo, &[]);
    let (stdout, stderr) = text(&after);
    assert!(after.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    assert!(stdout.contains(&format!("{VIEW} from")), "{stdout}");
    // The run released its lock: the file is empty again.
    assert_eq!(std::fs::read_to_string(lock_file(&repo)).unwrap(), "");
    drop(silent);
}

/// One POST with `Connection: close`: the status and the JSON body.
fn http_post(port: u16, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// A feature server's in-process `/materialize` and the CLI on one repository: each
/// keeps off the views the other is materializing (409 with Feast's body, or the CLI's
/// error naming `feast-rs serve`), and `?force=true` / `--force` override.
#[test]
fn a_feature_server_and_the_cli_keep_off_each_others_views() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let repo = repo(dir.path(), &silent);
    let body = serde_json::json!({"end_ts": now(), "feature_views": [VIEW]}).to_string();

    // The CLI holds the view: the server's sync and async requests get Feast's 409.
    {
        let _stuck = Stuck::start(&repo);
        let server = common::Server::start(&repo, "serve");
        for path in [
            "/materialize-incremental",
            "/materialize-incremental?async=true",
        ] {
            let (status, answer) = http_post(server.port, path, &body);
            assert_eq!(status, 409, "{path}: {answer}");
            assert_eq!(
                answer["feature_views"],
                serde_json::json!([VIEW]),
                "{answer}"
            );
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("Cannot start async materialization"),
                "{answer}"
            );
        }
        let (status, answer) = http_post(server.port, "/materialize-incremental?force=true", &body);
        assert_eq!(status, 200, "{answer}");
    }

    // A server's async job holds the view: the CLI is refused, naming the server.
    let mut cmd = feast_rs();
    cmd.arg("-c")
        .arg(&repo)
        .arg("-f")
        .arg(repo.join("stalled.yaml"))
        .arg("serve");
    let server = common::Server::spawn(cmd);
    // (Ending later than the forced run above, which recorded its interval.)
    let later = serde_json::json!({"end_ts": "2100-01-01T00:00:00", "feature_views": [VIEW]});
    let (status, answer) = http_post(
        server.port,
        "/materialize-incremental?async=true",
        &later.to_string(),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["feature_views"],
        serde_json::json!([VIEW]),
        "{answer}"
    );
    wait_for_holder(&repo, &format!("pid {} on ", server.child.id()));
    let refused = materialize(&repo, &[]);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(feast-rs serve, since "), "{stderr}");
    assert!(materialize(&repo, &["--force"]).status.success());
    drop(server);
    assert!(materialize(&repo, &[]).status.success());
    drop(silent);
}

/// Every view of a repository holding a stream feature view (over the demo's batch source)
/// and an on-demand view with `write_to_online_store`: the stream view is materialized and
/// its interval recorded; the on-demand view, whose rows come from a Python function
/// feast-rs does not run, is skipped with a warning, and naming it is an error saying why.
#[test]
fn stream_views_materialize_and_on_demand_views_are_skipped_with_a_warning() {
    use feast_proto::core;
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let repo = repo(dir.path(), &silent);
    // The YAML definitions have no stream views: add one to the registry as the Feast SDK
    // would apply it.
    let path = repo.join("data/registry.db");
    let mut registry = core::Registry::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let spec = registry
        .feature_views
        .iter()
        .find(|v| v.spec.as_ref().unwrap().name == VIEW)
        .unwrap()
        .spec
        .clone()
        .unwrap();
    registry.stream_feature_views.push(core::StreamFeatureView {
        spec: Some(core::StreamFeatureViewSpec {
            name: "driver_stats_stream".into(),
            project: spec.project.clone(),
            entities: spec.entities.clone(),
            entity_columns: spec.entity_columns.clone(),
            features: spec.features.clone(),
            ttl: spec.ttl,
            batch_source: spec.batch_source.clone(),
            online: true,
            mode: "python".into(),
            ..Default::default()
        }),
        meta: Some(core::FeatureViewMeta::default()),
    });
    for odfv in &mut registry.on_demand_feature_views {
        odfv.spec.as_mut().unwrap().write_to_online_store = true;
    }
    std::fs::write(&path, registry.encode_to_vec()).unwrap();

    let out = feast_rs()
        .arg("-c")
        .arg(&repo)
        .args(["materialize", "2020-01-01T00:00:00", &now()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("Materializing 3 feature views from"),
        "{stdout}"
    );
    assert!(stdout.contains("driver_stats_stream from"), "{stdout}");
    assert!(
        stderr.contains(
            "Warning: skipped on-demand feature view transformed_conv_rate: it has \
             write_to_online_store=True"
        ),
        "{stderr}"
    );
    let registry = core::Registry::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let meta = registry.stream_feature_views[0].meta.as_ref().unwrap();
    assert_eq!(meta.materialization_intervals.len(), 1);
    let rows: u64 = stdout
        .lines()
        .skip_while(|l| !l.starts_with("driver_stats_stream from"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count for the stream view: {stdout}"));
    assert!(rows > 0, "{stdout}");

    let named = feast_rs()
        .arg("-c")
        .arg(&repo)
        .args([
            "materialize",
            "2020-01-01T00:00:00",
            &now(),
            "-v",
            "transformed_conv_rate",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&named);
    assert_eq!(named.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("feast-rs cannot materialize on-demand feature view transformed_conv_rate"),
        "{stderr}"
    );
    drop(silent);
}

/// On a SQL registry the CLI takes the views' leases in the registry database, as
/// materializer replicas do: a second run is refused naming the lease's holder, unless
/// `--force`.
#[test]
fn on_a_sql_registry_the_cli_takes_the_views_leases() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = dir.path().join("registry.sqlite");
    let repo = repo_with(dir.path(), &silent, Some(&db));
    let mut stuck = Stuck::start(&repo);

    let refused = materialize(&repo, &[]);
    let (stdout, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "feature view {VIEW} is already being materialized by "
        )) && stderr.contains(&format!("/{}/", stuck.0.id()))
            && stderr.contains("[feast-rs materialize-incremental], whose lease runs until "),
        "{stderr}"
    );
    assert!(stuck.still_running());
    let forced = materialize(&repo, &["--force"]);
    let (stdout, stderr) = text(&forced);
    assert!(forced.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{VIEW} from")), "{stdout}");
    assert!(
        stderr.contains("materializing anyway (--force)"),
        "{stderr}"
    );
    // Unlike a lock file, the lease of a killed holder lasts until it expires (60 s).
    let pid = stuck.0.id();
    drop(stuck);
    let refused = materialize(&repo, &[]);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("/{pid}/")), "{stderr}");
    drop(silent);
}
