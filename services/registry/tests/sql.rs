//! The SQL registry store on real databases: SQLite files, and PostgreSQL on 127.0.0.1:5432
//! (a fresh database per test, dropped afterwards; `FEAST_RS_TEST_POSTGRES` overrides the
//! server URL). Without a reachable PostgreSQL the PostgreSQL tests are skipped with a
//! printed reason, except under `CI=true`, where they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use feast_core::config::SqlUrl;
use feast_core::registry::file::FileRegistryStore;
use feast_proto::core;
use feast_proto::registry::registry_server_client::RegistryServerClient;
use feast_proto::registry::*;
use feast_registry::{
    RegistryService, RegistryStore, ServiceOptions, SqlStore, SqlStoreOptions, StoreError,
};
use prost::Message;
use sqlx::Connection;
use tonic::transport::Channel;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crates/core/tests/data/feast_registry.db"
);

// ---------------------------------------------------------------------------------------
// Databases

fn pg_server() -> String {
    std::env::var("FEAST_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".to_owned())
}

/// A database for one test: a fresh PostgreSQL database or a SQLite file, removed on drop.
struct TestDb {
    url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:///{}", dir.path().join("registry.db").display());
        TestDb {
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or None (after saying why) when PostgreSQL is not
    /// reachable outside CI.
    async fn postgres() -> Option<Self> {
        let admin = format!("{}/test", pg_server());
        let connected =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return unreachable_postgres(&admin, &e.to_string()),
            Err(_) => return unreachable_postgres(&admin, "timed out"),
        };
        let name = format!("feast_rs_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        Some(TestDb {
            url: format!("{}/{name}", pg_server()),
            pg_name: Some(name),
            _dir: None,
        })
    }

    async fn store(&self) -> SqlStore {
        SqlStore::connect_url(&self.url, SqlStoreOptions::default())
            .await
            .unwrap()
    }
}

fn unreachable_postgres(url: &str, why: &str) -> Option<TestDb> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL at {url} is unreachable under CI=true: {why}");
    }
    eprintln!("skipping the PostgreSQL part of this test: {url} is unreachable ({why})");
    None
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee (maybe while panicking): use a thread.
        let admin = format!("{}/test", pg_server());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The backends a test runs on: SQLite always, PostgreSQL when reachable.
async fn backends() -> Vec<(&'static str, TestDb)> {
    let mut out = vec![("sqlite", TestDb::sqlite())];
    if let Some(pg) = TestDb::postgres().await {
        out.push(("postgres", pg));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Registry helpers

fn now() -> prost_types::Timestamp {
    feast_core::registry::timestamp(chrono::Utc::now())
}

fn fixture() -> core::Registry {
    FileRegistryStore::new(FIXTURE)
        .load()
        .unwrap()
        .unwrap()
        .into_proto()
}

fn project(name: &str) -> core::Project {
    core::Project {
        spec: Some(core::ProjectSpec {
            name: name.into(),
            ..Default::default()
        }),
        meta: Some(core::ProjectMeta {
            created_timestamp: Some(now()),
            last_updated_timestamp: Some(now()),
        }),
    }
}

fn entity(name: &str, project: &str, description: &str) -> core::Entity {
    core::Entity {
        spec: Some(core::EntitySpecV2 {
            name: name.into(),
            project: project.into(),
            join_key: format!("{name}_id"),
            description: description.into(),
            value_type: feast_proto::types::value_type::Enum::Int64 as i32,
            ..Default::default()
        }),
        meta: Some(core::EntityMeta {
            created_timestamp: Some(now()),
            last_updated_timestamp: Some(now()),
        }),
    }
}

fn feature_view(name: &str, project: &str) -> core::FeatureView {
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: name.into(),
            project: project.into(),
            entities: vec!["driver".into()],
            features: (0..8)
                .map(|i| core::FeatureSpecV2 {
                    name: format!("feature_{i}"),
                    value_type: feast_proto::types::value_type::Enum::Double as i32,
                    description: format!("feature {i} of {name}"),
                    ..Default::default()
                })
                .collect(),
            batch_source: Some(core::DataSource {
                name: format!("{name}_source"),
                project: project.into(),
                r#type: core::data_source::SourceType::BatchFile as i32,
                timestamp_field: "event_timestamp".into(),
                ..Default::default()
            }),
            online: true,
            ..Default::default()
        }),
        meta: Some(core::FeatureViewMeta {
            created_timestamp: Some(now()),
            last_updated_timestamp: Some(now()),
            ..Default::default()
        }),
    }
}

fn stamped(mut registry: core::Registry) -> core::Registry {
    registry.version_id = uuid::Uuid::new_v4().to_string();
    registry.last_updated = Some(now());
    registry
}

fn sort_by_bytes<T: Message>(items: &mut [T]) {
    items.sort_by_cached_key(|m| m.encode_to_vec());
}

/// The registry with every collection in one order (stores do not keep registry order).
fn normalized(mut r: core::Registry) -> core::Registry {
    sort_by_bytes(&mut r.projects);
    sort_by_bytes(&mut r.entities);
    sort_by_bytes(&mut r.data_sources);
    sort_by_bytes(&mut r.feature_views);
    sort_by_bytes(&mut r.stream_feature_views);
    sort_by_bytes(&mut r.on_demand_feature_views);
    sort_by_bytes(&mut r.label_views);
    sort_by_bytes(&mut r.feature_services);
    sort_by_bytes(&mut r.saved_datasets);
    sort_by_bytes(&mut r.validation_references);
    sort_by_bytes(&mut r.permissions);
    #[allow(deprecated)]
    sort_by_bytes(&mut r.project_metadata);
    if let Some(h) = r.feature_view_version_history.as_mut() {
        sort_by_bytes(&mut h.records);
    }
    r
}

fn entity_names(r: &core::Registry) -> Vec<String> {
    let mut names: Vec<String> = r
        .entities
        .iter()
        .map(|e| e.spec.as_ref().unwrap().name.clone())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Store tests

#[tokio::test]
async fn feast_registry_round_trips_through_the_sql_tables() {
    for (backend, db) in backends().await {
        let store = db.store().await;
        let (empty, version) = store.load().await.unwrap();
        assert!(
            empty.is_none(),
            "{backend}: a new database holds no registry"
        );
        let input = fixture();
        let committed = store.commit(&input, &version).await.unwrap();
        assert!(committed.merged.is_none(), "{backend}");
        store.close().await;

        // A second store (another process) reads back exactly what Feast wrote.
        let reader = db.store().await;
        let (loaded, version) = reader.load().await.unwrap();
        let mut loaded = loaded.unwrap();
        assert_eq!(version, committed.version, "{backend}");
        #[allow(deprecated)]
        {
            assert_eq!(
                loaded.project_metadata.len(),
                1,
                "{backend}: a project_uuid row"
            );
            assert_eq!(loaded.project_metadata[0].project, "compat");
            loaded.project_metadata.clear();
        }
        // The history table keeps created_timestamp in whole seconds.
        let mut expected = input.clone();
        for r in expected
            .feature_view_version_history
            .iter_mut()
            .flat_map(|h| &mut h.records)
        {
            if let Some(t) = r.created_timestamp.as_mut() {
                t.nanos = 0;
            }
        }
        assert_eq!(
            normalized(loaded),
            normalized(expected),
            "{backend}: the registry round-trips"
        );

        // Committing the same registry again writes no object row.
        let again = reader.commit(&input, &version).await.unwrap();
        assert!(again.merged.is_none());
        reader.close().await;
    }
}

#[tokio::test]
async fn feast_schema_names_and_indexes() {
    for (backend, db) in backends().await {
        let store = db.store().await;
        store.close().await;
        let indexes: Vec<String> = match SqlUrl::parse(&db.url).unwrap() {
            SqlUrl::Postgres(u) => {
                let mut c = sqlx::PgConnection::connect(&u).await.unwrap();
                sqlx::query_scalar(
                    "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()",
                )
                .fetch_all(&mut c)
                .await
                .unwrap()
            }
            SqlUrl::Sqlite(p) => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", p.display()))
                    .await
                    .unwrap();
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            }
        };
        for table in [
            "projects",
            "entities",
            "data_sources",
            "feature_views",
            "stream_feature_views",
            "on_demand_feature_views",
            "label_views",
            "feature_services",
            "saved_datasets",
            "validation_references",
            "managed_infra",
            "permissions",
            "feast_metadata",
        ] {
            let index = format!("idx_{table}_project_id");
            assert!(
                indexes.contains(&index),
                "{backend}: {index} in {indexes:?}"
            );
        }
        assert!(indexes.contains(&"idx_fv_version_history_project_id".to_owned()));
        // Opening again (schema present) is a no-op; every URL form Feast accepts works.
        db.store().await.close().await;
        if backend == "postgres" {
            for driver in ["+psycopg", "+psycopg2"] {
                let url = db
                    .url
                    .replacen("postgresql", &format!("postgresql{driver}"), 1);
                SqlStore::connect_url(&url, SqlStoreOptions::default())
                    .await
                    .unwrap()
                    .close()
                    .await;
            }
        }
    }
}

#[tokio::test]
async fn two_stores_merge_other_objects_and_refuse_the_same_one() {
    for (backend, db) in backends().await {
        let a = db.store().await;
        let b = db.store().await;
        let (_, va) = a.load().await.unwrap();
        let mut reg = core::Registry {
            projects: vec![project("demo")],
            entities: vec![entity("shared", "demo", "v1")],
            ..Default::default()
        };
        reg = stamped(reg);
        let va = a.commit(&reg, &va).await.unwrap().version;
        let (b_reg, vb) = b.load().await.unwrap();
        let b_reg = b_reg.unwrap();
        assert_eq!(entity_names(&b_reg), ["shared"]);
        assert_eq!(b.version().await.unwrap(), vb);

        // A adds "from_a"; B, not knowing, adds "from_b": both survive, B gets the merge.
        let mut ra = reg.clone();
        ra.entities.push(entity("from_a", "demo", ""));
        let ca = a.commit(&stamped(ra.clone()), &va).await.unwrap();
        assert!(ca.merged.is_none(), "{backend}: nothing else changed");
        assert_ne!(
            b.version().await.unwrap(),
            vb,
            "{backend}: B sees A's write"
        );
        let mut rb = b_reg.clone();
        rb.entities.push(entity("from_b", "demo", ""));
        let cb = b.commit(&stamped(rb), &vb).await.unwrap();
        let merged = cb.merged.expect("B's commit merges A's change");
        assert_eq!(entity_names(&merged), ["from_a", "from_b", "shared"]);

        // Both change "shared": A first wins; B's commit is a conflict and writes nothing.
        let (a_now, va) = a.load().await.unwrap();
        let mut ra = a_now.unwrap();
        ra.entities
            .iter_mut()
            .find(|e| e.spec.as_ref().unwrap().name == "shared")
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .description = "by A".into();
        let mut rb = merged.clone();
        rb.entities
            .iter_mut()
            .find(|e| e.spec.as_ref().unwrap().name == "shared")
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .description = "by B".into();
        rb.entities.push(entity("also_from_b", "demo", ""));
        a.commit(&stamped(ra), &va).await.unwrap();
        let err = b
            .commit(&stamped(rb.clone()), &cb.version)
            .await
            .unwrap_err();
        match &err {
            StoreError::Conflict { detail, .. } => {
                assert!(
                    detail.contains("entities demo/shared"),
                    "{backend}: {detail}"
                )
            }
            other => panic!("{backend}: expected a conflict, got {other}"),
        }
        let (stored, _) = db.store().await.load().await.unwrap();
        let stored = stored.unwrap();
        let shared = stored
            .entities
            .iter()
            .find(|e| e.spec.as_ref().unwrap().name == "shared")
            .unwrap();
        assert_eq!(shared.spec.as_ref().unwrap().description, "by A");
        assert!(
            !entity_names(&stored).contains(&"also_from_b".to_owned()),
            "{backend}: a refused commit writes nothing"
        );

        // B deleting an object A changed is a conflict too; after a reload it goes through.
        let (fresh, vb) = b.load().await.unwrap();
        let mut rb = fresh.unwrap();
        rb.entities
            .retain(|e| e.spec.as_ref().unwrap().name != "from_a");
        b.commit(&stamped(rb), &vb).await.unwrap();
        let (after, _) = a.load().await.unwrap();
        assert_eq!(entity_names(&after.unwrap()), ["from_b", "shared"]);

        // Deleting the project removes all its rows, feast_metadata included.
        let (cur, v) = a.load().await.unwrap();
        let mut cur = cur.unwrap();
        cur.projects.clear();
        cur.entities.clear();
        #[allow(deprecated)]
        cur.project_metadata.clear();
        a.commit(&stamped(cur), &v).await.unwrap();
        let (gone, _) = b.load().await.unwrap();
        let gone = gone.unwrap();
        assert!(
            gone.projects.is_empty() && gone.entities.is_empty(),
            "{backend}"
        );
        #[allow(deprecated)]
        let metadata = gone.project_metadata.len();
        assert_eq!(metadata, 0, "{backend}");
        a.close().await;
        b.close().await;
    }
}

#[tokio::test]
async fn schema_mode_verify_names_missing_tables_and_accepts_a_full_schema() {
    let db = TestDb::sqlite();
    let verify = SqlStoreOptions {
        schema_mode: feast_core::config::SchemaMode::Verify,
        ..SqlStoreOptions::default()
    };
    let err = SqlStore::connect_url(&db.url, verify.clone())
        .await
        .err()
        .expect("tables are missing");
    let message = err.to_string();
    assert!(
        message.contains("missing tables") && message.contains("feature_views"),
        "{message}"
    );
    db.store().await.close().await;
    SqlStore::connect_url(&db.url, verify)
        .await
        .unwrap()
        .close()
        .await;
}

// ---------------------------------------------------------------------------------------
// Through the gRPC service

struct Server {
    client: RegistryServerClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn serve(store: SqlStore) -> Server {
    let service = RegistryService::open(Box::new(store), ServiceOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        feast_registry::serve_on(
            listener,
            service,
            feast_auth::Authenticator::NoAuth,
            None,
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        client: RegistryServerClient::new(channel),
        stop: Some(stop),
        handle,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("server stops")
            .unwrap();
    }
}

async fn apply_entity(s: &mut Server, name: &str, commit: bool) {
    let mut e = entity(name, "", "");
    e.meta = None;
    s.client
        .apply_entity(ApplyEntityRequest {
            entity: Some(e),
            project: "demo".into(),
            commit,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn staged_changes_stay_in_the_server_until_committed() {
    for (backend, db) in backends().await {
        let mut s = serve(db.store().await).await;
        // The first apply creates the project, which is committed at once.
        apply_entity(&mut s, "driver", false).await;
        let on_db = |db: &TestDb| {
            let url = db.url.clone();
            async move {
                let store = SqlStore::connect_url(&url, SqlStoreOptions::default())
                    .await
                    .unwrap();
                let r = store.load().await.unwrap().0.unwrap();
                store.close().await;
                r
            }
        };
        assert_eq!(on_db(&db).await.projects.len(), 1, "{backend}");
        apply_entity(&mut s, "rider", false).await;
        let got = s
            .client
            .get_entity(GetEntityRequest {
                name: "rider".into(),
                project: "demo".into(),
                allow_cache: false,
            })
            .await;
        assert!(got.is_ok(), "{backend}: staged changes are served");
        assert!(
            !entity_names(&on_db(&db).await).contains(&"rider".to_owned()),
            "{backend}: staged changes are not in the database"
        );
        s.client
            .refresh(RefreshRequest {
                project: "demo".into(),
            })
            .await
            .unwrap();
        let err = s
            .client
            .get_entity(GetEntityRequest {
                name: "rider".into(),
                project: "demo".into(),
                allow_cache: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{backend}");

        apply_entity(&mut s, "rider", false).await;
        s.client
            .update_infra(UpdateInfraRequest {
                infra: Some(core::Infra {
                    infra_objects: vec![core::InfraObject {
                        infra_object_class_type: "feast.infra.online_stores.sqlite.SqliteTable"
                            .into(),
                        ..Default::default()
                    }],
                }),
                project: "demo".into(),
                commit: true,
            })
            .await
            .unwrap();
        let stored = on_db(&db).await;
        assert_eq!(entity_names(&stored), ["driver", "rider"], "{backend}");
        assert_eq!(stored.infra.as_ref().unwrap().infra_objects.len(), 1);
        let proto = s.client.proto(()).await.unwrap().into_inner();
        assert_eq!(proto.version_id, stored.version_id, "{backend}");
        assert!(!proto.version_id.is_empty());
        s.stop().await;
    }
}

/// Two registry servers on one database, 8 clients each applying their own feature views
/// with commit=true (retrying on ABORTED): every view is there at the end.
async fn concurrent_servers(db: &TestDb, views_per_client: usize) {
    let servers = [serve(db.store().await).await, serve(db.store().await).await];
    let clients: Vec<_> = (0..8).map(|i| servers[i % 2].client.clone()).collect();
    let aborted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let aborted = aborted.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..views_per_client {
                let fv = feature_view(&format!("fv_{i}_{j}"), "");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let r = client
                        .apply_feature_view(ApplyFeatureViewRequest {
                            base_feature_view: Some(
                                apply_feature_view_request::BaseFeatureView::FeatureView(
                                    fv.clone(),
                                ),
                            ),
                            project: "demo".into(),
                            commit: true,
                        })
                        .await;
                    match r {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::Aborted && attempts < 50 => {
                            aborted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(s) => panic!("client {i} view {j}: {s:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (stored, _) = db.store().await.load().await.unwrap();
    let mut names: Vec<String> = stored
        .unwrap()
        .feature_views
        .iter()
        .map(|v| v.spec.as_ref().unwrap().name.clone())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|i| (0..views_per_client).map(move |j| format!("fv_{i}_{j}")))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "no apply was lost");
    for mut server in servers {
        let listed = server
            .client
            .list_feature_views(ListFeatureViewsRequest {
                project: "demo".into(),
                allow_cache: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .feature_views;
        assert_eq!(listed.len(), 8 * views_per_client, "each server serves all");
        server.stop().await;
    }
    eprintln!(
        "{} applies, {} ABORTED retries",
        8 * views_per_client,
        aborted.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Views each client applies (`FEAST_RS_SQL_STRESS_VIEWS` raises it for a longer run).
fn views_per_client(default: usize) -> usize {
    std::env::var("FEAST_RS_SQL_STRESS_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_eight_clients_on_postgres_lose_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    concurrent_servers(&db, views_per_client(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_eight_clients_on_sqlite_lose_nothing() {
    concurrent_servers(&TestDb::sqlite(), views_per_client(4)).await;
}

// ---------------------------------------------------------------------------------------
// Size

/// Load and commit timings of a 1,000-view registry (printed; run with --nocapture).
#[tokio::test]
async fn thousand_view_registry_timings() {
    for (backend, db) in backends().await {
        let store = db.store().await;
        let (_, v) = store.load().await.unwrap();
        let mut reg = core::Registry {
            projects: vec![project("big")],
            entities: vec![entity("driver", "big", "")],
            feature_views: (0..1000)
                .map(|i| feature_view(&format!("view_{i:04}"), "big"))
                .collect(),
            ..Default::default()
        };
        reg = stamped(reg);
        let t = Instant::now();
        let c = store.commit(&reg, &v).await.unwrap();
        let first = t.elapsed();
        let t = Instant::now();
        let (loaded, v) = store.load().await.unwrap();
        let load = t.elapsed();
        let mut loaded = loaded.unwrap();
        assert_eq!(loaded.feature_views.len(), 1000);
        assert_eq!(v, c.version);
        let t = Instant::now();
        for _ in 0..10 {
            store.version().await.unwrap();
        }
        let version = t.elapsed() / 10;
        loaded.feature_views[500].spec.as_mut().unwrap().description = "changed".into();
        let t = Instant::now();
        store.commit(&stamped(loaded), &v).await.unwrap();
        let one = t.elapsed();
        eprintln!(
            "{backend}: 1,000 views: first commit {first:?}, load {load:?}, version {version:?}, \
             commit of one changed view {one:?}"
        );
        store.close().await;
    }
}
