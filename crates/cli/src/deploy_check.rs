//! Cross-checks of the deployment files (docker-compose.yml, deploy/compose/,
//! deploy/kubernetes/) against the CLI they run: every `feast-rs` command line in them is
//! parsed by the real clap parser (a flag clap refuses fails the test), and the port each
//! server binds must be the one its health checks and probes ask, that compose publishes,
//! and that the Kubernetes Service targets. The `-f` files must exist in the mounted
//! configuration and load as feast-rs configuration with the environment the container
//! gets; the `-c` directories must be mounted or created by `feast-rs init`; and the
//! addresses one service's configuration gives for another (remote registry, remote offline
//! store, `--materializer`) must name a server that binds that port.
//!
//! `feast-rs probe` calls (health checks) are clap-parsed too, and the port of their URL is
//! checked against the server they ask.
//! Schema validation of the same files is tests/compat/test_deploy.py.

use super::*;

use std::collections::{BTreeMap, BTreeSet};

use feast_core::config::{OfflineStoreConfig, RegistryConfig, RepoConfig};
use serde::Deserialize;
use serde_norway::Value;

/// The configuration sets of deploy/compose, selected with `FEAST_RS_CONFIG`.
const COMPOSE_CONFIG_SETS: [&str; 2] = ["no_auth", "oidc"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(str_of).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(other) => panic!("expected a list of strings, got {other:?}"),
    }
}

/// The server kinds, by subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Registry,
    Online,
    Offline,
    Materializer,
}

/// One `feast-rs` invocation, parsed by clap.
#[derive(Debug)]
struct Invocation {
    chdir: Option<PathBuf>,
    yaml: Option<PathBuf>,
    /// For `serve*`: what it is, and the address it binds.
    server: Option<(Kind, String, u16)>,
    /// For `serve --materializer URL`.
    materializer_url: Option<String>,
    /// For `init NAME`: the repository it creates.
    creates_repo: Option<PathBuf>,
}

/// Parses the arguments after `feast-rs` with the real CLI; a refused flag panics.
fn parse(context: &str, args: &[String]) -> Invocation {
    let argv = std::iter::once("feast-rs".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| {
        panic!(
            "{context}: clap refuses `feast-rs {}`:\n{e}",
            args.join(" ")
        )
    });
    let server = match &cli.command {
        Command::ServeRegistry(a) => Some((Kind::Registry, a.host.clone(), a.port)),
        Command::Serve(a) => Some((Kind::Online, a.host.clone(), a.port)),
        Command::ServeOffline(a) => Some((Kind::Offline, a.host.clone(), a.port)),
        Command::ServeMaterializer(a) => {
            if let Some(every) = &a.every {
                // What serve.rs accepts: a positive duration.
                let d = feast_core::repo::parse_duration(
                    &feast_core::repo::definitions::DurationValue::Text(every.clone()),
                )
                .unwrap_or_else(|e| panic!("{context}: --every {every}: {e}"));
                assert!(d.seconds > 0, "{context}: --every {every} is not positive");
            }
            Some((Kind::Materializer, a.host.clone(), a.port))
        }
        _ => None,
    };
    let materializer_url = match &cli.command {
        Command::Serve(a) => a.materializer.clone(),
        _ => None,
    };
    let creates_repo = match &cli.command {
        Command::Init { name } => Some(
            cli.chdir
                .clone()
                .unwrap_or_else(|| panic!("{context}: `init` without -c"))
                .join(name)
                .join("feature_repo"),
        ),
        _ => None,
    };
    Invocation {
        chdir: cli.chdir.clone(),
        yaml: cli.feature_store_yaml.clone(),
        server,
        materializer_url,
        creates_repo,
    }
}

/// The arguments after `feast-rs` of one call.
enum Call {
    /// To be parsed by clap.
    FeastRs(Vec<String>),
    /// `feast-rs probe ARGS`: parsed, and its URL checked against the servers.
    Probe(Vec<String>),
}

/// The `feast-rs` calls of a container's entrypoint + command: itself when the entrypoint
/// is the image's (`feast-rs`), else the `feast-rs ...` commands of a `/bin/sh -c` script
/// (split on `;`, `&&`, `||` and newlines).
fn calls(context: &str, entrypoint: &[String], command: &[String]) -> Vec<Call> {
    let split = |args: &[String]| -> Call {
        if args.first().map(String::as_str) == Some("probe") {
            Call::Probe(args[1..].to_vec())
        } else {
            Call::FeastRs(args.to_vec())
        }
    };
    match entrypoint.first().map(String::as_str) {
        None | Some("feast-rs") => {
            let mut args: Vec<String> = entrypoint.iter().skip(1).cloned().collect();
            args.extend(command.iter().cloned());
            vec![split(&args)]
        }
        Some("/bin/sh") | Some("sh") => {
            assert!(
                entrypoint.len() == 2 && command.len() == 1
                    || entrypoint.len() == 3 && command.is_empty(),
                "{context}: expected `sh -c SCRIPT`"
            );
            let script = command.first().unwrap_or_else(|| &entrypoint[2]);
            let script = script
                .replace("&&", ";")
                .replace("||", ";")
                .replace('\n', ";");
            script
                .split(';')
                .filter_map(|segment| {
                    let words: Vec<String> =
                        segment.split_whitespace().map(str::to_owned).collect();
                    let at = words.iter().position(|w| w == "feast-rs")?;
                    Some(split(&words[at + 1..]))
                })
                .collect()
        }
        Some(other) => panic!("{context}: unexpected entrypoint {other}"),
    }
}

/// `(scheme, host, port)` of `http://h:p/path` or `grpc://h:p`.
fn url_parts(context: &str, url: &str) -> (String, String, u16) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{context}: {url} has no scheme"));
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{context}: {url} has no port"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("{context}: {url}: bad port"));
    (scheme.to_owned(), host.to_owned(), port)
}

/// `feast-rs probe ARGS` must be a probe call the CLI accepts.
fn parse_probe(context: &str, args: &[String]) {
    let argv = ["feast-rs", "probe"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Probe(_),
            ..
        }) => {}
        Ok(_) => panic!("{context}: `probe {args:?}` is not a probe"),
        Err(e) => panic!("{context}: `feast-rs probe {args:?}` is refused by the CLI: {e}"),
    }
}

/// What the probe of a server of `kind` must ask.
fn probe_scheme(kind: Kind) -> &'static str {
    match kind {
        Kind::Online => "http",
        _ => "grpc",
    }
}

/// Loads a feature_store.yaml as the server would, with `env` as its environment (a
/// variable the file uses that the container does not get fails).
fn load_config(
    context: &str,
    name: &str,
    text: &str,
    env: &BTreeMap<String, String>,
) -> RepoConfig {
    let lookup = |var: &str| env.get(var).cloned();
    RepoConfig::from_yaml_str_with_env(text, name, Path::new("/feast"), &lookup)
        .unwrap_or_else(|e| panic!("{context}: {name} does not load: {e}"))
}

/// A server another service's configuration names: what it must be, host, port.
type Address = (Kind, String, u16);

/// The addresses a configuration gives for other services.
fn remote_addresses(context: &str, config: &RepoConfig) -> Vec<Address> {
    let mut out = Vec::new();
    if let RegistryConfig::Remote(r) = &config.registry {
        let (host, port) = r
            .path
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{context}: registry path {} has no port", r.path));
        let port = port.parse().expect("registry port");
        out.push((Kind::Registry, host.to_owned(), port));
    }
    if let Some(OfflineStoreConfig::Remote(r)) = &config.offline_store {
        let port = r
            .port
            .unwrap_or_else(|| panic!("{context}: offline_store without port"));
        out.push((Kind::Offline, r.host.clone(), port));
    }
    out
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

struct ComposeService {
    name: String,
    calls: Vec<Call>,
    /// The container's environment, compose defaults interpolated.
    env: BTreeMap<String, String>,
    /// container path -> host path (bind mounts, `${VAR:-default}` kept) or `volume:NAME`.
    mounts: BTreeMap<PathBuf, String>,
    published: Vec<u16>,
    healthcheck: Vec<String>,
}

fn compose_services() -> Vec<ComposeService> {
    let doc = yaml_documents(&root().join("docker-compose.yml")).remove(0);
    let services = doc["services"].as_mapping().expect("services");
    services
        .iter()
        .map(|(name, s)| {
            let name = str_of(name);
            let env = match s.get("environment") {
                Some(Value::Mapping(m)) => m
                    .iter()
                    .map(|(k, v)| (str_of(k), expand_config_set(&str_of(v), "no_auth")))
                    .collect(),
                None => BTreeMap::new(),
                Some(other) => panic!("{name}: write environment as a mapping: {other:?}"),
            };
            let mounts = strings(s.get("volumes"))
                .into_iter()
                .map(|v| {
                    let parts = split_outside_braces(&v);
                    let source = if parts[0].starts_with('.') || parts[0].starts_with('/') {
                        parts[0].clone()
                    } else {
                        format!("volume:{}", parts[0])
                    };
                    (PathBuf::from(&parts[1]), source)
                })
                .collect();
            let published = strings(s.get("ports"))
                .iter()
                .map(|p| {
                    let container = p.rsplit(':').next().unwrap();
                    container
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: port {p}"))
                })
                .collect();
            let healthcheck = strings(s.get("healthcheck").and_then(|h| h.get("test")));
            let image = s.get("image").map(str_of).unwrap_or_default();
            let calls = if image.starts_with("feast-rs") {
                calls(
                    &name,
                    &strings(s.get("entrypoint")),
                    &strings(s.get("command")),
                )
            } else {
                Vec::new()
            };
            ComposeService {
                name,
                calls,
                env,
                mounts,
                published,
                healthcheck,
            }
        })
        .collect()
}

/// `a:b:c` split on the colons outside `${...}` (whose `:-` introduces a default).
fn split_outside_braces(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    let mut prev = ' ';
    for ch in text.chars() {
        match ch {
            '{' if prev == '$' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ':' if depth == 0 => {
                parts.push(String::new());
                prev = ch;
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(ch);
        prev = ch;
    }
    parts
}

/// A compose path with its `${VAR:-default}` interpolated: `set` for `FEAST_RS_CONFIG`
/// (which selects the configuration set), the default for any other variable.
fn expand_config_set(path: &str, set: &str) -> String {
    let mut out = path.to_owned();
    while let Some(start) = out.find("${") {
        let end = start + out[start..].find('}').expect("unclosed ${");
        let inner = &out[start + 2..end];
        let (var, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let value = if var == "FEAST_RS_CONFIG" {
            set
        } else {
            default
        };
        out = format!("{}{}{}", &out[..start], value, &out[end + 1..]);
    }
    out
}

/// The host path of a container path under one of the service's bind mounts.
fn host_path(service: &ComposeService, container: &Path, set: &str) -> Option<PathBuf> {
    service.mounts.iter().find_map(|(mount, source)| {
        let rest = container.strip_prefix(mount).ok()?;
        let source = source.strip_prefix("./")?;
        Some(root().join(expand_config_set(source, set)).join(rest))
    })
}

#[test]
fn compose_commands_ports_and_configs_agree() {
    let services = compose_services();
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    // The compose default must be one of the sets checked below.
    let text = read(&root().join("docker-compose.yml"));
    assert!(text.contains("${FEAST_RS_CONFIG:-no_auth}"));

    // Repositories `feast-rs init` creates, per (named volume, container path).
    let mut created: BTreeSet<(String, PathBuf)> = BTreeSet::new();
    let mut servers: BTreeMap<String, (Kind, u16)> = BTreeMap::new();
    for s in &services {
        for call in &s.calls {
            let Call::FeastRs(args) = call else { continue };
            let inv = parse(&s.name, args);
            if let Some(repo) = inv.creates_repo {
                let (mount, source) = s
                    .mounts
                    .iter()
                    .find(|(m, _)| repo.starts_with(m))
                    .unwrap_or_else(|| panic!("{}: init outside any volume", s.name));
                assert!(source.starts_with("volume:"), "{}: {mount:?}", s.name);
                created.insert((source.clone(), repo));
            }
            if let Some((kind, _, port)) = inv.server {
                servers.insert(s.name.clone(), (kind, port));
            }
        }
    }
    let kinds: BTreeSet<String> = servers.values().map(|(k, _)| format!("{k:?}")).collect();
    assert_eq!(kinds.len(), 4, "{servers:?}");

    for s in &services {
        for call in &s.calls {
            match call {
                Call::Probe(args) => {
                    parse_probe(&s.name, args);
                    let (_, host, port) = url_parts(&s.name, &args[0]);
                    let target = servers
                        .get(&host)
                        .unwrap_or_else(|| panic!("{}: probe of unknown {host}", s.name));
                    assert_eq!(target.1, port, "{}: probe {}", s.name, args[0]);
                }
                Call::FeastRs(args) => {
                    let inv = parse(&s.name, args);
                    check_compose_invocation(s, &inv, &servers, &created, &names);
                }
            }
        }
    }

    // Health checks: every server's asks its own port, the right protocol, locally.
    for (name, (kind, port)) in &servers {
        let s = services.iter().find(|s| &s.name == name).unwrap();
        let test = &s.healthcheck;
        assert_eq!(
            test.get(..3),
            Some(&["CMD".to_owned(), "feast-rs".to_owned(), "probe".to_owned()][..]),
            "{name}: healthcheck {test:?}"
        );
        parse_probe(name, &test[3..]);
        let (scheme, host, probe_port) = url_parts(name, &test[3]);
        assert_eq!(scheme, probe_scheme(*kind), "{name}");
        assert_eq!(host, "127.0.0.1", "{name}");
        assert_eq!(probe_port, *port, "{name}: healthcheck port");
        if *kind == Kind::Online {
            assert!(test[3].ends_with("/readyz"), "{name}: {}", test[3]);
        }
        assert_eq!(s.published, vec![*port], "{name}: published ports");
    }
}

fn check_compose_invocation(
    s: &ComposeService,
    inv: &Invocation,
    servers: &BTreeMap<String, (Kind, u16)>,
    created: &BTreeSet<(String, PathBuf)>,
    names: &BTreeSet<&str>,
) {
    let ctx = &s.name;
    if let Some((_, host, _)) = &inv.server {
        assert_eq!(host, "0.0.0.0", "{ctx}: a server must bind every interface");
    }
    if let Some(dir) = &inv.chdir
        && inv.creates_repo.is_none()
    {
        let on_bind = COMPOSE_CONFIG_SETS
            .iter()
            .all(|set| host_path(s, dir, set).is_some_and(|p| p.is_dir()));
        let on_volume = created.iter().any(|(volume, repo)| {
            repo == dir
                && s.mounts
                    .iter()
                    .any(|(m, src)| src == volume && dir.starts_with(m))
        });
        assert!(
            on_bind || on_volume,
            "{ctx}: -c {} is neither a mounted directory nor a repository `init` creates \
             on a volume this service mounts",
            dir.display()
        );
    }
    let Some(yaml) = &inv.yaml else {
        assert!(inv.creates_repo.is_some(), "{ctx}: no -f");
        return;
    };
    for set in COMPOSE_CONFIG_SETS {
        let path = host_path(s, yaml, set)
            .unwrap_or_else(|| panic!("{ctx}: -f {} is not on a bind mount", yaml.display()));
        assert!(path.is_file(), "{ctx}: {} does not exist", path.display());
        let config = load_config(ctx, &path.display().to_string(), &read(&path), &s.env);
        for (kind, host, port) in remote_addresses(ctx, &config) {
            assert!(names.contains(host.as_str()), "{ctx}: {host} is no service");
            assert_eq!(
                servers.get(&host),
                Some(&(kind, port)),
                "{ctx} ({set}): {host}:{port} is not a {kind:?} server on that port"
            );
        }
        if inv
            .server
            .as_ref()
            .is_some_and(|(k, _, _)| *k == Kind::Registry)
        {
            assert!(
                matches!(config.registry, RegistryConfig::Sql(_)),
                "{ctx}: the registry server should serve the SQL registry"
            );
        }
    }
    if let Some(url) = &inv.materializer_url {
        let (scheme, host, port) = url_parts(ctx, url);
        assert_eq!(scheme, "http");
        assert_eq!(
            servers.get(&host),
            Some(&(Kind::Materializer, port)),
            "{ctx}: {url}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// deploy/kubernetes

fn k8s_objects() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| yaml_documents(f)).collect()
}

fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn name_of(v: &Value) -> String {
    str_of(&v["metadata"]["name"])
}

/// A named or numeric container port, resolved against the container's `ports`.
fn resolve_port(ports: &BTreeMap<String, u16>, v: &Value) -> u16 {
    match v {
        Value::Number(n) => n.as_u64().unwrap() as u16,
        Value::String(name) => *ports
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("bad port {other:?}"),
    }
}

#[test]
fn kubernetes_commands_ports_probes_and_configs_agree() {
    let objects = k8s_objects();
    let config_map = objects
        .iter()
        .find(|o| kind_of(o) == "ConfigMap")
        .expect("a ConfigMap");
    let config_map_name = name_of(config_map);
    let config_files: BTreeMap<String, String> = config_map["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (str_of(k), str_of(v)))
        .collect();
    let secrets: BTreeMap<String, Value> = objects
        .iter()
        .filter(|o| kind_of(o) == "Secret")
        .map(|o| (name_of(o), o["stringData"].clone()))
        .collect();
    // Services: (name, selector, [(port, targetPort)]).
    type ServicePorts = Vec<(u16, Value)>;
    let services: Vec<(String, Value, ServicePorts)> = objects
        .iter()
        .filter(|o| kind_of(o) == "Service")
        .map(|o| {
            let ports = o["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| (p["port"].as_u64().unwrap() as u16, p["targetPort"].clone()))
                .collect();
            (name_of(o), o["spec"]["selector"].clone(), ports)
        })
        .collect();

    struct Server {
        kind: Kind,
        /// The Kubernetes Services that reach it on that port, by name.
        reached_by: Vec<(String, u16)>,
    }
    let mut servers: Vec<Server> = Vec::new();
    // (context, the addresses its configuration names), resolved once every server is known.
    let mut to_resolve: Vec<(String, Vec<Address>)> = Vec::new();
    let mut probes: Vec<(String, String)> = Vec::new();
    let mut materializer_urls: Vec<(String, String)> = Vec::new();

    for workload in objects
        .iter()
        .filter(|o| matches!(kind_of(o), "Deployment" | "Job"))
    {
        let pod = &workload["spec"]["template"];
        let labels = &pod["metadata"]["labels"];
        let spec = &pod["spec"];
        let volumes: BTreeMap<String, Value> = spec["volumes"]
            .as_sequence()
            .map(|vs| vs.iter().map(|v| (str_of(&v["name"]), v.clone())).collect())
            .unwrap_or_default();
        let containers: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec.get(*k).and_then(Value::as_sequence))
            .flatten()
            .collect();
        // Repositories `init` creates in this pod (init containers run first).
        let mut created: BTreeSet<PathBuf> = BTreeSet::new();
        for c in containers {
            let ctx = format!("{}/{}", name_of(workload), str_of(&c["name"]));
            let env: BTreeMap<String, String> = c["env"]
                .as_sequence()
                .map(|e| {
                    e.iter()
                        .map(|v| (str_of(&v["name"]), env_value(&secrets, v)))
                        .collect()
                })
                .unwrap_or_default();
            let mounts: BTreeMap<PathBuf, String> = c["volumeMounts"]
                .as_sequence()
                .map(|ms| {
                    ms.iter()
                        .map(|m| (PathBuf::from(str_of(&m["mountPath"])), str_of(&m["name"])))
                        .collect()
                })
                .unwrap_or_default();
            let ports: BTreeMap<String, u16> = c["ports"]
                .as_sequence()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            (
                                p.get("name").map(str_of).unwrap_or_default(),
                                p["containerPort"].as_u64().unwrap() as u16,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for call in calls(&ctx, &strings(c.get("command")), &strings(c.get("args"))) {
                let args = match call {
                    Call::Probe(args) => {
                        parse_probe(&ctx, &args);
                        probes.push((ctx.clone(), args[0].clone()));
                        continue;
                    }
                    Call::FeastRs(args) => args,
                };
                let inv = parse(&ctx, &args);
                if let Some(repo) = &inv.creates_repo {
                    assert!(
                        mounts.keys().any(|m| repo.starts_with(m)),
                        "{ctx}: init outside any volume"
                    );
                    created.insert(repo.clone());
                }
                if let Some(dir) = &inv.chdir {
                    assert!(
                        mounts.contains_key(dir) || created.contains(dir),
                        "{ctx}: -c {} is neither mounted nor created by `init` in this pod",
                        dir.display()
                    );
                }
                if let Some(yaml) = &inv.yaml {
                    let (mount, volume) = mounts
                        .iter()
                        .find(|(m, _)| yaml.starts_with(m))
                        .unwrap_or_else(|| panic!("{ctx}: -f {} not mounted", yaml.display()));
                    assert_eq!(
                        volumes[volume]["configMap"]["name"].as_str(),
                        Some(config_map_name.as_str()),
                        "{ctx}: -f is not on the ConfigMap"
                    );
                    let key = yaml.strip_prefix(mount).unwrap().display().to_string();
                    let text = config_files
                        .get(&key)
                        .unwrap_or_else(|| panic!("{ctx}: the ConfigMap has no {key}"));
                    let config = load_config(&ctx, &format!("ConfigMap {key}"), text, &env);
                    to_resolve.push((ctx.clone(), remote_addresses(&ctx, &config)));
                    if inv
                        .server
                        .as_ref()
                        .is_some_and(|(k, _, _)| *k == Kind::Registry)
                    {
                        assert!(matches!(config.registry, RegistryConfig::Sql(_)), "{ctx}");
                    }
                }
                if let Some(url) = &inv.materializer_url {
                    materializer_urls.push((ctx.clone(), url.clone()));
                }
                let Some((kind, host, port)) = inv.server else {
                    continue;
                };
                assert_eq!(host, "0.0.0.0", "{ctx}: a server must bind every interface");
                assert_eq!(
                    ports.values().copied().collect::<Vec<_>>(),
                    vec![port],
                    "{ctx}: containerPort"
                );
                check_probes(&ctx, kind, port, &ports, c);
                let reached_by = services
                    .iter()
                    .filter(|(_, selector, _)| {
                        selector
                            .as_mapping()
                            .unwrap()
                            .iter()
                            .all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .map(|(name, _, svc_ports)| {
                        for (svc_port, target) in svc_ports {
                            assert_eq!(resolve_port(&ports, target), port, "{name}: targetPort");
                            assert_eq!(*svc_port, port, "{name}: port");
                        }
                        (name.clone(), port)
                    })
                    .collect::<Vec<_>>();
                assert_eq!(reached_by.len(), 1, "{ctx}: one Service must select it");
                servers.push(Server { kind, reached_by });
            }
        }
    }
    let kinds: BTreeSet<_> = servers.iter().map(|s| format!("{:?}", s.kind)).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");

    let find = |host: &str, port: u16| -> Option<Kind> {
        servers
            .iter()
            .find(|s| s.reached_by.iter().any(|(n, p)| n == host && *p == port))
            .map(|s| s.kind)
    };
    for (ctx, addresses) in &to_resolve {
        for (kind, host, port) in addresses {
            assert_eq!(find(host, *port), Some(*kind), "{ctx}: {host}:{port}");
        }
    }
    for (ctx, url) in &probes {
        let (scheme, host, port) = url_parts(ctx, url);
        let kind = find(&host, port).unwrap_or_else(|| panic!("{ctx}: probe {url}"));
        assert_eq!(scheme, probe_scheme(kind), "{ctx}: {url}");
    }
    for (ctx, url) in &materializer_urls {
        let (_, host, port) = url_parts(ctx, url);
        assert_eq!(find(&host, port), Some(Kind::Materializer), "{ctx}: {url}");
    }
}

/// A container's `env` entry: its `value`, or the Secret key it refers to (`stringData`).
fn env_value(secrets: &BTreeMap<String, Value>, entry: &Value) -> String {
    if let Some(v) = entry.get("value") {
        return str_of(v);
    }
    let reference = &entry["valueFrom"]["secretKeyRef"];
    let secret = secrets
        .get(&str_of(&reference["name"]))
        .unwrap_or_else(|| panic!("no Secret for {entry:?}"));
    str_of(&secret[reference["key"].as_str().unwrap()])
}

/// Readiness asks the server's readiness (`""` / `/readyz`), liveness its liveness
/// (`liveness` / `/healthz`), both on the port it binds.
fn check_probes(ctx: &str, kind: Kind, port: u16, ports: &BTreeMap<String, u16>, c: &Value) {
    for (probe, grpc_service, path) in [
        ("readinessProbe", "", "/readyz"),
        ("livenessProbe", "liveness", "/healthz"),
    ] {
        let p = c.get(probe).unwrap_or_else(|| panic!("{ctx}: no {probe}"));
        match kind {
            Kind::Online => {
                let get = p.get("httpGet").unwrap_or_else(|| panic!("{ctx}: {probe}"));
                assert_eq!(resolve_port(ports, &get["port"]), port, "{ctx}: {probe}");
                assert_eq!(get["path"].as_str(), Some(path), "{ctx}: {probe}");
            }
            _ => {
                let grpc = p.get("grpc").unwrap_or_else(|| panic!("{ctx}: {probe}"));
                assert_eq!(resolve_port(ports, &grpc["port"]), port, "{ctx}: {probe}");
                let service = grpc.get("service").map(str_of).unwrap_or_default();
                assert_eq!(service, grpc_service, "{ctx}: {probe} service");
            }
        }
    }
}

#[test]
fn clap_refuses_what_a_manifest_must_not_say() {
    // The checks above rely on clap refusing unknown flags and bad ports.
    for args in [
        vec!["serve", "--prot", "6566"],
        vec!["serve-registry", "--port", "70000"],
        vec!["serve-materializer", "--every"],
    ] {
        let argv = std::iter::once("feast-rs").chain(args.iter().copied());
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }
}
