//! PostgresOnlineStore on the PostgreSQL server on 127.0.0.1:5432 (user `postgres`, trust
//! auth; `FEAST_RS_TEST_POSTGRES` overrides the server URL). Every test works in a fresh
//! database, dropped afterwards. Without a reachable PostgreSQL a test is skipped with a
//! printed reason, except under `CI=true`, where it fails. Interop with Feast itself is
//! checked by tests/compat/test_postgres_online_store.py.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use feast_core::config::{PostgresOnlineStoreConfig, RepoConfig};
use feast_online::store::postgres::{PostgresOnlineStore, PostgresOnlineStoreOptions};
use feast_online::{
    FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow, open_online_store,
    serialize_entity_key,
};
use feast_proto::types::{EntityKey, Value, value::Val};
use prost::Message;
use prost_types::Timestamp;
use sqlx::{Connection, Row};

// ---------------------------------------------------------------------------------------
// Server and databases

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `postgresql://user[:password]@host:port`.
fn server_url() -> String {
    std::env::var("FEAST_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".to_owned())
}

/// (user, password, host, port) of [`server_url`].
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
                    "feast_rs_online_{}_{nanos}_{}",
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

    fn config(&self) -> PostgresOnlineStoreConfig {
        let (user, password, host, port) = server_parts();
        serde_json::from_value(serde_json::json!({
            "host": host, "port": port, "database": self.name, "user": user,
            "password": password, "sslmode": "disable",
        }))
        .unwrap()
    }

    async fn store(&self) -> PostgresOnlineStore {
        PostgresOnlineStore::connect(&self.config()).await.unwrap()
    }

    async fn store_with(
        &self,
        edit: impl FnOnce(&mut PostgresOnlineStoreConfig),
    ) -> PostgresOnlineStore {
        let mut config = self.config();
        edit(&mut config);
        PostgresOnlineStore::connect(&config).await.unwrap()
    }

    /// A plain connection to the test database (session TimeZone UTC, as sqlx sets it).
    async fn raw(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&format!("{}/{}", server_url(), self.name))
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let admin = format!("{}/postgres", server_url());
        // Drop may run while panicking or outside a runtime: use a thread of its own.
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
// Data

fn driver_key(id: i64) -> Vec<u8> {
    serialize_entity_key(
        &EntityKey {
            join_keys: vec!["driver_id".into()],
            entity_values: vec![Value {
                val: Some(Val::Int64Val(id)),
            }],
        },
        3,
    )
    .unwrap()
}

fn v(val: Val) -> Value {
    Value { val: Some(val) }
}

fn ts(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

fn row(id: i64, event: Timestamp, features: &[(&str, Value)]) -> WriteRow {
    WriteRow {
        entity_key: driver_key(id),
        features: features
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
        event_ts: event,
        created_ts: None,
    }
}

fn names(features: &[&str]) -> Vec<String> {
    features.iter().map(|s| s.to_string()).collect()
}

fn view(name: &str) -> TableRef {
    TableRef::new("proj", name).with_schema(["driver_id"], ["conv_rate", "acc_rate"])
}

const T0: i64 = 1_714_521_600; // 2024-05-01T00:00:00Z

async fn rows_of(conn: &mut sqlx::PgConnection, sql: &str) -> Vec<sqlx::postgres::PgRow> {
    sqlx::query(sql).fetch_all(conn).await.unwrap()
}

/// Driver 1's conv_rate and acc_rate, which must be found.
async fn read_one(store: &PostgresOnlineStore, table: &TableRef) -> FeatureRow {
    store
        .online_read(table, &[driver_key(1)], &names(&["conv_rate", "acc_rate"]))
        .await
        .unwrap()
        .remove(0)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Tables

#[tokio::test]
async fn update_creates_feasts_tables_and_drops_deleted_ones() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store().await;
    let stats = view("driver_stats");
    let names_view = view("driver_names").with_string_features(true);
    store
        .update("proj", &[stats.clone(), names_view.clone()], &[])
        .await
        .unwrap();
    // Idempotent, as `feast apply` runs it every time.
    store
        .update("proj", &[stats.clone(), names_view.clone()], &[])
        .await
        .unwrap();

    let mut raw = db.raw().await;
    let columns = rows_of(
        &mut raw,
        "SELECT column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'proj_driver_stats' \
         ORDER BY ordinal_position",
    )
    .await;
    let columns: Vec<(String, String, String)> = columns
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expect = |n: &str, t: &str, null: &str| (n.to_owned(), t.to_owned(), null.to_owned());
    assert_eq!(
        columns,
        vec![
            expect("entity_key", "bytea", "NO"),
            expect("feature_name", "text", "NO"),
            expect("value", "bytea", "YES"),
            expect("value_text", "text", "YES"),
            expect("vector_value", "bytea", "YES"),
            expect("event_ts", "timestamp with time zone", "YES"),
            expect("created_ts", "timestamp with time zone", "YES"),
        ]
    );
    let indexes = |table: &'static str| {
        format!(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = '{table}' \
             ORDER BY indexname"
        )
    };
    let stats_indexes: Vec<(String, String)> = rows_of(&mut raw, &indexes("proj_driver_stats"))
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        stats_indexes,
        vec![
            (
                "proj_driver_stats_ek".to_owned(),
                "CREATE INDEX proj_driver_stats_ek ON public.proj_driver_stats USING btree \
                 (entity_key)"
                    .to_owned()
            ),
            (
                "proj_driver_stats_pkey".to_owned(),
                "CREATE UNIQUE INDEX proj_driver_stats_pkey ON public.proj_driver_stats USING \
                 btree (entity_key, feature_name)"
                    .to_owned()
            ),
        ]
    );
    let names_indexes: Vec<String> = rows_of(&mut raw, &indexes("proj_driver_names"))
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names_indexes,
        [
            "proj_driver_names_ek",
            "proj_driver_names_fts_idx",
            "proj_driver_names_pkey"
        ]
    );

    store
        .online_write_batch(
            &stats,
            &[row(1, ts(T0, 0), &[("conv_rate", v(Val::DoubleVal(0.5)))])],
        )
        .await
        .unwrap();
    store
        .update(
            "proj",
            std::slice::from_ref(&names_view),
            std::slice::from_ref(&stats),
        )
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(tables, ["proj_driver_names"]);
    let err = store
        .online_write_batch(
            &stats,
            &[row(1, ts(T0, 0), &[("conv_rate", v(Val::DoubleVal(0.5)))])],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OnlineStoreError::NoSuchTable(t) if t == "proj_driver_stats"),
        "{err:?}"
    );
    let err = store
        .online_read(&stats, &[driver_key(1)], &names(&["conv_rate"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OnlineStoreError::NoSuchTable(t) if t == "proj_driver_stats"),
        "{err:?}"
    );

    store.teardown("proj", &[names_view]).await.unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert_eq!(left, 0);
    // Tearing down what is already gone is fine.
    store
        .teardown("proj", &[view("driver_names")])
        .await
        .unwrap();
}

#[tokio::test]
async fn tables_live_in_db_schema_or_the_users_schema() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let custom = db.store_with(|c| c.db_schema = "feast_online".into()).await;
    assert_eq!(custom.schema(), "feast_online");
    let table = view("driver_stats");
    custom
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    custom
        .online_write_batch(
            &table,
            &[row(7, ts(T0, 0), &[("conv_rate", v(Val::DoubleVal(1.5)))])],
        )
        .await
        .unwrap();

    // db_schema "" means the schema named after the user (Feast's `db_schema or user`).
    let by_user = db.store_with(|c| c.db_schema = String::new()).await;
    let (user, ..) = server_parts();
    assert_eq!(by_user.schema(), user);
    by_user
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();

    let mut raw = db.raw().await;
    let found: Vec<(String, String)> = sqlx::query(
        "SELECT schemaname::text, tablename::text FROM pg_tables \
         WHERE tablename = 'proj_driver_stats' ORDER BY 1",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let mut expect = vec![
        ("feast_online".to_owned(), "proj_driver_stats".to_owned()),
        (user.clone(), "proj_driver_stats".to_owned()),
    ];
    expect.sort();
    assert_eq!(found, expect);
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'feast_online'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(owner, user);

    // Each store sees its own schema's table.
    let read = custom
        .online_read(&table, &[driver_key(7)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(
        read[0].as_ref().unwrap().values,
        [Some(v(Val::DoubleVal(1.5)))]
    );
    let read = by_user
        .online_read(&table, &[driver_key(7)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(read, [None]);
}

// ---------------------------------------------------------------------------------------
// Reads and writes

#[tokio::test]
async fn writes_feasts_rows_and_reads_them_back() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store().await;
    let table = view("driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    let mut first = row(
        1001,
        ts(T0, 123_456_789),
        &[
            ("conv_rate", v(Val::DoubleVal(0.25))),
            ("acc_rate", v(Val::FloatVal(0.1))),
        ],
    );
    first.created_ts = Some(ts(T0 + 60, 0));
    let second = row(
        1002,
        ts(T0 + 1, 0),
        &[("conv_rate", v(Val::DoubleVal(1.0)))],
    );
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[first.clone(), second.clone(), row(1003, ts(T0, 0), &[])]
            )
            .await
            .unwrap(),
        2,
        "a row without features writes nothing"
    );

    // Feast's layout, byte for byte.
    let mut raw = db.raw().await;
    let stored = rows_of(
        &mut raw,
        "SELECT entity_key, feature_name, value, value_text, vector_value, \
         to_char(event_ts, 'YYYY-MM-DD HH24:MI:SS.US TZH'), \
         to_char(created_ts, 'YYYY-MM-DD HH24:MI:SS.US TZH') \
         FROM proj_driver_stats ORDER BY entity_key, feature_name",
    )
    .await;
    let as_tuple = |r: &sqlx::postgres::PgRow| {
        (
            r.get::<Vec<u8>, _>(0),
            r.get::<String, _>(1),
            r.get::<Vec<u8>, _>(2),
            r.get::<Option<String>, _>(3),
            r.get::<Option<Vec<u8>>, _>(4),
            r.get::<String, _>(5),
            r.get::<Option<String>, _>(6),
        )
    };
    let stored: Vec<_> = stored.iter().map(as_tuple).collect();
    assert_eq!(
        stored,
        vec![
            (
                driver_key(1001),
                "acc_rate".to_owned(),
                v(Val::FloatVal(0.1)).encode_to_vec(),
                Some("0.10000000149011612".to_owned()),
                None,
                "2024-05-01 00:00:00.123456 +00".to_owned(),
                Some("2024-05-01 00:01:00.000000 +00".to_owned()),
            ),
            (
                driver_key(1001),
                "conv_rate".to_owned(),
                v(Val::DoubleVal(0.25)).encode_to_vec(),
                Some("0.25".to_owned()),
                None,
                "2024-05-01 00:00:00.123456 +00".to_owned(),
                Some("2024-05-01 00:01:00.000000 +00".to_owned()),
            ),
            (
                driver_key(1002),
                "conv_rate".to_owned(),
                v(Val::DoubleVal(1.0)).encode_to_vec(),
                Some("1.0".to_owned()),
                None,
                "2024-05-01 00:00:01.000000 +00".to_owned(),
                None,
            ),
        ]
    );

    let keys = [
        driver_key(1002),
        driver_key(9),
        driver_key(1001),
        driver_key(1002),
    ];
    let read = store
        .online_read(&table, &keys, &names(&["acc_rate", "conv_rate"]))
        .await
        .unwrap();
    let micros = ts(T0, 123_456_000);
    assert_eq!(
        read,
        vec![
            Some(FeatureRow {
                event_ts: ts(T0 + 1, 0),
                values: vec![None, Some(v(Val::DoubleVal(1.0)))],
            }),
            None,
            Some(FeatureRow {
                event_ts: micros,
                values: vec![Some(v(Val::FloatVal(0.1))), Some(v(Val::DoubleVal(0.25)))],
            }),
            Some(FeatureRow {
                event_ts: ts(T0 + 1, 0),
                values: vec![None, Some(v(Val::DoubleVal(1.0)))],
            }),
        ]
    );
    // As Feast: the feature filter is in the statement, so an entity without any requested
    // feature stored is not found.
    let read = store
        .online_read(&table, &[driver_key(1002)], &names(&["acc_rate"]))
        .await
        .unwrap();
    assert_eq!(read, [None]);
    // No features requested: Feast's statement without the feature filter.
    let read = store
        .online_read(&table, &[driver_key(1001), driver_key(9)], &[])
        .await
        .unwrap();
    assert_eq!(
        read,
        vec![
            Some(FeatureRow {
                event_ts: micros,
                values: vec![],
            }),
            None
        ]
    );
    assert_eq!(
        store
            .online_read(&table, &[], &names(&["conv_rate"]))
            .await
            .unwrap(),
        []
    );
}

#[tokio::test]
async fn newer_wins_against_the_table_and_within_a_batch() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store().await;
    let table = view("driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    let rate = |x: f64| v(Val::DoubleVal(x));
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[row(1, ts(T0 + 10, 0), &[("conv_rate", rate(1.0))])]
            )
            .await
            .unwrap(),
        1
    );
    // Older: skipped, not counted.
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[row(1, ts(T0 + 5, 0), &[("conv_rate", rate(2.0))])]
            )
            .await
            .unwrap(),
        0
    );
    assert_eq!(read_one(&store, &table).await.values[0], Some(rate(1.0)));
    // Older by one microsecond: skipped too.
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[row(1, ts(T0 + 9, 999_999_000), &[("conv_rate", rate(2.5))])]
            )
            .await
            .unwrap(),
        0
    );
    // Equal: overwrites.
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[row(1, ts(T0 + 10, 0), &[("conv_rate", rate(3.0))])]
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(read_one(&store, &table).await.values[0], Some(rate(3.0)));

    // The same cell several times in one batch (Postgres refuses to touch a row twice in one
    // command): the newest write is applied, whatever its position; the row it came from is
    // the only one counted for that cell.
    let batch = [
        row(1, ts(T0 + 30, 0), &[("conv_rate", rate(30.0))]),
        row(
            1,
            ts(T0 + 20, 0),
            &[("conv_rate", rate(20.0)), ("acc_rate", rate(0.2))],
        ),
        row(2, ts(T0, 0), &[("conv_rate", rate(0.0))]),
        row(2, ts(T0, 0), &[("conv_rate", rate(0.5))]),
    ];
    assert_eq!(store.online_write_batch(&table, &batch).await.unwrap(), 3);
    let got = read_one(&store, &table).await;
    assert_eq!(got.values, vec![Some(rate(30.0)), Some(rate(0.2))]);
    assert_eq!(
        got.event_ts,
        ts(T0 + 30, 0),
        "the newest of the entity's rows"
    );
    let two = store
        .online_read(&table, &[driver_key(2)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(
        two[0].as_ref().unwrap().values,
        [Some(rate(0.5))],
        "equal: the later wins"
    );

    // A batch mixing stale and fresh rows in one transaction.
    let batch = [
        row(1, ts(T0 + 1, 0), &[("conv_rate", rate(-1.0))]),
        row(3, ts(T0 + 1, 0), &[("conv_rate", rate(3.0))]),
    ];
    assert_eq!(store.online_write_batch(&table, &batch).await.unwrap(), 1);
    assert_eq!(read_one(&store, &table).await.values[0], Some(rate(30.0)));
}

#[tokio::test]
async fn value_text_and_value_num_are_feasts() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db
        .store_with(|c| c.enable_openai_compatible_store = Some(true))
        .await;
    let table = view("typed");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    let values = [
        (
            "a_string",
            v(Val::StringVal("héllo".into())),
            Some("héllo"),
            None,
        ),
        ("b_int64", v(Val::Int64Val(-42)), Some("-42"), Some(-42.0)),
        ("c_int32", v(Val::Int32Val(7)), Some("7"), Some(7.0)),
        (
            "d_double",
            v(Val::DoubleVal(1e16)),
            Some("1e+16"),
            Some(1e16),
        ),
        (
            "e_float",
            v(Val::FloatVal(0.1)),
            Some("0.10000000149011612"),
            Some(f64::from(0.1f32)),
        ),
        ("f_bool", v(Val::BoolVal(true)), Some("True"), Some(1.0)),
        ("g_bytes", v(Val::BytesVal(vec![0, 1, 2])), None, None),
        ("h_missing", Value::default(), None, None),
    ];
    let features: Vec<(&str, Value)> = values.iter().map(|(n, v, ..)| (*n, v.clone())).collect();
    store
        .online_write_batch(&table, &[row(1, ts(T0, 0), &features)])
        .await
        .unwrap();
    let mut raw = db.raw().await;
    let stored = rows_of(
        &mut raw,
        "SELECT feature_name, value, value_text, value_num FROM proj_typed ORDER BY feature_name",
    )
    .await;
    assert_eq!(stored.len(), values.len());
    for (r, (name, value, text, num)) in stored.iter().zip(&values) {
        assert_eq!(r.get::<String, _>(0), *name);
        assert_eq!(r.get::<Vec<u8>, _>(1), value.encode_to_vec(), "{name}");
        assert_eq!(r.get::<Option<String>, _>(2).as_deref(), *text, "{name}");
        assert_eq!(r.get::<Option<f64>, _>(3), *num, "{name}");
    }
    let read = store
        .online_read(&table, &[driver_key(1)], &names(&["h_missing", "g_bytes"]))
        .await
        .unwrap();
    assert_eq!(
        read[0].as_ref().unwrap().values,
        vec![
            Some(Value::default()),
            Some(v(Val::BytesVal(vec![0, 1, 2])))
        ]
    );
}

#[tokio::test]
async fn reads_feasts_naive_utc_timestamps() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.store().await;
    let table = view("driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    // What psycopg sends for Feast's naive UTC datetime: a `timestamp` literal, converted in
    // the session's TimeZone (UTC here, as on a default server).
    let mut raw = db.raw().await;
    sqlx::query(
        "INSERT INTO proj_driver_stats (entity_key, feature_name, value, value_text, \
         vector_value, event_ts, created_ts) \
         VALUES ($1, 'conv_rate', $2, '0.5', NULL, TIMESTAMP '2024-05-01 00:00:00.5', NULL)",
    )
    .bind(driver_key(5))
    .bind(v(Val::DoubleVal(0.5)).encode_to_vec())
    .execute(&mut raw)
    .await
    .unwrap();
    let read = store
        .online_read(&table, &[driver_key(5)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(
        read[0],
        Some(FeatureRow {
            event_ts: ts(T0, 500_000_000),
            values: vec![Some(v(Val::DoubleVal(0.5)))],
        })
    );
    // Newer-wins compares with the stored value whatever wrote it.
    assert_eq!(
        store
            .online_write_batch(
                &table,
                &[row(5, ts(T0, 0), &[("conv_rate", v(Val::DoubleVal(9.0)))])]
            )
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn reads_several_views_batched_or_one_by_one_alike() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let stats = view("driver_stats");
    let extra = TableRef::new("proj", "driver_extra").with_schema(["driver_id"], ["rank"]);
    let other_key = TableRef::new("proj", "customer").with_schema(["customer_id"], ["age"]);
    let setup = db.store().await;
    setup
        .update(
            "proj",
            &[stats.clone(), extra.clone(), other_key.clone()],
            &[],
        )
        .await
        .unwrap();
    let rate = |x: f64| v(Val::DoubleVal(x));
    setup
        .online_write_batch(
            &stats,
            &[
                row(
                    1,
                    ts(T0, 0),
                    &[("conv_rate", rate(0.1)), ("acc_rate", rate(0.9))],
                ),
                row(2, ts(T0 + 1, 0), &[("conv_rate", rate(0.2))]),
            ],
        )
        .await
        .unwrap();
    setup
        .online_write_batch(
            &extra,
            &[row(2, ts(T0 + 2, 0), &[("rank", v(Val::Int64Val(1)))])],
        )
        .await
        .unwrap();
    let customer = serialize_entity_key(
        &EntityKey {
            join_keys: vec!["customer_id".into()],
            entity_values: vec![v(Val::StringVal("c1".into()))],
        },
        3,
    )
    .unwrap();
    setup
        .online_write_batch(
            &other_key,
            &[WriteRow {
                entity_key: customer.clone(),
                features: vec![("age".into(), v(Val::Int32Val(33)))],
                event_ts: ts(T0 + 3, 0),
                created_ts: None,
            }],
        )
        .await
        .unwrap();

    let driver_keys = [driver_key(1), driver_key(2), driver_key(3), driver_key(1)];
    let customer_keys = [
        customer.clone(),
        customer.clone(),
        b"nope".to_vec(),
        customer.clone(),
    ];
    let (f_stats, f_extra, f_age) = (
        names(&["conv_rate", "acc_rate"]),
        names(&["rank"]),
        names(&["age"]),
    );
    let reads = [
        ReadSpec {
            table: &stats,
            entity_keys: &driver_keys,
            features: &f_stats,
            entity_fields: None,
        },
        ReadSpec {
            table: &extra,
            entity_keys: &driver_keys,
            features: &f_extra,
            entity_fields: None,
        },
        ReadSpec {
            table: &other_key,
            entity_keys: &customer_keys,
            features: &f_age,
            entity_fields: None,
        },
        ReadSpec {
            table: &extra,
            entity_keys: &[],
            features: &f_extra,
            entity_fields: None,
        },
    ];
    let expected = vec![
        vec![
            Some(FeatureRow {
                event_ts: ts(T0, 0),
                values: vec![Some(rate(0.1)), Some(rate(0.9))],
            }),
            Some(FeatureRow {
                event_ts: ts(T0 + 1, 0),
                values: vec![Some(rate(0.2)), None],
            }),
            None,
            Some(FeatureRow {
                event_ts: ts(T0, 0),
                values: vec![Some(rate(0.1)), Some(rate(0.9))],
            }),
        ],
        vec![
            None,
            Some(FeatureRow {
                event_ts: ts(T0 + 2, 0),
                values: vec![Some(v(Val::Int64Val(1)))],
            }),
            None,
            None,
        ],
        vec![
            Some(FeatureRow {
                event_ts: ts(T0 + 3, 0),
                values: vec![Some(v(Val::Int32Val(33)))],
            }),
            Some(FeatureRow {
                event_ts: ts(T0 + 3, 0),
                values: vec![Some(v(Val::Int32Val(33)))],
            }),
            None,
            Some(FeatureRow {
                event_ts: ts(T0 + 3, 0),
                values: vec![Some(v(Val::Int32Val(33)))],
            }),
        ],
        vec![],
    ];
    // 4 entity rows × 4 views = 16: batched at ≥ 16, one statement per view below, and
    // never with 0.
    for limit in [2048, 16, 15, 0] {
        let store = db.store_with(|c| c.max_batched_result_rows = limit).await;
        let got = store.online_read_many(&reads).await.unwrap();
        assert_eq!(got, expected, "max_batched_result_rows = {limit}");
        // Each view's part is exactly what online_read returns for it.
        for (r, part) in reads.iter().zip(&got) {
            assert_eq!(
                &store
                    .online_read(r.table, r.entity_keys, r.features)
                    .await
                    .unwrap(),
                part
            );
        }
    }

    // A missing table fails the request on both paths, naming the table.
    let missing = TableRef::new("proj", "never_applied");
    for limit in [2048, 0] {
        let store = db.store_with(|c| c.max_batched_result_rows = limit).await;
        let err = store
            .online_read_many(&[
                reads[0],
                ReadSpec {
                    table: &missing,
                    entity_keys: &driver_keys,
                    features: &f_extra,
                    entity_fields: None,
                },
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, OnlineStoreError::NoSuchTable(t) if t == "proj_never_applied"),
            "{limit}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Connections and the factory

#[tokio::test]
async fn an_unreachable_server_is_unavailable_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config: PostgresOnlineStoreConfig = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1", "port": port, "database": "feast", "user": "u",
        "password": "p", "sslmode": "disable",
    }))
    .unwrap();
    let started = std::time::Instant::now();
    let err = PostgresOnlineStore::connect_with(
        &config,
        PostgresOnlineStoreOptions {
            acquire_timeout: Duration::from_secs(2),
        },
    )
    .await
    .err()
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(&err, OnlineStoreError::Unavailable(m) if m.contains(&format!("127.0.0.1:{port}/feast"))),
        "{err:?}"
    );
    let bad = PostgresOnlineStoreConfig {
        sslmode: Some("sometimes".into()),
        ..config
    };
    assert!(matches!(
        PostgresOnlineStore::connect(&bad).await.err().unwrap(),
        OnlineStoreError::Invalid(m) if m.contains("sslmode")
    ));
}

#[tokio::test]
async fn a_closed_pool_is_unavailable_and_a_killed_connection_is_replaced() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db
        .store_with(|c| {
            c.min_conn = 1;
            c.max_conn = 1;
        })
        .await;
    let table = view("driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    // Kill the store's backend, as a server restart would.
    let mut raw = db.raw().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'feast-rs'",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    // The broken connection may fail one call (Unavailable); the pool then reconnects.
    let mut recovered = false;
    for _ in 0..3 {
        match store
            .online_read(&table, &[driver_key(1)], &names(&["conv_rate"]))
            .await
        {
            Ok(r) => {
                assert_eq!(r, [None]);
                recovered = true;
                break;
            }
            Err(OnlineStoreError::Unavailable(m)) => {
                assert!(m.contains(&db.name), "{m}");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(recovered);
    store.close().await;
    assert!(matches!(
        store
            .online_read(&table, &[driver_key(1)], &names(&["conv_rate"]))
            .await,
        Err(OnlineStoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn open_online_store_opens_postgres_from_feature_store_yaml() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (user, password, host, port) = server_parts();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!(
            "project: proj\nregistry: data/registry.db\nprovider: local\n\
             online_store:\n  type: postgres\n  host: {host}\n  port: {port}\n  \
             database: {}\n  db_schema: feast\n  user: {user}\n  password: \"{password}\"\n  \
             sslmode: disable\n",
            db.name
        ),
    )
    .unwrap();
    let config = RepoConfig::load(dir.path(), None).unwrap();
    let store = open_online_store(&config).await.unwrap();
    let table = view("driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    store
        .online_write_batch(
            &table,
            &[row(1, ts(T0, 0), &[("conv_rate", v(Val::DoubleVal(2.0)))])],
        )
        .await
        .unwrap();
    let read = store
        .online_read(&table, &[driver_key(1)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(
        read[0].as_ref().unwrap().values,
        [Some(v(Val::DoubleVal(2.0)))]
    );
    let mut raw = db.raw().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM feast.proj_driver_stats")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(n, 1);
    store.teardown("proj", &[table]).await.unwrap();
}

/// Which statement a read runs, seen from the server: a lock on the second view's table makes
/// the read wait, and `pg_stat_activity` shows the waiting statement's text.
#[tokio::test]
async fn batched_reads_are_one_union_all_statement() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (view("view_a"), view("view_b"));
    db.store()
        .await
        .update("proj", &[a.clone(), b.clone()], &[])
        .await
        .unwrap();
    let keys = [driver_key(1), driver_key(2)];
    let features = names(&["conv_rate"]);
    for (limit, batched) in [(4, true), (3, false)] {
        let store = db.store_with(|c| c.max_batched_result_rows = limit).await;
        let mut locker = db.raw().await;
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE proj_view_b IN ACCESS EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
            .unwrap();
        let reads = [
            ReadSpec {
                table: &a,
                entity_keys: &keys,
                features: &features,
                entity_fields: None,
            },
            ReadSpec {
                table: &b,
                entity_keys: &keys,
                features: &features,
                entity_fields: None,
            },
        ];
        let read = store.online_read_many(&reads);
        let watch = async {
            let mut observer = db.raw().await;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let waiting: Vec<String> = sqlx::query_scalar(
                    "SELECT query FROM pg_stat_activity WHERE datname = current_database() \
                     AND application_name = 'feast-rs' AND wait_event_type = 'Lock'",
                )
                .fetch_all(&mut observer)
                .await
                .unwrap();
                if let Some(q) = waiting.first() {
                    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
                    return q.clone();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the read never waited"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (result, waiting) = tokio::join!(read, watch);
        assert_eq!(result.unwrap(), vec![vec![None, None], vec![None, None]]);
        assert_eq!(
            waiting.contains("UNION ALL"),
            batched,
            "limit {limit}: {waiting}"
        );
        assert_eq!(waiting.contains("\"proj_view_a\""), batched, "{waiting}");
        assert!(waiting.contains("\"proj_view_b\""), "{waiting}");
    }
}
