//! feature_store.yaml parsing: defaults, every supported store, env substitution,
//! located errors, helpers, serialization, and Feast's own templates.

use std::path::{Path, PathBuf};

use feast_core::config::*;

const SRC: &str = "feature_store.yaml";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> RepoConfig {
    RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/repo"), &no_env)
        .unwrap_or_else(|e| panic!("unexpected error: {e}\n--- input:\n{text}"))
}

fn parse_err(text: &str) -> ConfigError {
    match RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/repo"), &no_env) {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e,
    }
}

/// Assert kind, `file:line:col:` prefix and that the message mentions every needle.
fn assert_err(e: &ConfigError, kind: ConfigErrorKind, line: usize, col: usize, needles: &[&str]) {
    let text = e.to_string();
    assert_eq!(e.kind(), kind, "kind of: {text}");
    assert_eq!(e.line(), Some(line), "line of: {text}");
    assert_eq!(e.column(), Some(col), "column of: {text}");
    assert!(
        text.starts_with(&format!("{SRC}:{line}:{col}: ")),
        "prefix of: {text}"
    );
    for n in needles {
        assert!(text.contains(n), "`{n}` not in: {text}");
    }
    assert!(!text.contains('\u{1}'), "internal marker leaked: {text:?}");
}

const MINIMAL: &str = "project: x\nregistry: data/registry.db\n";

#[test]
fn minimal_file_gets_every_default() {
    let c = parse(MINIMAL);
    assert_eq!(c.project, "x");
    assert_eq!(c.project_description, None);
    assert_eq!(c.provider, "local");
    assert_eq!(c.repo_path, PathBuf::from("/repo"));
    assert_eq!(c.entity_key_serialization_version, 3);
    assert!(c.coerce_tz_aware);
    assert_eq!(c.materialization, MaterializationConfig::default());
    assert!(!c.materialization.pull_latest_features);
    assert_eq!(c.materialization.online_write_batch_size, None);
    assert_eq!(c.auth, AuthConfig::NoAuth);
    assert_eq!(c.batch_engine, BatchEngineConfig::default());
    assert!(c.feature_server.is_none());
    assert!(c.embedding_model.is_none());
    assert!(c.flags.is_none());
    assert!(c.openlineage.is_none() && c.mlflow.is_none());
    assert!(c.data_quality_monitoring.is_none());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    let RegistryConfig::File(r) = &c.registry else {
        panic!("file registry expected: {:?}", c.registry)
    };
    assert_eq!(r, &FileRegistryConfig::with_path("data/registry.db"));
    assert_eq!(r.cache_ttl_seconds, 600);
    assert_eq!(r.cache_mode, CacheMode::Sync);
    assert_eq!(r.registry_store_type, None);
    assert!(!r.purge_feast_metadata);
    assert!(!r.enable_online_feature_view_versioning);
    assert!(!r.serve_features_while_materializing);
    assert!(r.extra.is_empty());
    assert_eq!(
        c.registry_path(),
        Some(PathBuf::from("/repo/data/registry.db"))
    );
    assert!(c.registry_sql_url().is_none());

    let Some(OnlineStoreConfig::Sqlite(s)) = &c.online_store else {
        panic!("sqlite expected: {:?}", c.online_store)
    };
    assert_eq!(s, &SqliteOnlineStoreConfig::default());
    assert_eq!(s.path, "data/online.db");
    assert_eq!(s.vector_enabled, Some(false));
    assert_eq!(s.similarity.as_deref(), Some("cosine"));
    assert!(!s.text_search_enabled && !s.enable_openai_compatible_store);
    assert_eq!(
        c.sqlite_online_store_path(),
        Some(PathBuf::from("/repo/data/online.db"))
    );

    assert!(matches!(c.offline_store, Some(OfflineStoreConfig::Dask(_))));
}

#[test]
fn feast_configuration_view_matches_feast_for_the_minimal_file() {
    // `feast configuration` on this file prints exactly these lines (checked with feast 0.67.0).
    let expected = "project: x\nregistry: data/registry.db\nonline_store: sqlite\nauth:\n  type: no_auth\noffline_store: dask\nbatch_engine: local\n";
    assert_eq!(parse(MINIMAL).feast_configuration_yaml(), expected);
}

#[test]
fn feast_configuration_view_adds_missing_types() {
    // Input and expected output taken from `feast configuration` (feast 0.67.0), minus an
    // unknown top-level key that Feast would echo and feast-rs rejects.
    let c = parse(
        "registry:\n  path: data/registry.db\n  zzz: 1\nproject: x\nonline_store:\n  path: /tmp/o.db\nmaterialization: {zzz: 1, online_write_batch_size: \"5\"}\nauth: {type: oidc, token: abc}\nfeature_server: {enabled: true}\nentity_key_serialization_version: 2\ncoerce_tz_aware: yes\n",
    );
    let expected = "project: x\nregistry:\n  path: data/registry.db\n  zzz: 1\nonline_store:\n  path: /tmp/o.db\n  type: sqlite\nauth:\n  type: oidc\n  token: abc\noffline_store: dask\nbatch_engine: local\nfeature_server:\n  enabled: true\n  type: local\nentity_key_serialization_version: 2\ncoerce_tz_aware: true\nmaterialization:\n  online_write_batch_size: 5\n";
    assert_eq!(c.feast_configuration_yaml(), expected);
}

#[test]
fn sqlite_online_store_keys_and_paths() {
    let c = parse(
        "project: p\nregistry: /abs/registry.db\nonline_store:\n  type: sqlite\n  path: /var/lib/online.db\n  vector_enabled: true\n  similarity: L2\n  text_search_enabled: yes\n  enable_openai_compatible_store: true\n",
    );
    let Some(OnlineStoreConfig::Sqlite(s)) = &c.online_store else {
        panic!()
    };
    assert_eq!(s.vector_enabled, Some(true));
    assert_eq!(s.similarity.as_deref(), Some("L2"));
    assert!(s.text_search_enabled && s.enable_openai_compatible_store);
    assert_eq!(
        c.sqlite_online_store_path(),
        Some(PathBuf::from("/var/lib/online.db"))
    );
    assert_eq!(c.registry_path(), Some(PathBuf::from("/abs/registry.db")));

    // The full class path is an accepted alias; a mapping without `type` is sqlite too.
    let c = parse(
        "project: p\nregistry: r.db\nonline_store:\n  type: feast.infra.online_stores.sqlite.SqliteOnlineStore\n",
    );
    assert!(matches!(c.online_store, Some(OnlineStoreConfig::Sqlite(_))));
    let c = parse("project: p\nregistry: r.db\nonline_store:\n  path: o.db\n");
    assert_eq!(
        c.sqlite_online_store_path(),
        Some(PathBuf::from("/repo/o.db"))
    );
}

#[test]
fn online_store_null_forms_mean_none() {
    for v in ["null", "", "None", "none", "\"null\""] {
        let c = parse(&format!("project: p\nregistry: r.db\nonline_store: {v}\n"));
        assert!(c.online_store.is_none(), "online_store: {v}");
    }
    let c = parse("project: p\nregistry: r.db\noffline_store: null\n");
    assert!(c.offline_store.is_none());
}

#[test]
fn redis_online_store_keys() {
    let c = parse(
        "project: p\nregistry: r.db\nonline_store:\n  type: redis\n  redis_type: redis_cluster\n  client: glide\n  connection_string: \"r1:7000,r2:7001,ssl=true,password=s3cret\"\n  key_ttl_seconds: 3600\n  full_scan_for_deletion: false\n  skip_dedup: true\n  sentinel_master: m\n",
    );
    let Some(OnlineStoreConfig::Redis(r)) = &c.online_store else {
        panic!()
    };
    assert_eq!(r.redis_type, RedisType::RedisCluster);
    assert_eq!(r.client, RedisClient::Glide);
    assert_eq!(r.key_ttl_seconds, Some(3600));
    assert_eq!(r.full_scan_for_deletion, Some(false));
    assert!(r.skip_dedup);
    assert_eq!(r.sentinel_master, "m");
    let cs = r.parsed_connection_string().unwrap();
    assert_eq!(cs.nodes.len(), 2);
    assert!(cs.ssl);
    assert_eq!(cs.password.as_deref(), Some("s3cret"));

    // Defaults, and the string form.
    let c = parse("project: p\nregistry: r.db\nonline_store: redis\n");
    let Some(OnlineStoreConfig::Redis(r)) = &c.online_store else {
        panic!()
    };
    assert_eq!(r, &RedisOnlineStoreConfig::default());
    assert_eq!(r.connection_string, "localhost:6379");
    assert_eq!(r.sentinel_master, "mymaster");
    assert_eq!(r.redis_type, RedisType::Redis);
    assert_eq!(r.client, RedisClient::Redis);
    assert_eq!(r.key_ttl_seconds, None);
    assert_eq!(r.full_scan_for_deletion, Some(true));
    assert!(!r.skip_dedup);
}

#[test]
fn redis_glide_with_sentinel_is_rejected_like_feast() {
    let e = parse_err(
        "project: p\nregistry: r.db\nonline_store:\n  type: redis\n  redis_type: redis_sentinel\n  client: glide\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        3,
        &["online_store", "glide", "redis_sentinel"],
    );
}

#[test]
fn redis_connection_string_parsing() {
    let cs = RedisConnectionString::parse(
        "redis-0.svc:6379, redis-1.svc:6380 ,db=2,ssl=true,username=alice,socket_timeout=1.5,health_check_interval=30",
    );
    let cs = cs.unwrap();
    assert_eq!(
        cs.nodes,
        vec![
            RedisNode {
                host: "redis-0.svc".into(),
                port: Some(6379)
            },
            RedisNode {
                host: "redis-1.svc".into(),
                port: Some(6380)
            },
        ]
    );
    assert_eq!(cs.db, Some(2));
    assert_eq!(cs.username.as_deref(), Some("alice"));
    assert!(cs.ssl);
    assert_eq!(cs.options["socket_timeout"], serde_json::json!(1.5));
    assert_eq!(cs.options["health_check_interval"], serde_json::json!(30));

    let cs = RedisConnectionString::parse("localhost:6379,password=\"quoted\",ssl=0").unwrap();
    assert_eq!(cs.password.as_deref(), Some("quoted"));
    assert!(!cs.ssl, "ssl=0 is falsy");
    assert_eq!(cs.db, None);

    // Values that are not JSON stay strings; Python truthiness decides `ssl`.
    let cs = RedisConnectionString::parse("h:1,password=abc$1,ssl=False").unwrap();
    assert_eq!(cs.password.as_deref(), Some("abc$1"));
    assert!(
        cs.ssl,
        "ssl=False is the non-empty string 'False' in Feast, which is truthy"
    );
    assert_eq!(cs.options["ssl"], serde_json::json!("False"));

    let cs = RedisConnectionString::parse("h:1,password=12345,db=\"3\"").unwrap();
    assert_eq!(cs.password.as_deref(), Some("12345"));
    assert_eq!(cs.db, Some(3));

    // Items are split on every comma, quotes or not, as in Feast: `w"` becomes a host.
    let cs = RedisConnectionString::parse("h:1,password=\"p,w\"").unwrap();
    assert_eq!(cs.password.as_deref(), Some("\"p"));
    assert_eq!(
        cs.nodes[1],
        RedisNode {
            host: "w\"".into(),
            port: None
        }
    );

    let cs = RedisConnectionString::parse("cluster-node").unwrap();
    assert_eq!(cs.nodes[0].port, None);

    assert!(RedisConnectionString::parse("h:notaport").is_err());
    assert!(RedisConnectionString::parse("db=0").is_err());
    assert!(RedisConnectionString::parse("redis://h:6379/0").is_err());
    assert!(RedisConnectionString::parse("h:1,db=zero").is_err());
}

#[test]
fn redis_bad_connection_string_is_located() {
    let e = parse_err(
        "project: p\nregistry: r.db\nonline_store:\n  type: redis\n  connection_string: \"h:port\"\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        5,
        22,
        &["online_store.connection_string", "h:port"],
    );
    // A node without a port is fine for a cluster only.
    parse(
        "project: p\nregistry: r.db\nonline_store: {type: redis, redis_type: redis_cluster, connection_string: node}\n",
    );
    let e = parse_err(
        "project: p\nregistry: r.db\nonline_store: {type: redis, connection_string: node}\n",
    );
    assert!(e.to_string().contains("has no port"), "{e}");
}

#[test]
fn postgres_online_store_keys() {
    let c = parse(
        "project: p\nregistry: r.db\nonline_store:\n  type: postgres\n  host: db\n  port: \"5433\"\n  database: feast\n  db_schema: online\n  user: u\n  password: pw\n  sslmode: disable\n  sslkey_path: /k\n  sslcert_path: /c\n  sslrootcert_path: /ca\n  min_conn: 2\n  max_conn: 20\n  keepalives_idle: 30\n  conn_type: pool\n  vector_enabled: true\n  max_batched_result_rows: 0\n",
    );
    let Some(OnlineStoreConfig::Postgres(p)) = &c.online_store else {
        panic!()
    };
    assert_eq!(p.host, "db");
    assert_eq!(p.port, 5433, "pydantic's lax int accepts numeric strings");
    assert_eq!(p.database, "feast");
    assert_eq!(p.db_schema, "online");
    assert_eq!((p.user.as_str(), p.password.as_str()), ("u", "pw"));
    assert_eq!(p.sslmode.as_deref(), Some("disable"));
    assert_eq!(p.sslkey_path.as_deref(), Some("/k"));
    assert_eq!(p.sslcert_path.as_deref(), Some("/c"));
    assert_eq!(p.sslrootcert_path.as_deref(), Some("/ca"));
    assert_eq!((p.min_conn, p.max_conn), (2, 20));
    assert_eq!(p.keepalives_idle, Some(30));
    assert_eq!(p.conn_type, PostgresConnType::Pool);
    assert_eq!(p.vector_enabled, Some(true));
    assert_eq!(p.max_batched_result_rows, 0);

    let c = parse(
        "project: p\nregistry: r.db\nonline_store: {type: postgres, host: h, database: d, user: u, password: p}\n",
    );
    let Some(OnlineStoreConfig::Postgres(p)) = &c.online_store else {
        panic!()
    };
    assert_eq!(p.port, 5432);
    assert_eq!(p.db_schema, "public");
    assert_eq!(
        p.sslmode.as_deref(),
        Some("require"),
        "Feast defaults sslmode to require"
    );
    assert_eq!((p.min_conn, p.max_conn), (1, 10));
    assert_eq!(p.conn_type, PostgresConnType::Singleton);
    assert_eq!(p.keepalives_idle, None);
    assert_eq!(p.vector_enabled, Some(false));
    assert_eq!(p.similarity.as_deref(), Some("cosine"));
    assert_eq!(p.enable_openai_compatible_store, Some(false));
    assert_eq!(p.max_batched_result_rows, 2048);

    let e = parse_err(
        "project: p\nregistry: r.db\nonline_store:\n  type: postgres\n  host: h\n  max_batched_result_rows: -1\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        6,
        28,
        &["max_batched_result_rows", "non-negative"],
    );
}

#[test]
fn remote_online_store_keys() {
    let c = parse("project: p\nregistry: r.db\nonline_store:\n  type: remote\n");
    let Some(OnlineStoreConfig::Remote(r)) = &c.online_store else {
        panic!()
    };
    assert_eq!(r, &RemoteOnlineStoreConfig::default());
    assert_eq!(r.path, "http://localhost:6566");
    assert_eq!(r.cert, "");
    assert_eq!(
        (
            r.connection_pool_size,
            r.connection_idle_timeout,
            r.connection_retries
        ),
        (50, 300, 3)
    );
    let c = parse(
        "project: p\nregistry: r.db\nonline_store:\n  type: remote\n  path: https://fs:6566\n  cert: /ca.crt\n  connection_pool_size: 5\n  connection_idle_timeout: 0\n  connection_retries: 0\n",
    );
    let Some(OnlineStoreConfig::Remote(r)) = &c.online_store else {
        panic!()
    };
    assert_eq!(r.path, "https://fs:6566");
    assert_eq!(r.cert, "/ca.crt");
    assert_eq!(
        (
            r.connection_pool_size,
            r.connection_idle_timeout,
            r.connection_retries
        ),
        (5, 0, 0)
    );
}

#[test]
fn offline_stores() {
    for t in ["file", "dask"] {
        let c = parse(&format!(
            "project: p\nregistry: r.db\noffline_store:\n  type: {t}\n"
        ));
        assert!(
            matches!(c.offline_store, Some(OfflineStoreConfig::Dask(_))),
            "{t}"
        );
    }
    let c = parse("project: p\nregistry: r.db\noffline_store: file\n");
    assert!(matches!(c.offline_store, Some(OfflineStoreConfig::Dask(_))));
    let e = parse_err("project: p\nregistry: r.db\noffline_store:\n  type: file\n  path: x\n");
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        5,
        3,
        &["offline_store", "unknown field `path`"],
    );

    let c = parse(
        "project: p\nregistry: r.db\noffline_store:\n  type: duckdb\n  staging_location: s3://b/stage\n",
    );
    let Some(OfflineStoreConfig::Duckdb(d)) = &c.offline_store else {
        panic!()
    };
    assert_eq!(d.staging_location.as_deref(), Some("s3://b/stage"));
    assert_eq!(d.staging_location_endpoint_override, None);

    let c = parse(
        "project: p\nregistry: r.db\noffline_store:\n  type: postgres\n  host: h\n  database: d\n  user: u\n  password: p\n  entity_select_mode: embed_query\n",
    );
    let Some(OfflineStoreConfig::Postgres(p)) = &c.offline_store else {
        panic!()
    };
    assert_eq!(p.entity_select_mode, EntitySelectMode::EmbedQuery);
    assert_eq!(p.port, 5432);
    assert_eq!(p.sslmode.as_deref(), Some("require"));

    let c = parse("project: p\nregistry: r.db\noffline_store:\n  type: remote\n  host: flight\n");
    let Some(OfflineStoreConfig::Remote(r)) = &c.offline_store else {
        panic!()
    };
    assert_eq!(r.port, None);
    assert_eq!(r.scheme, FlightScheme::Http);
    assert_eq!(r.cert, "");
    assert_eq!(r.connection_retries, 3);
    assert_eq!(r.location(), "grpc+tcp://flight:None");

    let c = parse(
        "project: p\nregistry: r.db\noffline_store:\n  type: remote\n  host: flight\n  port: 8815\n  scheme: https\n  cert: /ca.pem\n  connection_retries: 0\n",
    );
    let Some(OfflineStoreConfig::Remote(r)) = &c.offline_store else {
        panic!()
    };
    assert_eq!(r.location(), "grpc+tls://flight:8815");
    assert_eq!(r.connection_retries, 0);

    let e = parse_err("project: p\nregistry: r.db\noffline_store:\n  type: remote\n  port: 8815\n");
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        3,
        &["offline_store", "missing field `host`"],
    );
    // `port` is a StrictInt in Feast: a quoted number is rejected.
    let e = parse_err(
        "project: p\nregistry: r.db\noffline_store:\n  type: remote\n  host: h\n  port: \"8815\"\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        6,
        9,
        &["offline_store.port"],
    );
    let e = parse_err(
        "project: p\nregistry: r.db\noffline_store:\n  type: remote\n  host: h\n  scheme: grpc\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        6,
        11,
        &["offline_store.scheme", "unknown variant `grpc`"],
    );
}

#[test]
fn registry_file_mapping_with_every_key() {
    let c = parse(
        "project: p\nregistry:\n  registry_type: file\n  path: reg/registry.db\n  registry_store_type: FileRegistryStore\n  cache_ttl_seconds: 0\n  cache_mode: thread\n  s3_additional_kwargs: {ServerSideEncryption: AES256}\n  purge_feast_metadata: true\n  enable_online_feature_view_versioning: true\n  mcp: {enabled: true}\n  custom_key: 1\n",
    );
    let RegistryConfig::File(r) = &c.registry else {
        panic!()
    };
    assert_eq!(r.cache_ttl_seconds, 0);
    assert_eq!(r.cache_mode, CacheMode::Thread);
    assert_eq!(r.registry_store_type.as_deref(), Some("FileRegistryStore"));
    assert_eq!(
        r.s3_additional_kwargs.as_ref().unwrap()["ServerSideEncryption"],
        "AES256"
    );
    assert!(r.purge_feast_metadata && r.enable_online_feature_view_versioning);
    assert!(r.mcp.as_ref().unwrap().enabled);
    assert!(r.extra.contains_key("custom_key"));
    assert_eq!(
        c.registry_path(),
        Some(PathBuf::from("/repo/reg/registry.db"))
    );
    assert!(
        c.warnings().iter().any(|w| w.contains("custom_key")),
        "{:?}",
        c.warnings()
    );

    // Feast's StrictInt: a quoted TTL is an error, located at the value.
    let e = parse_err("project: p\nregistry:\n  path: r.db\n  cache_ttl_seconds: \"60\"\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        22,
        &["registry.cache_ttl_seconds"],
    );
    let e = parse_err("project: p\nregistry:\n  cache_ttl_seconds: 60\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        3,
        3,
        &["registry", "`path` is required"],
    );
    let e = parse_err("project: p\nregistry: gs://bucket/registry.db\n");
    assert_err(&e, ConfigErrorKind::Unsupported, 2, 11, &["registry", "gs"]);
    let e = parse_err("project: p\nregistry:\n  path: r.db\n  cache_mode: lazy\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        15,
        &["registry.cache_mode", "`sync`", "`thread`"],
    );
}

#[test]
fn registry_sql_normalizes_urls() {
    let c = parse(
        "project: p\nregistry:\n  registry_type: sql\n  path: postgresql://u:p@db:5432/feast?sslmode=require\n  read_path: postgresql://u:p@replica:5432/feast\n  cache_ttl_seconds: 60\n  sqlalchemy_config_kwargs:\n    echo: false\n    pool_pre_ping: true\n  thread_pool_executor_worker_count: 4\n  schema_mode: verify\n  serve_features_while_materializing: true\n",
    );
    let RegistryConfig::Sql(s) = &c.registry else {
        panic!()
    };
    assert_eq!(
        s.path,
        "postgresql+psycopg://u:p@db:5432/feast?sslmode=require"
    );
    assert_eq!(
        s.read_path.as_deref(),
        Some("postgresql+psycopg://u:p@replica:5432/feast")
    );
    assert_eq!(s.cache_ttl_seconds, 60);
    assert_eq!(s.thread_pool_executor_worker_count, 4);
    assert_eq!(s.schema_mode, SchemaMode::Verify);
    assert!(s.serve_features_while_materializing);
    assert_eq!(s.sqlalchemy_config_kwargs.len(), 2);
    assert_eq!(
        c.registry_sql_url().unwrap().unwrap(),
        SqlUrl::Postgres("postgresql://u:p@db:5432/feast?sslmode=require".into())
    );
    assert_eq!(
        s.read_url().unwrap(),
        SqlUrl::Postgres("postgresql://u:p@replica:5432/feast".into())
    );
    assert!(c.registry_path().is_none());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    let c =
        parse("project: p\nregistry:\n  registry_type: sql\n  path: sqlite:///data/registry.db\n");
    let RegistryConfig::Sql(s) = &c.registry else {
        panic!()
    };
    assert_eq!(
        s.sqlalchemy_config_kwargs.len(),
        1,
        "default {{echo: false}}"
    );
    assert_eq!(s.schema_mode, SchemaMode::Auto);
    assert_eq!(s.thread_pool_executor_worker_count, 0);
    assert_eq!(
        s.read_url().unwrap(),
        SqlUrl::Sqlite("data/registry.db".into())
    );

    let e = parse_err(
        "project: p\nregistry:\n  registry_type: sql\n  path: mysql+pymysql://u:p@h/db\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::Unsupported,
        4,
        9,
        &["registry.path", "mysql"],
    );
    let e = parse_err("project: p\nregistry:\n  registry_type: sql\n  path: postgres://u@h/db\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        9,
        &["registry.path", "postgresql://"],
    );
    let e = parse_err(
        "project: p\nregistry:\n  registry_type: sql\n  schema_mode: never\n  path: sqlite://\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        16,
        &["registry.schema_mode", "unknown variant `never`"],
    );
}

#[test]
fn sql_url_forms() {
    assert_eq!(
        SqlUrl::parse("postgresql://u:p@h:5432/db").unwrap(),
        SqlUrl::Postgres("postgresql://u:p@h:5432/db".into())
    );
    assert_eq!(
        SqlUrl::parse("postgresql+psycopg://u:p@h/db").unwrap(),
        SqlUrl::Postgres("postgresql://u:p@h/db".into())
    );
    assert_eq!(
        SqlUrl::parse("postgresql+psycopg2://h/db").unwrap(),
        SqlUrl::Postgres("postgresql://h/db".into())
    );
    assert_eq!(
        SqlUrl::parse("sqlite:///relative/reg.db").unwrap(),
        SqlUrl::Sqlite("relative/reg.db".into())
    );
    assert_eq!(
        SqlUrl::parse("sqlite:////abs/reg.db").unwrap(),
        SqlUrl::Sqlite("/abs/reg.db".into())
    );
    assert_eq!(
        SqlUrl::parse("sqlite+pysqlite:////abs/reg.db?timeout=5").unwrap(),
        SqlUrl::Sqlite("/abs/reg.db".into())
    );
    assert_eq!(
        SqlUrl::parse("sqlite://").unwrap(),
        SqlUrl::Sqlite(":memory:".into())
    );
    assert_eq!(
        SqlUrl::parse("sqlite:///:memory:").unwrap(),
        SqlUrl::Sqlite(":memory:".into())
    );
    assert!(matches!(
        SqlUrl::parse("mysql://u@h/db"),
        Err(SqlUrlError::UnsupportedDialect { dialect }) if dialect == "mysql"
    ));
    assert!(matches!(
        SqlUrl::parse("sqlite://host/x.db"),
        Err(SqlUrlError::Invalid(_))
    ));
    assert!(matches!(
        SqlUrl::parse("data/registry.db"),
        Err(SqlUrlError::Invalid(_))
    ));
    assert!(matches!(
        SqlUrl::parse("postgres://h/db"),
        Err(SqlUrlError::Invalid(_))
    ));
    assert_eq!(
        SqlUrl::Sqlite("/abs/reg.db".into()).to_string(),
        "sqlite:////abs/reg.db"
    );
    assert_eq!(
        SqlUrl::Sqlite("rel.db".into()).to_string(),
        "sqlite:///rel.db"
    );
    assert_eq!(
        normalize_sql_registry_url("postgresql://a@b/postgresql://"),
        "postgresql+psycopg://a@b/postgresql://"
    );
    assert_eq!(normalize_sql_registry_url("sqlite:///x"), "sqlite:///x");
}

#[test]
fn registry_remote_keys() {
    let c = parse(
        "project: p\nregistry:\n  registry_type: remote\n  path: registry.svc:6570\n  cert: /ca.crt\n  client_cert: /c.crt\n  client_key: /c.key\n  authority: feast.example\n",
    );
    let RegistryConfig::Remote(r) = &c.registry else {
        panic!()
    };
    assert_eq!(r.path, "registry.svc:6570");
    assert_eq!(r.cert, "/ca.crt");
    assert!(!r.is_tls);
    assert!(r.uses_tls());
    assert_eq!(
        (r.client_cert.as_str(), r.client_key.as_str()),
        ("/c.crt", "/c.key")
    );
    assert_eq!(r.authority, "feast.example");
    assert_eq!(r.cache_ttl_seconds, 600);
    assert_eq!(c.registry.type_name(), "remote");
    assert_eq!(c.registry.common().path, "registry.svc:6570");

    let e = parse_err(
        "project: p\nregistry:\n  registry_type: remote\n  path: r:6570\n  is_tls: true\n  client_cert: /c.crt\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        3,
        3,
        &["registry", "client_cert and client_key"],
    );

    let e = parse_err("project: p\nregistry:\n  registry_type: snowflake.registry\n  path: x\n");
    assert_err(
        &e,
        ConfigErrorKind::Unsupported,
        3,
        18,
        &["registry.registry_type", "snowflake.registry"],
    );
    let e = parse_err("project: p\nregistry:\n  path: x\n  registry_type: etcd\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        18,
        &["registry.registry_type", "unknown registry type `etcd`"],
    );
}

#[test]
fn env_substitution() {
    let env = |k: &str| match k {
        "FEAST_PROJECT" => Some("driver_stats".to_owned()),
        "REDIS_HOST" => Some("redis.svc".to_owned()),
        "PG_PORT" => Some("6543".to_owned()),
        _ => None,
    };
    let text = "project: ${FEAST_PROJECT}\nregistry: data/registry.db # see ${UNSET_IN_COMMENT}\nonline_store:\n  type: redis\n  connection_string: \"${REDIS_HOST}:6379,password=pa$$word,username=$UNSET_BARE\"\noffline_store:\n  type: postgres\n  host: h\n  port: \"${PG_PORT}\"\n  database: d\n  user: u\n  password: p\n";
    let c = RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/r"), &env).unwrap();
    assert_eq!(c.project, "driver_stats");
    let Some(OnlineStoreConfig::Redis(r)) = &c.online_store else {
        panic!()
    };
    // `$$` and an unset bare `$NAME` are left untouched, like os.path.expandvars.
    assert_eq!(
        r.connection_string,
        "redis.svc:6379,password=pa$$word,username=$UNSET_BARE"
    );
    let Some(OfflineStoreConfig::Postgres(p)) = &c.offline_store else {
        panic!()
    };
    assert_eq!(p.port, 6543);

    let text = "project: p\nregistry: r.db\nonline_store:\n  type: postgres\n  host: ${PG_HOST}\n";
    let e = RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/r"), &env).unwrap_err();
    assert_err(
        &e,
        ConfigErrorKind::MissingEnvVar,
        5,
        9,
        &["`PG_HOST`", "not set"],
    );

    let e = RepoConfig::from_yaml_str_with_env(
        "project: p\nregistry: ${REG:-data/registry.db}\n",
        SRC,
        Path::new("/r"),
        &env,
    )
    .unwrap_err();
    assert_err(
        &e,
        ConfigErrorKind::MissingEnvVar,
        2,
        11,
        &["not supported", "${REG}"],
    );
}

#[test]
fn error_positions_refer_to_the_original_file_after_substitution() {
    let env = |k: &str| match k {
        "LONG" => Some("a_much_longer_value_than_the_reference".to_owned()),
        "TWO_LINES" => Some("x\n  y".to_owned()),
        _ => None,
    };
    // The bad key is after a substituted value on the same line.
    let text = "project: p\nregistry: r.db\nonline_store: {path: ${LONG}, pth: 1}\n";
    let e = RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/r"), &env).unwrap_err();
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        31,
        &["unknown field `pth`"],
    );
    // A value with a newline adds a line to the substituted text; later lines keep their numbers.
    let text = "project: p\nflags: \"${TWO_LINES}\"\nregistry: r.db\nbogus: 1\n";
    let e = RepoConfig::from_yaml_str_with_env(text, SRC, Path::new("/r"), &env).unwrap_err();
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        4,
        1,
        &["unknown field `bogus`"],
    );
}

#[test]
fn unknown_top_level_key() {
    let e = parse_err("project: p\nregistry: r.db\n\nonlin_store:\n  type: sqlite\n");
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        4,
        1,
        &[
            "unknown field `onlin_store`",
            "expected one of",
            "`online_store`",
        ],
    );
}

#[test]
fn unknown_nested_key() {
    let e = parse_err(
        "project: x\nregistry: data/registry.db\nonline_store:\n  type: sqlite\n  path: data/online.db\n  pth: x\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        6,
        3,
        &[
            "online_store: unknown field `pth`",
            "expected one of `path`",
        ],
    );
    // Flow style, and with the key before `type`.
    let e = parse_err("project: x\nregistry: r.db\nonline_store: {type: sqlite, pth: x}\n");
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        30,
        &["online_store: unknown field `pth`"],
    );
    let e = parse_err("project: x\nregistry: r.db\nonline_store:\n  pth: x\n  type: redis\n");
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        4,
        3,
        &["unknown field `pth`", "`connection_string`"],
    );
    // Deeper: feature_server.metrics.
    let e = parse_err(
        "project: x\nregistry: r.db\nfeature_server:\n  metrics:\n    enabled: true\n    latency: true\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        6,
        5,
        &["feature_server.metrics: unknown field `latency`"],
    );
}

#[test]
fn wrong_type() {
    let e = parse_err(
        "project: x\nregistry: r.db\nonline_store:\n  type: postgres\n  host: h\n  port: \"abc\"\n  database: d\n  user: u\n  password: p\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        6,
        9,
        &["online_store.port", "\"abc\""],
    );
    let e = parse_err("project: x\nregistry: r.db\nfeature_server:\n  enabled: maybe\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        12,
        &["feature_server.enabled", "boolean"],
    );
    let e = parse_err("project: x\nregistry: r.db\nonline_store: [sqlite]\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        3,
        15,
        &["online_store", "sequence"],
    );
}

#[test]
fn bad_enum_values() {
    let e = parse_err("project: x\nregistry: r.db\nonline_store:\n  type: mongo\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        9,
        &[
            "online_store.type",
            "unknown online store type `mongo`",
            "`sqlite`",
            "`redis`",
            "`postgres`",
            "`remote`",
        ],
    );
    let e = parse_err("project: x\nregistry: r.db\nonline_store: mongo\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        3,
        15,
        &["online_store", "`mongo`"],
    );
    let e = parse_err(
        "project: x\nregistry: r.db\nonline_store:\n  type: redis\n  redis_type: memcached\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        5,
        15,
        &[
            "online_store.redis_type",
            "unknown variant `memcached`",
            "`redis_cluster`",
        ],
    );
    let e = parse_err(
        "project: x\nregistry: r.db\nonline_store:\n  type: dynamodb\n  region: us-east-1\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::Unsupported,
        4,
        9,
        &[
            "online_store.type",
            "`dynamodb`",
            "not supported by feast-rs",
        ],
    );
    let e =
        parse_err("project: x\nregistry: r.db\nonline_store:\n  type: my.pkg.CustomOnlineStore\n");
    assert_eq!(e.kind(), ConfigErrorKind::Unsupported);
    let e = parse_err("project: x\nregistry: r.db\nbatch_engine:\n  type: spark.engine\n");
    assert_err(
        &e,
        ConfigErrorKind::Unsupported,
        4,
        9,
        &["batch_engine.type", "spark.engine"],
    );
    let e = parse_err("project: x\nregistry: r.db\nprovider: gpc\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        3,
        11,
        &["provider", "`gpc`"],
    );
    let e = parse_err("project: x\nregistry: r.db\nonline_store:\n  type: 5\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        9,
        &["online_store.type", "expected a string"],
    );
}

#[test]
fn missing_required_keys() {
    let e = parse_err("registry: data/registry.db\nonline_store:\n  type: sqlite\n");
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        1,
        1,
        &["missing field `project`"],
    );
    let e = parse_err("\n\nproject: x\n");
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        3,
        1,
        &["missing field `registry`"],
    );
    let e = parse_err("project: x\nregistry: null\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        2,
        11,
        &["registry", "must be set"],
    );
    let e = parse_err(
        "project: x\nregistry: r.db\nonline_store:\n  type: postgres\n  host: h\n  database: d\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        3,
        &["online_store: missing field `user`"],
    );
    let e = parse_err("project: x\nregistry: r.db\nembedding_model:\n  provider: x\n");
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        3,
        &["embedding_model: missing field `model`"],
    );
    let e = parse_err("# comment only\n\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    let e = parse_err("- project\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    let e = parse_err("project: x\nregistry: [r.db\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert!(e.line().is_some());
}

#[test]
fn duplicate_keys_point_at_the_duplicate() {
    let e = parse_err(
        "project: x\nregistry: r.db\nonline_store: {type: sqlite}\nonline_store: {type: redis}\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        1,
        &["duplicate key `online_store`"],
    );
}

#[test]
fn project_name_rules() {
    for ok in ["x", "driver_stats", "Project1", "9lives", "café"] {
        parse(&format!("project: {ok}\nregistry: r.db\n"));
    }
    let e = parse_err("project: _hidden\nregistry: r.db\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        1,
        10,
        &["project", "underscore"],
    );
    // Feast 0.67 rejects hyphens even for non-sqlite stores (its validator never sees online_store).
    let e = parse_err("project: my-project\nregistry: r.db\nonline_store: {type: redis}\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        1,
        10,
        &["project", "hyphens"],
    );
    let e = parse_err("project: a.b\nregistry: r.db\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        1,
        10,
        &["project", "alphanumerical"],
    );
    let e = parse_err("project: 123\nregistry: r.db\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        1,
        10,
        &["project", "integer"],
    );
    assert!(validate_project_name("").is_err());
}

#[test]
fn entity_key_serialization_version_rules() {
    assert_eq!(
        parse("project: x\nregistry: r.db\nentity_key_serialization_version: 3\n")
            .entity_key_serialization_version,
        3
    );
    let c = parse("project: x\nregistry: r.db\nentity_key_serialization_version: 2\n");
    assert_eq!(c.entity_key_serialization_version, 2);
    assert!(c.warnings().iter().any(|w| w.contains("deprecated")));
    for bad in ["0", "4", "\"3\"", "3.0"] {
        let e = parse_err(&format!(
            "project: x\nregistry: r.db\nentity_key_serialization_version: {bad}\n"
        ));
        assert_err(
            &e,
            ConfigErrorKind::InvalidValue,
            3,
            35,
            &["entity_key_serialization_version"],
        );
    }
}

#[test]
fn oidc_client_and_server_selection() {
    let server = parse(
        "project: x\nregistry: r.db\nauth:\n  type: oidc\n  client_id: feast\n  auth_discovery_url: https://kc/realms/feast/.well-known/openid-configuration\n  audience: feast-aud\n",
    );
    let AuthConfig::OidcServer(s) = &server.auth else {
        panic!("server expected: {:?}", server.auth)
    };
    assert_eq!(s.client_id.as_deref(), Some("feast"));
    assert_eq!(s.audience.as_deref(), Some("feast-aud"));
    assert_eq!(s.issuer, None);
    assert!(s.verify_ssl);
    assert_eq!(s.ca_cert_path, "");
    assert_eq!(s.jwks_cache_lifespan_seconds, 300);
    assert_eq!(s.jwks_request_timeout_seconds, 10.0);
    assert_eq!(server.auth.type_name(), "oidc");

    let client = parse(
        "project: x\nregistry: r.db\nauth:\n  type: oidc\n  client_id: feast\n  client_secret: s\n  auth_discovery_url: https://kc/.well-known/openid-configuration\n",
    );
    let AuthConfig::OidcClient(c) = &client.auth else {
        panic!("client expected: {:?}", client.auth)
    };
    assert_eq!(c.credentials(), OidcClientCredentials::ClientCredentials);
    assert_eq!(c.token_refresh_margin_seconds, 30.0);

    let c = parse("project: x\nregistry: r.db\nauth:\n  type: oidc\n  token: abc\n");
    assert!(
        matches!(&c.auth, AuthConfig::OidcClient(c) if c.credentials() == OidcClientCredentials::Token)
    );
    let c = parse("project: x\nregistry: r.db\nauth:\n  type: oidc\n  token_env_var: MY_TOKEN\n");
    assert!(
        matches!(&c.auth, AuthConfig::OidcClient(c) if c.credentials() == OidcClientCredentials::TokenEnvVar)
    );
    // A bare `{type: oidc}` is a client using FEAST_OIDC_TOKEN / the service account token.
    let c = parse("project: x\nregistry: r.db\nauth: {type: oidc}\n");
    assert!(
        matches!(&c.auth, AuthConfig::OidcClient(c) if c.credentials() == OidcClientCredentials::Ambient)
    );
    let c = parse(
        "project: x\nregistry: r.db\nauth: {type: oidc, client_id: c, client_secret: s, auth_discovery_url: u, username: a, password: b}\n",
    );
    assert!(
        matches!(&c.auth, AuthConfig::OidcClient(c) if c.credentials() == OidcClientCredentials::Password)
    );

    // Server keys are forbidden on the client model and vice versa.
    let e = parse_err(
        "project: x\nregistry: r.db\nauth:\n  type: oidc\n  auth_discovery_url: u\n  client_id: c\n  scope: openid\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        7,
        3,
        &["auth: unknown field `scope`"],
    );
    // Incomplete credential groups fail like Feast's _check_mutually_exclusive.
    let e = parse_err("project: x\nregistry: r.db\nauth:\n  type: oidc\n  client_id: c\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        3,
        &["auth", "client_credentials"],
    );
    let e = parse_err(
        "project: x\nregistry: r.db\nauth:\n  type: oidc\n  token: t\n  token_env_var: V\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        3,
        &["only one of", "token, token_env_var"],
    );
    let e = parse_err(
        "project: x\nregistry: r.db\nauth:\n  type: oidc\n  auth_discovery_url: u\n  jwks_cache_lifespan_seconds: 0\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        6,
        32,
        &["jwks_cache_lifespan_seconds", "positive"],
    );

    assert!(!is_oidc_client_config([
        "type",
        "auth_discovery_url",
        "client_id"
    ]));
    assert!(is_oidc_client_config([
        "type",
        "auth_discovery_url",
        "token"
    ]));
    assert!(is_oidc_client_config(["type"]));
}

#[test]
fn other_auth_types() {
    let c = parse(
        "project: x\nregistry: r.db\nauth:\n  type: kubernetes\n  user_token: tok\n  namespace_hint: ns\n",
    );
    let AuthConfig::Kubernetes(k) = &c.auth else {
        panic!()
    };
    assert_eq!(k.user_token.as_deref(), Some("tok"));
    assert!(
        k.extra.contains_key("namespace_hint"),
        "kubernetes allows extras"
    );
    assert!(c.warnings().iter().any(|w| w.contains("namespace_hint")));

    let c = parse("project: x\nregistry: r.db\nauth:\n  type: no_auth\n");
    assert_eq!(c.auth, AuthConfig::NoAuth);
    let e = parse_err("project: x\nregistry: r.db\nauth:\n  type: no_auth\n  user: x\n");
    assert_err(
        &e,
        ConfigErrorKind::UnknownKey,
        5,
        3,
        &["auth: unknown field `user`"],
    );
    let e = parse_err("project: x\nregistry: r.db\nauth:\n  type: basic\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        9,
        &["auth.type", "`basic`", "no_auth"],
    );
    let e = parse_err("project: x\nregistry: r.db\nauth:\n  user_token: t\n");
    assert_err(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        3,
        &["auth: missing field `type`"],
    );
}

#[test]
fn feature_server_and_misc_sections() {
    let c = parse(
        "project: x\nregistry: r.db\nfeature_server:\n  enabled: true\n  metrics:\n    enabled: true\n    push: false\n    feature_count_bins: [5, 25]\n  feature_logging:\n    enabled: true\n    queue_capacity: 10\n  audit_logging:\n    enabled: true\n    sink: file\n  offline_push_batching_enabled: true\n  offline_push_batching_batch_size: 100\n  offline_push_batching_batch_interval_seconds: 5\nmaterialization:\n  pull_latest_features: true\n  online_write_batch_size: 10000\ndata_quality_monitoring:\n  auto_baseline: false\nembedding_model:\n  model: all-MiniLM-L6-v2\nopenlineage:\n  enabled: true\n  transport_type: http\nmlflow:\n  enabled: true\ncoerce_tz_aware: false\nproject_description: Driver stats\n",
    );
    let Some(FeatureServerConfig::Local(fs)) = &c.feature_server else {
        panic!()
    };
    assert!(fs.enabled);
    let m = fs.metrics.as_ref().unwrap();
    assert!(m.enabled && !m.push && m.request && m.resource && !m.audit_logging);
    assert_eq!(m.feature_count_bins, vec![5, 25]);
    let fl = fs.feature_logging.as_ref().unwrap();
    assert_eq!(
        (
            fl.queue_capacity,
            fl.flush_interval_secs,
            fl.write_to_disk_interval_secs,
            fl.emit_timeout_micro_secs
        ),
        (10, 600, 30, 10000)
    );
    let al = fs.audit_logging.as_ref().unwrap();
    assert_eq!(al.sink, AuditSink::File);
    assert_eq!(al.file_path, "feast_audit.log");
    assert!(al.log_successful_reads);
    assert_eq!(fs.offline_push_batching_batch_size, Some(100));
    assert_eq!(fs.transformation_service_endpoint, "localhost:6569");
    assert!(c.materialization.pull_latest_features);
    assert_eq!(c.materialization.online_write_batch_size, Some(10000));
    assert!(!c.data_quality_monitoring.as_ref().unwrap().auto_baseline);
    let em = c.embedding_model.as_ref().unwrap();
    assert_eq!(
        (em.provider.as_str(), em.model.as_str()),
        ("sentence_transformers", "all-MiniLM-L6-v2")
    );
    assert_eq!(c.openlineage.as_ref().unwrap().len(), 2);
    assert!(c.mlflow.is_some());
    assert!(!c.coerce_tz_aware);
    assert_eq!(c.project_description.as_deref(), Some("Driver stats"));

    let c = parse(
        "project: x\nregistry: r.db\nfeature_server:\n  type: mcp\n  mcp_enabled: true\n  mcp_transport: http\n",
    );
    let Some(FeatureServerConfig::Mcp(m)) = &c.feature_server else {
        panic!()
    };
    assert!(m.mcp_enabled && !m.enabled);
    assert_eq!(m.mcp_transport, McpTransport::Http);
    assert_eq!(m.mcp_server_name, "feast-mcp-server");
    assert_eq!(m.mcp_server_version, "1.0.0");
    assert_eq!(m.transformation_service_endpoint, "localhost:6566");

    let e = parse_err(
        "project: x\nregistry: r.db\nfeature_server:\n  metrics:\n    feature_count_bins: [10, 10]\n",
    );
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        5,
        25,
        &["feature_count_bins", "strictly increasing"],
    );
    let e =
        parse_err("project: x\nregistry: r.db\nmaterialization:\n  online_write_batch_size: 0\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        28,
        &["online_write_batch_size", "positive"],
    );
    let e = parse_err("project: x\nregistry: r.db\nfeature_server:\n  type: grpc\n");
    assert_err(
        &e,
        ConfigErrorKind::InvalidValue,
        4,
        9,
        &["feature_server.type", "`grpc`"],
    );
    // Materialization ignores unknown keys (pydantic's default), with a warning.
    let c = parse("project: x\nregistry: r.db\nmaterialization:\n  batch: 5\n");
    assert!(c.warnings().iter().any(|w| w.contains("`batch`")));
}

#[test]
fn yaml_1_1_booleans_are_accepted() {
    let c = parse(
        "project: x\nregistry: r.db\ncoerce_tz_aware: off\nmaterialization:\n  pull_latest_features: yes\n",
    );
    assert!(!c.coerce_tz_aware);
    assert!(c.materialization.pull_latest_features);
}

#[test]
fn effective_config_round_trips_through_yaml_and_json() {
    let text = "project: x\nproject_description: d\nregistry:\n  registry_type: sql\n  path: postgresql://u:p@h/db\n  extra_thing: 1\nonline_store:\n  type: redis\n  connection_string: \"h:1,db=0\"\noffline_store:\n  type: remote\n  host: f\n  port: 8815\nauth:\n  type: oidc\n  auth_discovery_url: https://kc/.well-known/openid-configuration\n  client_id: c\nfeature_server:\n  type: mcp\n  metrics: {enabled: true}\nmaterialization:\n  online_write_batch_size: 5\nopenlineage: {enabled: true}\nflags: {x: 1}\n";
    let c = parse(text);
    let yaml = c.to_yaml();
    let again = parse(&yaml);
    assert_eq!(c, again, "effective YAML:\n{yaml}");
    assert!(matches!(again.auth, AuthConfig::OidcServer(_)));

    let json = c.to_json();
    assert_eq!(json["online_store"]["type"], "redis");
    assert_eq!(json["registry"]["registry_type"], "sql");
    assert_eq!(json["registry"]["path"], "postgresql+psycopg://u:p@h/db");
    assert_eq!(json["registry"]["extra_thing"], 1);
    assert_eq!(json["auth"]["type"], "oidc");
    assert_eq!(json["feature_server"]["type"], "mcp");
    assert!(
        json.get("repo_path").is_none(),
        "repo_path is never serialized"
    );

    // Every store in its default form round-trips as well.
    for section in [
        "online_store: sqlite",
        "online_store: {type: remote}",
        "online_store: {type: postgres, host: h, database: d, user: u, password: p}",
        "offline_store: {type: duckdb}",
        "offline_store: {type: postgres, host: h, database: d, user: u, password: p}",
        "auth: {type: kubernetes}",
        "auth: {type: oidc}",
        "feature_server: {enabled: true}",
    ] {
        let c = parse(&format!("project: x\nregistry: r.db\n{section}\n"));
        assert_eq!(c, parse(&c.to_yaml()), "{section}");
    }
}

#[test]
fn load_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: disk\nregistry: data/registry.db\n",
    )
    .unwrap();
    let c = RepoConfig::load(dir.path(), None).unwrap();
    assert_eq!(c.project, "disk");
    assert_eq!(c.repo_path, dir.path());
    assert_eq!(c.registry_path(), Some(dir.path().join("data/registry.db")));

    let other = dir.path().join("prod.yaml");
    std::fs::write(&other, "project: prod\nregistry: r.db\nbogus: 1\n").unwrap();
    let e = RepoConfig::load(dir.path(), Some(&other)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3:1: ", other.display())),
        "{e}"
    );

    let e = RepoConfig::load(&dir.path().join("missing"), None).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Io);
    assert!(e.to_string().contains("feature_store.yaml"), "{e}");
}

/// Every `feature_store.yaml` shipped in Feast's templates either parses or
/// fails only because it names something feast-rs does not implement.
#[test]
fn feast_templates_parse_or_fail_as_unsupported() {
    let root = std::env::var_os("FEAST_TEMPLATES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/var/tmp/feast-rs-venv/lib/python3.11/site-packages/feast/templates")
        });
    if !root.is_dir() {
        eprintln!("skipping: no Feast templates at {}", root.display());
        return;
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        for candidate in [
            dir.join("feature_repo/feature_store.yaml"),
            dir.join("feature_store.yaml"),
        ] {
            if candidate.is_file() {
                files.push(candidate);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "found only {files:?}");

    // `feast init -t postgres` replaces these with the user's answers.
    let pg_placeholders = [
        ("DB_USERNAME", "feast"),
        ("DB_PASSWORD", "secret"),
        ("DB_HOST", "localhost"),
        ("DB_PORT", "5432"),
        ("DB_NAME", "feast"),
        ("DB_SCHEMA", "public"),
        ("DB_SSLMODE", "disable"),
    ];
    let any_env = |_: &str| Some("from-env".to_owned());
    let (mut parsed, mut unsupported, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for f in &files {
        let mut text = std::fs::read_to_string(f).unwrap();
        let name = f.strip_prefix(&root).unwrap().display().to_string();
        // `%AWS_REGION%`-style placeholders are not YAML until `feast init` fills them in.
        if text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains(": %"))
        {
            skipped.push(name);
            continue;
        }
        for (k, v) in pg_placeholders {
            text = text.replace(k, v);
        }
        match RepoConfig::from_yaml_str_with_env(&text, &name, Path::new("/repo"), &any_env) {
            Ok(c) => {
                assert_eq!(c.project, "my_project", "{name}");
                parsed.push(name);
            }
            Err(e) => {
                assert_eq!(e.kind(), ConfigErrorKind::Unsupported, "{name}: {e}");
                let msg = e.to_string();
                assert!(msg.contains("not supported by feast-rs"), "{msg}");
                assert!(e.line().is_some(), "{msg}");
                unsupported.push(name);
            }
        }
    }
    eprintln!("parsed: {parsed:?}\nunsupported: {unsupported:?}\nskipped: {skipped:?}");
    for must in [
        "local/feature_repo/feature_store.yaml",
        "minimal/feature_repo/feature_store.yaml",
        "postgres/feature_repo/feature_store.yaml",
    ] {
        assert!(
            parsed.iter().any(|p| p == must),
            "{must} should parse: {parsed:?}"
        );
    }
    assert!(unsupported.iter().any(|p| p.starts_with("spark/")));

    let pg = files
        .iter()
        .find(|f| f.ends_with("postgres/feature_repo/feature_store.yaml"))
        .unwrap();
    let mut text = std::fs::read_to_string(pg).unwrap();
    for (k, v) in pg_placeholders {
        text = text.replace(k, v);
    }
    let c = RepoConfig::from_yaml_str_with_env(&text, "pg", Path::new("/repo"), &no_env).unwrap();
    assert_eq!(
        c.registry_sql_url().unwrap().unwrap(),
        SqlUrl::Postgres("postgresql://feast:secret@localhost:5432/feast?sslmode=disable".into())
    );
    assert!(matches!(
        c.online_store,
        Some(OnlineStoreConfig::Postgres(_))
    ));
    assert!(matches!(
        c.offline_store,
        Some(OfflineStoreConfig::Postgres(_))
    ));
}
