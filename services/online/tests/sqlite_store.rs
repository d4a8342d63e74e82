//! SqliteOnlineStore on real database files. Interop with Feast itself is checked by
//! tests/compat/test_sqlite_online_store.py.

use feast_online::store::sqlite::SqliteOnlineStore;
use feast_online::{
    FeatureRow, OnlineStore, OnlineStoreError, TableRef, WriteRow, serialize_entity_key,
};
use feast_proto::types::{EntityKey, Value, value::Val};
use prost_types::Timestamp;
use sqlx::Row;

fn key(id: i64) -> Vec<u8> {
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

fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn v(val: Val) -> Value {
    Value { val: Some(val) }
}

fn row(id: i64, at: i64, features: &[(&str, Val)]) -> WriteRow {
    WriteRow {
        entity_key: key(id),
        features: features
            .iter()
            .map(|(n, val)| (n.to_string(), v(val.clone())))
            .collect(),
        event_ts: ts(at),
        created_ts: None,
    }
}

fn names(features: &[&str]) -> Vec<String> {
    features.iter().map(|s| s.to_string()).collect()
}

async fn store_with_table() -> (tempfile::TempDir, SqliteOnlineStore, TableRef) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteOnlineStore::open(dir.path().join("data/online.db"))
        .await
        .unwrap();
    let table = TableRef::new("proj", "driver_stats");
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    (dir, store, table)
}

#[tokio::test]
async fn update_creates_feasts_exact_schema_idempotently() {
    let (_dir, store, table) = store_with_table().await;
    store
        .update("proj", std::slice::from_ref(&table), &[])
        .await
        .unwrap();
    let rows = sqlx::query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let got: Vec<(String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "table".into(),
                "proj_driver_stats".into(),
                "proj_driver_stats".into(),
                Some(
                    "CREATE TABLE \"proj_driver_stats\" (entity_key BLOB, feature_name TEXT, \
                     value BLOB, value_text TEXT,  vector_value BLOB, event_ts timestamp, \
                     created_ts timestamp,  PRIMARY KEY(entity_key, feature_name))"
                        .into()
                )
            ),
            (
                "index".into(),
                "proj_driver_stats_ek".into(),
                "proj_driver_stats".into(),
                Some(
                    "CREATE INDEX \"proj_driver_stats_ek\" ON \"proj_driver_stats\" (entity_key)"
                        .into()
                )
            ),
            (
                "index".into(),
                "sqlite_autoindex_proj_driver_stats_1".into(),
                "proj_driver_stats".into(),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn update_adds_value_text_to_old_tables_and_drops_deleted_ones() {
    let (_dir, store, table) = store_with_table().await;
    let old = TableRef::new("proj", "old_view");
    sqlx::query(
        "CREATE TABLE \"proj_old_view\" (entity_key BLOB, feature_name TEXT, value BLOB, \
         event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
        .update(
            "proj",
            std::slice::from_ref(&old),
            std::slice::from_ref(&table),
        )
        .await
        .unwrap();
    let cols: Vec<String> = sqlx::query("PRAGMA table_info(\"proj_old_view\")")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(1))
        .collect();
    assert!(cols.contains(&"value_text".to_string()), "{cols:?}");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(tables, vec!["proj_old_view".to_string()]);
    // Writes to the dropped table fail clearly; reads see nothing.
    let err = store
        .online_write_batch(&table, &[row(1, 10, &[("a", Val::Int64Val(1))])])
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::NoSuchTable(ref t) if t == "proj_driver_stats"));
    let read = store
        .online_read(&table, &[key(1)], &names(&["a"]))
        .await
        .unwrap();
    assert_eq!(read, vec![None]);
    // The servers' writes create the table of a view that never reached `update` (one
    // applied through a registry server) and then write.
    let written = store
        .write_creating(&table, &[row(1, 10, &[("a", Val::Int64Val(1))])])
        .await
        .unwrap();
    assert_eq!(written, 1);
    let read = store
        .online_read(&table, &[key(1)], &names(&["a"]))
        .await
        .unwrap();
    assert!(read[0].is_some());
}

#[tokio::test]
async fn reads_what_it_wrote_aligned_with_keys_and_features() {
    let (_dir, store, table) = store_with_table().await;
    let written = store
        .online_write_batch(
            &table,
            &[
                row(
                    1,
                    1_714_521_600,
                    &[
                        ("conv_rate", Val::FloatVal(0.5)),
                        ("trips", Val::Int64Val(3)),
                        ("name", Val::StringVal("a".into())),
                    ],
                ),
                row(2, 1_714_521_601, &[("conv_rate", Val::FloatVal(0.25))]),
                row(3, 1_714_521_602, &[]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written, 2, "the row without features writes nothing");

    let features = names(&["trips", "conv_rate", "missing"]);
    let got = store
        .online_read(&table, &[key(2), key(9), key(1), key(2), key(3)], &features)
        .await
        .unwrap();
    let two = Some(FeatureRow {
        event_ts: ts(1_714_521_601),
        values: vec![None, Some(v(Val::FloatVal(0.25))), None],
    });
    assert_eq!(
        got,
        vec![
            two.clone(),
            None,
            Some(FeatureRow {
                event_ts: ts(1_714_521_600),
                values: vec![Some(v(Val::Int64Val(3))), Some(v(Val::FloatVal(0.5))), None],
            }),
            two,
            None,
        ]
    );
    assert_eq!(
        store.online_read(&table, &[], &features).await.unwrap(),
        vec![]
    );
}

/// feature_name, value, value_text, typeof(event_ts), event_ts, created_ts, vector_value
type StoredRow = (
    String,
    Vec<u8>,
    Option<String>,
    String,
    i64,
    i64,
    Option<Vec<u8>>,
);

#[tokio::test]
async fn stores_rows_as_feast_does() {
    let (_dir, store, table) = store_with_table().await;
    let mut r = row(
        1,
        0,
        &[
            ("f", Val::FloatVal(0.1)),
            ("b", Val::BoolVal(true)),
            ("x", Val::BytesVal(b"\x00".to_vec())),
        ],
    );
    r.event_ts = Timestamp {
        seconds: 1_714_521_600,
        nanos: 900_000_000,
    };
    r.created_ts = Some(ts(1_714_521_700));
    store.online_write_batch(&table, &[r]).await.unwrap();
    let rows = sqlx::query(
        "SELECT feature_name, value, value_text, typeof(event_ts), event_ts, created_ts, \
         vector_value FROM proj_driver_stats WHERE entity_key = ? ORDER BY feature_name",
    )
    .bind(key(1))
    .fetch_all(store.pool())
    .await
    .unwrap();
    let got: Vec<StoredRow> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    use prost::Message;
    let row = |n: &str, val: Val, text: Option<&str>| {
        (
            n.to_string(),
            v(val).encode_to_vec(),
            text.map(str::to_string),
            "integer".to_string(),
            1_714_521_600,
            1_714_521_700,
            None,
        )
    };
    assert_eq!(
        got,
        vec![
            row("b", Val::BoolVal(true), Some("True")),
            row("f", Val::FloatVal(0.1), Some("0.10000000149011612")),
            row("x", Val::BytesVal(b"\x00".to_vec()), None),
        ]
    );
}

async fn read_one(store: &SqliteOnlineStore, table: &TableRef) -> FeatureRow {
    store
        .online_read(table, &[key(1)], &names(&["a", "b"]))
        .await
        .unwrap()
        .remove(0)
        .unwrap()
}

#[tokio::test]
async fn newer_event_timestamps_win() {
    let (_dir, store, table) = store_with_table().await;
    store
        .online_write_batch(
            &table,
            &[row(
                1,
                100,
                &[("a", Val::Int64Val(1)), ("b", Val::Int64Val(1))],
            )],
        )
        .await
        .unwrap();
    // Older: skipped, even for a feature the entity does not have yet.
    let n = store
        .online_write_batch(
            &table,
            &[row(
                1,
                99,
                &[("a", Val::Int64Val(2)), ("c", Val::Int64Val(2))],
            )],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    let got = read_one(&store, &table).await;
    assert_eq!(got.event_ts, ts(100));
    assert_eq!(
        got.values,
        vec![Some(v(Val::Int64Val(1))), Some(v(Val::Int64Val(1)))]
    );
    let c: i64 =
        sqlx::query_scalar("SELECT count(*) FROM proj_driver_stats WHERE feature_name = 'c'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(c, 0);
    // Same second (sub-seconds are not stored): overwrites. Then, within one batch, the
    // older of two rows for the same entity loses whatever its position.
    let mut same = row(1, 100, &[("a", Val::Int64Val(3))]);
    same.event_ts.nanos = 5;
    let n = store
        .online_write_batch(
            &table,
            &[
                same,
                row(1, 200, &[("b", Val::Int64Val(4))]),
                row(1, 150, &[("a", Val::Int64Val(5))]),
                row(2, 1, &[("a", Val::Int64Val(6))]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    let got = read_one(&store, &table).await;
    assert_eq!(
        got.values,
        vec![Some(v(Val::Int64Val(3))), Some(v(Val::Int64Val(4)))]
    );
}

#[tokio::test]
async fn reads_more_keys_than_one_statement_binds() {
    let (_dir, store, table) = store_with_table().await;
    let n = 9000;
    let rows: Vec<WriteRow> = (0..n)
        .map(|i| row(i, 1000 + i, &[("a", Val::Int64Val(i * 2))]))
        .collect();
    assert_eq!(
        store.online_write_batch(&table, &rows).await.unwrap(),
        n as usize
    );
    let mut keys: Vec<Vec<u8>> = (0..n).rev().map(key).collect();
    keys.push(key(-1));
    let got = store
        .online_read(&table, &keys, &names(&["a"]))
        .await
        .unwrap();
    assert_eq!(got.len(), keys.len());
    assert_eq!(got.last().unwrap(), &None);
    for (i, r) in (0..n).rev().zip(&got) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.event_ts, ts(1000 + i));
        assert_eq!(r.values, vec![Some(v(Val::Int64Val(i * 2)))]);
    }
}

#[tokio::test]
async fn fills_value_num_when_the_table_has_it() {
    let (_dir, store, _) = store_with_table().await;
    let table = TableRef::new("proj", "openai");
    sqlx::query(
        "CREATE TABLE \"proj_openai\" (entity_key BLOB, feature_name TEXT, value BLOB, \
         value_text TEXT, value_num REAL, vector_value BLOB, event_ts timestamp, \
         created_ts timestamp, PRIMARY KEY(entity_key, feature_name))",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
        .online_write_batch(
            &table,
            &[row(
                1,
                5,
                &[("n", Val::Int32Val(7)), ("s", Val::StringVal("x".into()))],
            )],
        )
        .await
        .unwrap();
    let nums: Vec<Option<f64>> =
        sqlx::query_scalar("SELECT value_num FROM proj_openai ORDER BY feature_name")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(nums, vec![Some(7.0), None]);
}

#[tokio::test]
async fn teardown_drops_only_the_given_tables() {
    let (_dir, store, table) = store_with_table().await;
    let other = TableRef::new("other", "driver_stats");
    store
        .update("other", std::slice::from_ref(&other), &[])
        .await
        .unwrap();
    store
        .online_write_batch(&table, &[row(1, 1, &[("a", Val::Int64Val(1))])])
        .await
        .unwrap();
    store
        .teardown("proj", std::slice::from_ref(&table))
        .await
        .unwrap();
    store
        .teardown("proj", std::slice::from_ref(&table))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master ORDER BY name")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        tables,
        vec![
            "other_driver_stats".to_string(),
            "other_driver_stats_ek".to_string(),
            "sqlite_autoindex_other_driver_stats_1".to_string()
        ]
    );
    assert_eq!(
        store
            .online_read(&table, &[key(1)], &names(&["a"]))
            .await
            .unwrap(),
        vec![None]
    );
}

#[tokio::test]
async fn corrupt_values_are_invalid_not_unavailable() {
    let (_dir, store, table) = store_with_table().await;
    sqlx::query("INSERT INTO proj_driver_stats (entity_key, feature_name, value, event_ts) VALUES (?, 'a', x'ff', 1)")
        .bind(key(1))
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .online_read(&table, &[key(1)], &names(&["a"]))
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::Invalid(_)), "{err}");
}

async fn write_and_read(store: &SqliteOnlineStore, table: &TableRef, base: i64) {
    let rows: Vec<WriteRow> = (0..50)
        .map(|i| row(base + i, 10, &[("a", Val::Int64Val(i))]))
        .collect();
    let keys: Vec<Vec<u8>> = (0..50).map(|i| key(base + i)).collect();
    for _ in 0..10 {
        assert_eq!(store.online_write_batch(table, &rows).await.unwrap(), 50);
        let read = store
            .online_read(table, &keys, &names(&["a"]))
            .await
            .unwrap();
        assert!(read.iter().all(Option::is_some));
    }
}

#[tokio::test]
async fn concurrent_writers_on_one_file_wait_for_each_other() {
    let (dir, store, table) = store_with_table().await;
    // A second store on the same file stands in for another process (Feast, a replica).
    let other = SqliteOnlineStore::open(dir.path().join("data/online.db"))
        .await
        .unwrap();
    tokio::join!(
        write_and_read(&store, &table, 0),
        write_and_read(&other, &table, 1000),
        write_and_read(&store, &table, 2000)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM proj_driver_stats")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 150);
}
