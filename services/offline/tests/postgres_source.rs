//! Postgres data sources on the PostgreSQL server on 127.0.0.1:5432 (user `postgres`, trust
//! auth; `FEAST_RS_TEST_POSTGRES` overrides the server URL): point-in-time joins, pulls,
//! column listing, offline writes and SQL entity tables, each test in a fresh database
//! dropped afterwards. Without a reachable PostgreSQL a test is skipped with a printed
//! reason, except under `CI=true`, where it fails. Agreement with Feast's own postgres
//! offline store is checked by tests/compat/test_offline_postgres.py.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::pretty::pretty_format_batches;
use feast_core::config::PostgresOfflineStoreConfig;
use feast_core::registry::{Catalog, diff, timestamp};
use feast_core::repo;
use feast_offline::postgres::provider::FETCH_ROWS;
use feast_offline::{
    EntityTable, FeatureSelection, FileOfflineStore, HistoricalRequest, OfflineError, OfflineStore,
    PullKind, PullRequest,
};
use feast_proto::core;
use futures::TryStreamExt;
use sqlx::Connection;

// ---------------------------------------------------------------------------------------
// Server and databases (the pattern of services/online/tests/postgres_store.rs)

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn server_url() -> String {
    std::env::var("FEAST_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".to_owned())
}

fn server_parts() -> (String, String, String, u16) {
    let url = server_url();
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&url)
        .trim_end_matches('/');
    let (auth, hostport) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (
        user.to_owned(),
        password.to_owned(),
        host.to_owned(),
        port.parse().unwrap(),
    )
}

/// A fresh database, dropped (with every connection to it) on drop.
struct TestDb {
    name: String,
}

impl TestDb {
    /// None (after saying why) when PostgreSQL is unreachable outside CI; fails under CI.
    async fn create() -> Option<TestDb> {
        let admin = format!("{}/postgres", server_url());
        let connected =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await;
        let why = match connected {
            Ok(Ok(mut conn)) => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let name = format!(
                    "feast_rs_offline_{}_{nanos}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                );
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                return Some(TestDb { name });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        if in_ci() {
            panic!("PostgreSQL at {admin} is unreachable under CI=true: {why}");
        }
        eprintln!("skipping: PostgreSQL at {admin} is unreachable ({why})");
        None
    }

    fn config(&self) -> PostgresOfflineStoreConfig {
        let (user, password, host, port) = server_parts();
        serde_json::from_value(serde_json::json!({
            "host": host, "port": port, "database": self.name, "user": user,
            "password": password, "sslmode": "disable", "db_schema": "public",
        }))
        .unwrap()
    }

    async fn run(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&format!("{}/{}", server_url(), self.name))
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }

    async fn rows(&self, sql: &str) -> Vec<String> {
        let mut conn = sqlx::PgConnection::connect(&format!("{}/{}", server_url(), self.name))
            .await
            .unwrap();
        let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
        conn.close().await.ok();
        rows.into_iter().map(|(r,)| r).collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let admin = format!("{}/postgres", server_url());
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

// ---------------------------------------------------------------------------------------
// The repository and its data

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - name: driver_pg
    type: postgres
    table: driver_stats
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {conv: conv_rate}
  - name: driver_query
    type: postgres
    query: "SELECT driver_id, event_timestamp, trips * 10 AS trips10 FROM driver_stats WHERE trips > 2"
    timestamp_field: event_timestamp
  - name: global_pg
    type: postgres
    table: global_stats
    timestamp_field: ts
feature_views:
  - name: driver_hourly
    entities: [driver]
    ttl: 1h
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float64}
      - {name: trips, dtype: Int64}
      - {name: label, dtype: String}
    source: driver_pg
  - name: driver_tens
    entities: [driver]
    schema: [{name: trips10, dtype: Int64}]
    source: driver_query
  - name: global
    ttl: 2h
    schema: [{name: total, dtype: Int64}]
    source: global_pg
"#;

// Driver 1001 has two rows at 11:00: the later created (11:30) wins. `acc_rate` is a
// numeric, `trips` an int4, `label` a varchar; `global_stats.ts` is a naive timestamp.
const DATA: &str = "
CREATE TABLE driver_stats (
    driver_id bigint, event_timestamp timestamptz, created timestamptz,
    conv real, acc_rate numeric(6, 2), trips integer, label varchar(20)
);
INSERT INTO driver_stats VALUES
    (1001, '2024-05-01 10:00:00+00', '2024-05-01 10:00:00+00', 0.1, 1.0, 1, 'a'),
    (1001, '2024-05-01 11:00:00+00', '2024-05-01 11:30:00+00', 0.3, 3.0, 3, 'c'),
    (1001, '2024-05-01 11:00:00+00', '2024-05-01 11:00:00+00', 0.2, 2.0, 2, 'b'),
    (1002, '2024-05-01 09:00:00+00', '2024-05-01 09:00:00+00', 0.5, 5.0, 5, NULL),
    (1003, '2024-05-01 09:00:00+00', NULL, NULL, 7.0, 7, 'z');
CREATE TABLE global_stats (total bigint, ts timestamp);
INSERT INTO global_stats VALUES (100, '2024-05-01 08:00:00'), (200, '2024-05-01 10:00:00');
";

struct Repo {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    store: FileOfflineStore,
    db: TestDb,
}

async fn setup() -> Option<Repo> {
    let db = TestDb::create().await?;
    db.run(DATA).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("defs.yaml"), DEFS).unwrap();
    let desired = repo::load_repo(dir.path(), "demo").unwrap();
    let mut catalog = Catalog::new();
    let plan = diff::diff(&catalog, "demo", &desired);
    diff::apply_diff(
        &mut catalog,
        "demo",
        &desired,
        &plan,
        timestamp(chrono::Utc::now()),
    )
    .unwrap();
    let store = FileOfflineStore::new(dir.path())
        .with_postgres(&db.config())
        .unwrap();
    Some(Repo {
        _dir: dir,
        catalog,
        store,
        db,
    })
}

fn micros(h: u32, m: u32) -> i64 {
    Utc.with_ymd_and_hms(2024, 5, 1, h, m, 0)
        .unwrap()
        .timestamp_micros()
}

fn entities(rows: &[(i64, u32, u32)]) -> EntityTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| micros(r.1, r.2)))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    EntityTable::new(schema, vec![batch])
}

fn refs(refs: &[&str]) -> HistoricalRequest {
    HistoricalRequest {
        features: FeatureSelection::Refs(refs.iter().map(|r| r.to_string()).collect()),
        full_feature_names: false,
    }
}

fn source<'a>(repo: &'a Repo, name: &str) -> &'a core::DataSource {
    repo.catalog.get::<core::DataSource>(name, "demo").unwrap()
}

async fn pretty(stream: feast_offline::SendableRecordBatchStream) -> String {
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

fn lines(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Cases

#[tokio::test]
async fn point_in_time_join_over_postgres_tables() {
    let Some(repo) = setup().await else { return };
    let entity = entities(&[
        (1001, 11, 45), // both 11:00 rows qualify: created 11:30 wins
        (1001, 10, 30), // the 10:00 row
        (1002, 11, 0),  // 09:00 is outside the 1h ttl: nulls
        (1003, 9, 30),  // null conv, no created timestamp
        (1004, 12, 0),  // unknown driver
    ]);
    let request = refs(&[
        "driver_hourly:conv_rate",
        "driver_hourly:acc_rate",
        "driver_hourly:trips",
        "driver_hourly:label",
        "global:total",
        "driver_tens:trips10",
    ]);
    let out = repo
        .store
        .get_historical_features(&repo.catalog, "demo", entity, &request)
        .await
        .unwrap();
    assert_eq!(
        lines(&pretty(out).await),
        lines(
            "
+-----------+----------------------+-----------+----------+-------+-------+-------+---------+
| driver_id | event_timestamp      | conv_rate | acc_rate | trips | label | total | trips10 |
+-----------+----------------------+-----------+----------+-------+-------+-------+---------+
| 1001      | 2024-05-01T11:45:00Z | 0.3       | 3.0      | 3     | c     | 200   | 30      |
| 1001      | 2024-05-01T10:30:00Z | 0.1       | 1.0      | 1     | a     | 200   |         |
| 1002      | 2024-05-01T11:00:00Z |           |          |       |       | 200   | 50      |
| 1003      | 2024-05-01T09:30:00Z |           | 7.0      | 7     | z     | 100   | 70      |
| 1004      | 2024-05-01T12:00:00Z |           |          |       |       | 200   |         |
+-----------+----------------------+-----------+----------+-------+-------+-------+---------+"
        )
    );
}

/// Feast's non-entity mode over Postgres tables: the keys with a row in [start, end], each
/// joined at end (start defaults to end minus the longest ttl).
#[tokio::test]
async fn a_time_range_instead_of_an_entity_table() {
    let Some(repo) = setup().await else { return };
    let request = refs(&["driver_hourly:trips", "global:total"]);
    let at = |h: u32| {
        chrono::NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
            .and_utc()
    };
    let window = |start: Option<u32>, end: u32| feast_offline::EntityWindow {
        start: start.map(at),
        end: Some(at(end)),
    };
    let run = |window| {
        let (repo, request) = (&repo, &request);
        async move {
            let entity = repo
                .store
                .entity_table_for_range(&repo.catalog, "demo", request, window)
                .await
                .unwrap();
            let out = repo
                .store
                .get_historical_features(&repo.catalog, "demo", entity, request)
                .await
                .unwrap();
            lines(&pretty(out).await)
        }
    };
    // Default start: 12:00 - 2h (the global view's ttl) = 10:00: only 1001 has rows.
    assert_eq!(
        run(window(None, 12)).await,
        lines(
            "
+----------------------+-----------+-------+-------+
| event_timestamp      | driver_id | trips | total |
+----------------------+-----------+-------+-------+
| 2024-05-01T12:00:00Z | 1001      | 3     | 200   |
+----------------------+-----------+-------+-------+"
        )
    );
    // From 09:00: 1002 and 1003 too; their 09:00 rows are older than 12:00 - 1h.
    assert_eq!(
        run(window(Some(9), 12)).await,
        lines(
            "
+----------------------+-----------+-------+-------+
| event_timestamp      | driver_id | trips | total |
+----------------------+-----------+-------+-------+
| 2024-05-01T12:00:00Z | 1001      | 3     | 200   |
| 2024-05-01T12:00:00Z | 1002      |       | 200   |
| 2024-05-01T12:00:00Z | 1003      |       | 200   |
+----------------------+-----------+-------+-------+"
        )
    );
}

#[tokio::test]
async fn time_windows_and_entity_keys_are_pushed_to_postgres() {
    let Some(repo) = setup().await else { return };
    let entity = entities(&[(1001, 11, 45), (1002, 11, 0)]);
    let plan = repo
        .store
        .historical_features_plan(
            &repo.catalog,
            "demo",
            entity,
            &refs(&["driver_hourly:trips"]),
        )
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string();
    let scan = plan
        .lines()
        .find(|l| l.contains("TableScan") && !l.contains("__feast_row_id"))
        .unwrap_or_else(|| panic!("no source scan in {plan}"));
    // Exact filters are applied by Postgres only (DataFusion shows them as full_filters and
    // plans no Filter of its own for them).
    assert!(scan.contains("full_filters="), "{scan}");
    // (DataFusion turns an IN list this short into ORs.)
    assert!(scan.contains("driver_id = Int64(1001)"), "{scan}");
    assert!(scan.contains("event_timestamp"), "{scan}");
    assert!(!scan.contains("partial_filters"), "{scan}");

    let pull = repo
        .store
        .pull_plan(
            source(&repo, "driver_pg"),
            &PullRequest {
                join_key_columns: vec!["driver_id".into()],
                feature_name_columns: vec!["trips".into()],
                timestamp_field: "event_timestamp".into(),
                created_timestamp_column: Some("created".into()),
                start: Some(Utc.with_ymd_and_hms(2024, 5, 1, 9, 0, 0).unwrap()),
                end: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
            },
            PullKind::All,
        )
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string();
    let scan = pull.lines().find(|l| l.contains("TableScan")).unwrap();
    assert!(scan.contains("full_filters="), "{scan}");
    assert!(
        !pull.contains("Filter:"),
        "the window is not filtered again: {pull}"
    );
}

#[tokio::test]
async fn pulls_read_tables_and_queries() {
    let Some(repo) = setup().await else { return };
    let window = |kind| {
        let request = PullRequest {
            join_key_columns: vec!["driver_id".into()],
            feature_name_columns: vec!["conv".into(), "trips".into()],
            timestamp_field: "event_timestamp".into(),
            created_timestamp_column: Some("created".into()),
            start: Some(Utc.with_ymd_and_hms(2024, 5, 1, 9, 0, 0).unwrap()),
            end: Some(Utc.with_ymd_and_hms(2024, 5, 1, 11, 0, 0).unwrap()),
        };
        (request, kind)
    };
    let (request, kind) = window(PullKind::Latest);
    let mut batches: Vec<RecordBatch> = repo
        .store
        .pull(source(&repo, "driver_pg"), &request, kind)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sorted =
        datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let ids = sorted
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let trips = sorted
        .column(2)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int32Array>()
        .unwrap();
    let mut got: Vec<(i64, i32)> = (0..sorted.num_rows())
        .map(|i| (ids.value(i), trips.value(i)))
        .collect();
    got.sort();
    assert_eq!(got, vec![(1001, 3), (1002, 5), (1003, 7)]);

    let (request, kind) = window(PullKind::All);
    batches = repo
        .store
        .pull(source(&repo, "driver_pg"), &request, kind)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);

    // A query source, without join keys: Feast's __dummy_id column.
    let request = PullRequest {
        join_key_columns: vec![],
        feature_name_columns: vec!["trips10".into()],
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: None,
        start: None,
        end: None,
    };
    let out = pretty(
        repo.store
            .pull(source(&repo, "driver_query"), &request, PullKind::Latest)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        lines(&out),
        lines(
            "
+---------+----------------------+------------+
| trips10 | event_timestamp      | __dummy_id |
+---------+----------------------+------------+
| 30      | 2024-05-01T11:00:00Z |            |
+---------+----------------------+------------+"
        )
    );
}

#[tokio::test]
async fn columns_are_listed_with_postgres_type_names() {
    let Some(repo) = setup().await else { return };
    let columns = repo
        .store
        .column_names_and_types(source(&repo, "driver_pg"))
        .await
        .unwrap();
    let expected = [
        ("driver_id", "bigint"),
        ("event_timestamp", "timestamp with time zone"),
        ("created", "timestamp with time zone"),
        ("conv", "real"),
        ("acc_rate", "numeric"),
        ("trips", "integer"),
        ("label", "character varying"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(columns, expected);
    // A source whose table does not exist names it.
    let mut missing = source(&repo, "driver_pg").clone();
    missing.options = Some(core::data_source::Options::CustomOptions(
        core::data_source::CustomSourceOptions {
            configuration: br#"{"name": "x", "query": "", "table": "nope"}"#.to_vec(),
        },
    ));
    let e = repo
        .store
        .column_names_and_types(&missing)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
}

#[tokio::test]
async fn offline_writes_append_to_tables_and_refuse_queries() {
    let Some(repo) = setup().await else { return };
    let view = repo
        .catalog
        .get::<core::FeatureView>("driver_hourly", "demo")
        .unwrap();
    // The columns as the SDK sends them: `conv` renamed to its feature name, any order.
    let schema = Arc::new(Schema::new(vec![
        Field::new("conv_rate", DataType::Float64, true),
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("acc_rate", DataType::Float64, true),
        Field::new("trips", DataType::Int64, true),
        Field::new("label", DataType::Utf8, true),
    ]));
    let ts = |h| {
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(micros(h, 0)), None]).with_timezone("UTC"),
        )
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![Some(0.75), None])),
            Arc::new(Int64Array::from(vec![2001, 2002])),
            ts(13),
            ts(14),
            Arc::new(Float64Array::from(vec![Some(1.25), Some(2.5)])),
            Arc::new(Int64Array::from(vec![Some(8), None])),
            Arc::new(StringArray::from(vec![Some("it's"), Some("")])),
        ],
    )
    .unwrap();
    let written = repo
        .store
        .offline_write_batch(view, schema.clone(), vec![batch.clone()])
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(
        repo.db
            .rows(
                "SELECT concat_ws('|', driver_id, event_timestamp AT TIME ZONE 'UTC', \
                 coalesce(conv::text, 'null'), acc_rate, coalesce(trips::text, 'null'), \
                 quote_nullable(label)) FROM driver_stats WHERE driver_id > 2000 ORDER BY 1"
            )
            .await,
        vec![
            "2001|2024-05-01 13:00:00|0.75|1.25|8|'it''s'",
            "2002|null|2.50|null|''",
        ]
    );
    // Wrong columns: nothing written, the message names them.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "driver_id",
            DataType::Int64,
            true,
        )])),
        vec![Arc::new(Int64Array::from(vec![3001]))],
    )
    .unwrap();
    let e = repo
        .store
        .offline_write_batch(view, bad.schema(), vec![bad])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    // A query source cannot be written.
    let tens = repo
        .catalog
        .get::<core::FeatureView>("driver_tens", "demo")
        .unwrap();
    let e = repo
        .store
        .offline_write_batch(tens, schema, vec![batch])
        .await
        .unwrap_err();
    assert!(matches!(e, OfflineError::Source { .. }), "{e:?}");
    assert!(e.to_string().contains("is a query"), "{e}");
    assert_eq!(
        repo.db
            .rows("SELECT count(*)::text FROM driver_stats")
            .await,
        vec!["7"]
    );
}

#[tokio::test]
async fn entity_tables_given_as_sql_run_in_postgres() {
    let Some(repo) = setup().await else { return };
    repo.db
        .run(
            "CREATE TABLE orders (driver_id bigint, event_timestamp timestamptz, order_id text);
             INSERT INTO orders VALUES (1001, '2024-05-01 11:45:00+00', 'o1'),
                                       (1002, '2024-05-01 09:30:00+00', 'o2');",
        )
        .await;
    let entity = repo
        .store
        .entity_table_from_sql(
            &repo.catalog,
            "demo",
            "SELECT * FROM orders ORDER BY order_id;",
        )
        .await
        .unwrap();
    let out = repo
        .store
        .get_historical_features(
            &repo.catalog,
            "demo",
            entity,
            &refs(&["driver_hourly:trips"]),
        )
        .await
        .unwrap();
    assert_eq!(
        lines(&pretty(out).await),
        lines(
            "
+-----------+----------------------+----------+-------+
| driver_id | event_timestamp      | order_id | trips |
+-----------+----------------------+----------+-------+
| 1001      | 2024-05-01T11:45:00Z | o1       | 3     |
| 1002      | 2024-05-01T09:30:00Z | o2       | 5     |
+-----------+----------------------+----------+-------+"
        )
    );
    // The query runs read-only, and its errors are Postgres' own.
    let e = repo
        .store
        .entity_table_from_sql(&repo.catalog, "demo", "SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no_such_table"), "{e}");
    let e = repo
        .store
        .entity_table_from_sql(&repo.catalog, "demo", "DELETE FROM orders RETURNING *")
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("entity_df_sql"), "{e}");
    assert_eq!(
        repo.db.rows("SELECT count(*)::text FROM orders").await,
        vec!["2"]
    );

    // Without a Postgres database the query runs on DataFusion over the project's data
    // sources: a database table is not one of them.
    let files_only = FileOfflineStore::new(repo._dir.path());
    let e = files_only
        .entity_table_from_sql(&repo.catalog, "demo", "SELECT * FROM orders")
        .await
        .unwrap_err();
    assert!(matches!(e, OfflineError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("orders"), "{e}");
}

#[tokio::test]
async fn large_tables_stream_in_bounded_batches() {
    let Some(repo) = setup().await else { return };
    repo.db
        .run(
            "INSERT INTO global_stats SELECT g, TIMESTAMP '2024-04-01' + g * INTERVAL '1 second' \
             FROM generate_series(1, 50000) g;",
        )
        .await;
    let request = PullRequest {
        join_key_columns: vec![],
        feature_name_columns: vec!["total".into()],
        timestamp_field: "ts".into(),
        created_timestamp_column: None,
        start: None,
        end: None,
    };
    let mut stream = repo
        .store
        .pull(source(&repo, "global_pg"), &request, PullKind::All)
        .await
        .unwrap();
    let (mut rows, mut batches, mut largest) = (0, 0, 0);
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
        batches += 1;
        largest = largest.max(batch.num_rows());
    }
    assert_eq!(rows, 50_002);
    assert!(batches >= 50_002 / FETCH_ROWS, "{batches} batches");
    assert!(largest <= FETCH_ROWS, "a batch of {largest} rows");
}

#[tokio::test]
async fn postgres_sources_need_a_postgres_store() {
    let Some(repo) = setup().await else { return };
    let files_only = FileOfflineStore::new(repo._dir.path());
    let e = files_only
        .get_historical_features(
            &repo.catalog,
            "demo",
            entities(&[(1001, 11, 0)]),
            &refs(&["driver_hourly:trips"]),
        )
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("type: postgres"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Over Flight

/// The Flight server on the Postgres repository (no auth); returns its port and a stop
/// handle.
async fn serve(repo: &Repo) -> (u16, tokio::sync::oneshot::Sender<()>) {
    use feast_offline::{FlightOptions, OfflineFlightService, serve_on};
    use feast_registry::{CacheSource, FileStore, RegistryCache};
    use prost::Message;
    let path = repo._dir.path().join("registry.db");
    std::fs::write(&path, repo.catalog.proto().encode_to_vec()).unwrap();
    let registry = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(path))),
        Duration::ZERO,
    )
    .await;
    let service = OfflineFlightService::new(
        registry,
        Arc::new(repo.store.clone()),
        "demo",
        None,
        FlightOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve_on(
        listener,
        service,
        feast_auth::Authenticator::NoAuth,
        None,
        async {
            let _ = rx.await;
        },
    ));
    (port, tx)
}

/// One DoExchange with Feast's mock upload; the result or the error status.
async fn exchange(
    port: u16,
    command: serde_json::Value,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::{FlightClient, FlightDescriptor};
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    let mock = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["m", "o", "c", "k"]))],
    )
    .unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter([Ok(mock)]));
    let to_status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    };
    let stream = client.do_exchange(data).await.map_err(to_status)?;
    stream.try_collect().await.map_err(to_status)
}

#[tokio::test]
async fn flight_runs_entity_sql_and_refuses_client_chosen_queries() {
    let Some(repo) = setup().await else { return };
    repo.db
        .run(
            "CREATE TABLE orders (driver_id bigint, event_timestamp timestamptz);
             INSERT INTO orders VALUES (1001, '2024-05-01 10:30:00+00');",
        )
        .await;
    let (port, _stop) = serve(&repo).await;
    let historical = |sql: &str| {
        serde_json::json!({
            "command_id": "1", "api": "get_historical_features",
            "feature_view_names": ["driver_hourly"], "feature_refs": ["driver_hourly:label"],
            "project": "demo", "full_feature_names": true, "name_aliases": [null],
            "entity_df_sql": sql,
        })
    };
    let batches = exchange(port, historical("SELECT * FROM orders"))
        .await
        .unwrap();
    assert_eq!(
        lines(&pretty_format_batches(&batches).unwrap().to_string()),
        lines(
            "
+-----------+----------------------+----------------------+
| driver_id | event_timestamp      | driver_hourly__label |
+-----------+----------------------+----------------------+
| 1001      | 2024-05-01T10:30:00Z | a                    |
+-----------+----------------------+----------------------+"
        )
    );
    // Bad SQL: Postgres' message in Feast's envelope.
    let status = exchange(port, historical("SELECT * FROM nowhere"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("Flight error: {\"module\": \"feast.errors\"")
    );
    assert!(status.message().contains("nowhere"), "{}", status.message());

    // A source sent inline that is not the registered one may name a table, not a query.
    let mut inline = source(&repo, "driver_pg").clone();
    inline.name = "not_registered".into();
    let listing = |source: &core::DataSource| {
        serde_json::json!({
            "command_id": "2", "api": "get_table_column_names_and_types_from_data_source",
            "data_source_proto": feast_core::json::message_to_json(source).to_string(),
        })
    };
    let batches = exchange(port, listing(&inline)).await.unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 7);
    inline.options = Some(core::data_source::Options::CustomOptions(
        core::data_source::CustomSourceOptions {
            configuration: br#"{"name": "x", "query": "SELECT pg_sleep(0)", "table": ""}"#.to_vec(),
        },
    ));
    let status = exchange(port, listing(&inline)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("must name a table"),
        "{}",
        status.message()
    );
    // The registered query source is listed.
    let batches = exchange(port, listing(source(&repo, "driver_query")))
        .await
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
}

#[tokio::test]
async fn entity_keys_of_another_type_are_compared_as_the_join_compares_them() {
    let Some(repo) = setup().await else { return };
    // The entity table's keys are strings; the source's are bigint. The join casts the
    // source key to the entity column's type; the pushed key list must not break that.
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Utf8, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["1001", "x"])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![micros(11, 45), micros(11, 45)])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let out = repo
        .store
        .get_historical_features(
            &repo.catalog,
            "demo",
            EntityTable::new(schema, vec![batch]),
            &refs(&["driver_hourly:trips"]),
        )
        .await
        .unwrap();
    assert_eq!(
        lines(&pretty(out).await),
        lines(
            "
+-----------+----------------------+-------+
| driver_id | event_timestamp      | trips |
+-----------+----------------------+-------+
| 1001      | 2024-05-01T11:45:00Z | 3     |
| x         | 2024-05-01T11:45:00Z |       |
+-----------+----------------------+-------+"
        )
    );
}
