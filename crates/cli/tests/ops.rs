//! Operations commands end to end: `probe` against real servers started as child processes
//! (readiness vs liveness, closed ports, servers that never answer) and `doctor` on a
//! healthy demo repository and on broken ones.
//!
//! The Redis/PostgreSQL test skips with a message when they are not running, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::Server;

fn feast_rs(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run feast-rs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs feast-rs and asserts its exit code; returns (stdout, stderr).
fn expect(code: i32, args: &[&str], cwd: &Path) -> (String, String) {
    let out = feast_rs(args, cwd);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "feast-rs {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// An initialized and applied demo repository.
fn demo_repo(dir: &Path, name: &str) -> PathBuf {
    expect(0, &["init", name], dir);
    let repo = dir.join(name).join("feature_repo");
    expect(0, &["-c", repo.to_str().unwrap(), "apply"], dir);
    repo
}

fn set_config(repo: &Path, from: &str, to: &str) {
    let path = repo.join("feature_store.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn probe_a_registry_server_and_doctor_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server_repo = demo_repo(d, "server");
    let server = Server::start(&server_repo, "serve-registry");
    let url = format!("grpc://127.0.0.1:{}", server.port);

    let (stdout, _) = expect(0, &["probe", &url], d);
    assert_eq!(stdout, format!("{url}: SERVING (readiness)\n"));
    let (stdout, _) = expect(0, &["probe", &url, "--service", "liveness"], d);
    assert!(stdout.contains("SERVING (liveness)"), "{stdout}");
    let (_, stderr) = expect(1, &["probe", &url, "--service", "nope"], d);
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    // The gRPC port does not speak HTTP/1.1.
    expect(
        1,
        &["probe", &format!("http://127.0.0.1:{}/", server.port)],
        d,
    );

    // A client repository whose registry is that server, applied through it.
    expect(0, &["init", "client"], d);
    let client = d.join("client/feature_repo");
    set_config(
        &client,
        "registry: data/registry.db",
        &format!(
            "registry:\n  registry_type: remote\n  path: 127.0.0.1:{}",
            server.port
        ),
    );
    let c = client.to_str().unwrap();
    expect(0, &["-c", c, "apply"], d);
    let registry_url = format!("127.0.0.1:{}", server.port);
    let (stdout, _) = expect(0, &["-c", c, "doctor", "--registry-url", &registry_url], d);
    assert!(
        stdout.contains(&format!(
            "OK    registry       registry server 127.0.0.1:{} is SERVING and answers: \
             project client has 3 feature views, 2 feature services",
            server.port
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK    plan           the registry matches the definitions"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("OK    --registry-url {url}: SERVING (readiness)")),
        "{stdout}"
    );
    drop(server);
}

#[test]
fn probe_readiness_and_liveness_of_a_feature_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = demo_repo(d, "demo");
    // A registry the server cannot load: alive, never ready.
    std::fs::write(repo.join("data/registry.db"), b"\x0a\xff\xff garbage").unwrap();
    let server = Server::start(&repo, "serve");
    let http = format!("http://127.0.0.1:{}", server.port);
    let grpc = format!("grpc://127.0.0.1:{}", server.port);

    let (_, stderr) = expect(1, &["probe", &format!("{http}/readyz")], d);
    assert!(
        stderr.contains("HTTP 503") && stderr.contains("registry not loaded"),
        "{stderr}"
    );
    let (stdout, _) = expect(0, &["probe", &format!("{http}/healthz")], d);
    assert!(stdout.contains("alive"), "{stdout}");
    let (_, stderr) = expect(1, &["probe", &grpc], d);
    assert!(stderr.contains("NOT_SERVING (readiness)"), "{stderr}");
    expect(0, &["probe", &grpc, "--service", "liveness"], d);

    // doctor names the broken registry file and the unready server.
    let (stdout, _) = expect(
        1,
        &[
            "-c",
            repo.to_str().unwrap(),
            "doctor",
            "--online-url",
            &format!("127.0.0.1:{}", server.port),
        ],
        d,
    );
    assert!(
        stdout.contains("FAIL  registry       data/registry.db:")
            && stdout.contains("is not a Feast registry"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("FAIL  --online-url   {http}/readyz: HTTP 503")),
        "{stdout}"
    );
}

#[test]
fn probe_fails_fast_and_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = closed_port();
    for url in [
        format!("grpc://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/readyz"),
    ] {
        let (stdout, stderr) = expect(1, &["probe", &url], d);
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.starts_with(&format!("Error: {url}: ")) && stderr.contains("refused"),
            "{stderr}"
        );
    }
    // A server that accepts connections and never answers: the timeout ends the probe.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for url in [
        format!("grpc://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/readyz"),
    ] {
        let started = Instant::now();
        let (_, stderr) = expect(1, &["probe", &url, "--timeout", "0.5"], d);
        assert!(stderr.contains("no answer within 0.5s"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let (_, stderr) = expect(1, &["probe", "127.0.0.1:6570"], d);
    assert!(stderr.contains("expected http://"), "{stderr}");
}

#[test]
fn doctor_on_a_healthy_demo_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = demo_repo(dir.path(), "demo");
    let (stdout, _) = expect(0, &["-c", repo.to_str().unwrap(), "doctor"], dir.path());
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    let (summary, checks) = lines.split_last().unwrap();
    assert_eq!(*summary, "7 OK, 0 WARN, 0 FAIL", "{stdout}");
    for check in [
        "config",
        "definitions",
        "registry",
        "plan",
        "online store",
        "offline store",
        "auth",
    ] {
        assert!(
            checks
                .iter()
                .any(|l| l.starts_with(&format!("OK    {check:<14} "))),
            "no OK {check} line:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("registry       data/registry.db loads: project demo has 3 feature views"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plan           the registry matches"),
        "{stdout}"
    );

    // Before apply: nothing is broken, two things are not there yet (and stay absent).
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    expect(0, &["init", "p"], &fresh);
    let repo = fresh.join("p/feature_repo");
    let (stdout, _) = expect(0, &["-c", repo.to_str().unwrap(), "doctor"], dir.path());
    assert!(
        stdout.contains("WARN  registry       data/registry.db does not exist yet"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARN  online store   SQLite data/online_store.db does not exist yet"),
        "{stdout}"
    );
    assert!(!repo.join("data/registry.db").exists());
    assert!(!repo.join("data/online_store.db").exists());
}

#[test]
fn doctor_names_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let doctor = |repo: &Path| -> String {
        expect(
            1,
            &["-c", repo.to_str().unwrap(), "doctor", "--timeout", "3"],
            d,
        )
        .0
    };

    let repo = demo_repo(d, "badkey");
    set_config(&repo, "provider: local", "provider: local\nonline_stor: {}");
    let out = doctor(&repo);
    assert!(
        out.starts_with("FAIL  config         ")
            && out.contains("feature_store.yaml:")
            && out.contains("unknown field `online_stor`"),
        "{out}"
    );

    let repo = demo_repo(d, "noparquet");
    std::fs::remove_file(repo.join("data/driver_stats.parquet")).unwrap();
    let out = doctor(&repo);
    assert!(
        out.contains(
            "FAIL  offline store  data/driver_stats.parquet does not exist (read by feature view \
             driver_hourly_stats, feature view driver_hourly_stats_fresh)"
        ),
        "{out}"
    );
    assert_eq!(
        out.matches("FAIL").count(),
        2,
        "only that, and the summary:\n{out}"
    );

    let repo = demo_repo(d, "noredis");
    let port = closed_port();
    set_config(
        &repo,
        "online_store:\n  type: sqlite\n  path: data/online_store.db",
        &format!("online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}"),
    );
    let out = doctor(&repo);
    assert!(
        out.contains(&format!("FAIL  online store   Redis 127.0.0.1:{port}: ")),
        "{out}"
    );

    let repo = demo_repo(d, "noregistry");
    let port = closed_port();
    set_config(
        &repo,
        "registry: data/registry.db",
        &format!("registry:\n  registry_type: remote\n  path: 127.0.0.1:{port}"),
    );
    let started = Instant::now();
    let out = doctor(&repo);
    assert!(
        out.contains(&format!(
            "FAIL  registry       registry server 127.0.0.1:{port}: cannot connect"
        )),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn reachable(address: &str) -> bool {
    let addr = address.parse().unwrap();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
fn doctor_pings_redis_and_connects_to_postgres() {
    for (what, address) in [
        ("Redis", "127.0.0.1:6379"),
        ("PostgreSQL", "127.0.0.1:5432"),
    ] {
        if !reachable(address) {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("this test needs {what} on {address} under CI=true");
            }
            eprintln!("skipping: no {what} on {address}");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = demo_repo(dir.path(), "stores");
    let r = repo.to_str().unwrap();
    let sqlite = "online_store:\n  type: sqlite\n  path: data/online_store.db";
    set_config(
        &repo,
        sqlite,
        "online_store:\n  type: redis\n  connection_string: 127.0.0.1:6379",
    );
    let (stdout, _) = expect(0, &["-c", r, "doctor"], dir.path());
    assert!(
        stdout.contains("OK    online store   Redis 127.0.0.1:6379 answers PING (PONG)"),
        "{stdout}"
    );

    set_config(
        &repo,
        "online_store:\n  type: redis\n  connection_string: 127.0.0.1:6379",
        "online_store:\n  type: postgres\n  host: 127.0.0.1\n  port: 5432\n  user: postgres\n  \
         password: \"\"\n  database: postgres",
    );
    let (stdout, _) = expect(0, &["-c", r, "doctor"], dir.path());
    assert!(
        stdout.contains("OK    online store   Postgres 127.0.0.1:5432/postgres connects"),
        "{stdout}"
    );
}

/// Every server flag can come from a `FEAST_RS_*` variable (containers configure servers
/// that way); a flag on the command line wins over the variable.
#[test]
fn server_flags_come_from_the_environment_and_flags_win() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: envy\nregistry: data/registry.db\n",
    )
    .unwrap();
    let banner = |envs: &[(&str, &str)], args: &[&str]| -> (bool, String) {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_feast-rs"))
            .arg("serve-registry")
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if line.is_empty() {
            (false, String::from_utf8_lossy(&out.stderr).into_owned())
        } else {
            (true, line)
        }
    };
    let (ok, text) = banner(
        &[("FEAST_RS_HOST", "127.0.0.1"), ("FEAST_RS_PORT", "0")],
        &[],
    );
    assert!(ok && text.contains("listening on 127.0.0.1:"), "{text}");
    let (ok, text) = banner(
        &[("FEAST_RS_HOST", "not-an-ip"), ("FEAST_RS_PORT", "0")],
        &[],
    );
    assert!(
        !ok && text.contains("--host not-an-ip is not an IP address"),
        "{text}"
    );
    let (ok, text) = banner(
        &[("FEAST_RS_HOST", "not-an-ip"), ("FEAST_RS_PORT", "0")],
        &["--host", "127.0.0.1"],
    );
    assert!(ok && text.contains("listening on 127.0.0.1:"), "{text}");
}
