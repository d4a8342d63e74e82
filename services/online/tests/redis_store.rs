//! RedisOnlineStore on real Redis servers: the shared server on 127.0.0.1:6379
//! (`FEAST_RS_TEST_REDIS=host:port` overrides it; every test uses its own project, so tests
//! never see each other's keys), and private `redis-server` processes for the outage and
//! Redis Cluster tests. Without a reachable Redis (or without `redis-server`) a test is
//! skipped with a printed reason, except under `CI=true`, where it fails. Interop with Feast
//! itself is checked by tests/compat/test_redis_online_store.py.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feast_core::config::{RedisOnlineStoreConfig, RedisType, RepoConfig};
use feast_online::store::hash_dump::listpack_hash_payload;
use feast_online::store::redis::{RedisOnlineStore, feature_field, redis_key, ts_field};
use feast_online::{
    FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow, open_online_store,
    serialize_entity_key,
};
use feast_proto::types::{EntityKey, Value, value::Val};
use prost::Message;
use prost_types::Timestamp;

// ---------------------------------------------------------------------------------------
// Servers

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (prints why and returns None) outside CI; fails under CI=true.
fn unavailable<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("Redis tests need {why} under CI=true");
    }
    eprintln!("skipping: {why}");
    None
}

fn shared_address() -> String {
    std::env::var("FEAST_RS_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".to_owned())
}

/// A project name no other test (or earlier run) uses.
fn unique_project(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t_{tag}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(connection_string: &str) -> RedisOnlineStoreConfig {
    RedisOnlineStoreConfig {
        connection_string: connection_string.to_owned(),
        ..RedisOnlineStoreConfig::default()
    }
}

/// A raw client on the same server, to look at what the store wrote (`address` is what
/// follows `redis://`: `host:port`, or with credentials and a db).
async fn raw(address: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{address}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The store on the shared server, or None when it is not reachable (outside CI).
async fn shared_store(cfg: RedisOnlineStoreConfig) -> Option<RedisOnlineStore> {
    let address = shared_address();
    let probe = redis::Client::open(format!("redis://{address}")).unwrap();
    let ping = tokio::time::timeout(Duration::from_secs(3), async {
        let mut c = probe.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    if !matches!(ping, Ok(Ok(_))) {
        return unavailable(&format!("a Redis server at {address} ({ping:?})"));
    }
    let cfg = RedisOnlineStoreConfig {
        connection_string: address,
        ..cfg
    };
    Some(RedisOnlineStore::connect(&cfg, 3).await.unwrap())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private `redis-server` child process, killed on drop.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl PrivateRedis {
    fn start(port: u16, extra: &[&str]) -> Option<Self> {
        if !redis_server_installed() {
            return unavailable("redis-server on the PATH");
        }
        let mut server = PrivateRedis {
            port,
            child: None,
            _dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A private server on a free port and a store on it (None when there is no
/// `redis-server`, outside CI).
async fn private_store() -> Option<(PrivateRedis, RedisOnlineStore)> {
    let server = PrivateRedis::start(free_port(), &[])?;
    let store = RedisOnlineStore::connect(&config(&server.address()), 3)
        .await
        .unwrap();
    Some((server, store))
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Data

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

fn ts(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

fn v(val: Val) -> Value {
    Value { val: Some(val) }
}

fn row(entity_key: Vec<u8>, at: Timestamp, features: &[(&str, Val)]) -> WriteRow {
    WriteRow {
        entity_key,
        features: features
            .iter()
            .map(|(n, val)| (n.to_string(), v(val.clone())))
            .collect(),
        event_ts: at,
        created_ts: None,
    }
}

fn names(features: &[&str]) -> Vec<String> {
    features.iter().map(|s| s.to_string()).collect()
}

fn driver_view(project: &str, view: &str) -> TableRef {
    TableRef::new(project, view).with_schema(["driver_id"], ["conv_rate", "acc_rate"])
}

async fn hgetall(address: &str, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut conn = raw(address).await;
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn exists(address: &str, key: &[u8]) -> bool {
    let mut conn = raw(address).await;
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap()
        == 1
}

// ---------------------------------------------------------------------------------------
// Layout, reads and writes

#[tokio::test]
async fn writes_feasts_exact_hash_and_reads_it_back() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("layout");
    let table = driver_view(&project, "driver_hourly_stats");
    let at = ts(1_714_521_600, 123_456_000);
    let written = store
        .online_write_batch(
            &table,
            &[
                row(
                    key(1001),
                    at,
                    &[
                        ("conv_rate", Val::FloatVal(0.5)),
                        ("acc_rate", Val::DoubleVal(0.25)),
                    ],
                ),
                row(key(1002), at, &[("conv_rate", Val::FloatVal(0.75))]),
                row(key(1003), at, &[]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written, 2, "rows without features are not written");

    // The raw hash, field by field, in insertion order: _ts first, then the features.
    let k = redis_key(&key(1001), &project);
    assert!(k.ends_with(project.as_bytes()));
    assert_eq!(
        hgetall(&shared_address(), &k).await,
        vec![
            (b"_ts:driver_hourly_stats".to_vec(), at.encode_to_vec()),
            (
                vec![0x61, 0x60, 0xe3, 0xda],
                v(Val::FloatVal(0.5)).encode_to_vec()
            ),
            (
                vec![0xfa, 0x5e, 0x58, 0xad],
                v(Val::DoubleVal(0.25)).encode_to_vec()
            ),
        ]
    );
    assert!(!exists(&shared_address(), &redis_key(&key(1003), &project)).await);

    let got = store
        .online_read(
            &table,
            &[key(1002), key(1001), key(9999), key(1001)],
            &names(&["acc_rate", "conv_rate"]),
        )
        .await
        .unwrap();
    let full = Some(FeatureRow {
        event_ts: at,
        values: vec![Some(v(Val::DoubleVal(0.25))), Some(v(Val::FloatVal(0.5)))],
    });
    assert_eq!(
        got,
        vec![
            // The timestamp is there but acc_rate is not: that value alone is missing.
            Some(FeatureRow {
                event_ts: at,
                values: vec![None, Some(v(Val::FloatVal(0.75)))],
            }),
            full.clone(),
            None,
            full,
        ]
    );
    // No features requested: found by the timestamp alone.
    let only_ts = store.online_read(&table, &[key(1001)], &[]).await.unwrap();
    assert_eq!(
        only_ts,
        vec![Some(FeatureRow {
            event_ts: at,
            values: vec![]
        })]
    );
    // Another project's hash of the same entity is a different key.
    let other = driver_view(&unique_project("other"), "driver_hourly_stats");
    assert_eq!(
        store
            .online_read(&other, &[key(1001)], &names(&["conv_rate"]))
            .await
            .unwrap(),
        vec![None]
    );
    store.teardown(&project, &[table]).await.unwrap();
}

/// A small deterministic generator (xorshift64*): a failing case reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A hash field or value that exercises Redis's choice of listpack entry: canonical
    /// integers of every width and both signs, strings that only look like integers,
    /// empty, and arbitrary bytes up to the listpack limit of 64.
    fn entry(&mut self) -> Vec<u8> {
        // The edges of the listpack's integer widths (7-bit unsigned, 13, 16, 24, 32 and
        // 64 bits signed), each also shifted by one.
        const EDGES: [i64; 12] = [
            0,
            127,
            -4096,
            4095,
            -32768,
            32767,
            -8_388_608,
            8_388_607,
            i32::MIN as i64,
            i32::MAX as i64,
            i64::MIN + 1,
            i64::MAX - 1,
        ];
        match self.below(9) {
            0 => ((self.next() as i64) >> self.below(64))
                .to_string()
                .into_bytes(),
            1 => (self.below(300) as i64 - 150).to_string().into_bytes(),
            8 => {
                let edge = EDGES[self.below(EDGES.len() as u64) as usize];
                (edge + (self.below(3) as i64 - 1)).to_string().into_bytes()
            }
            2 => {
                let near = [
                    "-0",
                    "007",
                    "+5",
                    "12a",
                    "-",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "123456789012345678901",
                ];
                near[self.below(near.len() as u64) as usize]
                    .as_bytes()
                    .to_vec()
            }
            3 => Vec::new(),
            _ => {
                let len = self.below(65) as usize;
                (0..len).map(|_| self.next() as u8).collect()
            }
        }
    }
}

async fn dump(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<u8> {
    redis::cmd("DUMP").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn restore_payloads_are_exactly_the_hashes_hset_builds() {
    // Redis checks little of a payload (its shape, not every entry): this compares what it
    // holds after RESTORE with what HSET builds from the same pairs, DUMP against DUMP.
    let Some(_store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let mut conn = raw(&shared_address()).await;
    let project = unique_project("dump");
    let mut g = Gen(0x5EED_F00D);
    let mut payload = Vec::new();
    for case in 0..400 {
        let n = 1 + g.below(if case % 10 == 0 { 128 } else { 12 }) as usize;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while pairs.len() < n {
            let field = g.entry();
            if pairs.iter().all(|(f, _)| *f != field) {
                pairs.push((field, g.entry()));
            }
        }
        let (restored, set) = (format!("{project}:{case}:r"), format!("{project}:{case}:h"));
        listpack_hash_payload(pairs.iter().map(|(f, v)| (&f[..], &v[..])), &mut payload).unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg(&restored)
            .arg(0)
            .arg(&payload[..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut hset = redis::cmd("HSET");
        hset.arg(&set);
        for (f, v) in &pairs {
            hset.arg(&f[..]).arg(&v[..]);
        }
        let _: i64 = hset.query_async(&mut conn).await.unwrap();
        assert_eq!(
            dump(&mut conn, &restored).await,
            dump(&mut conn, &set).await,
            "case {case}: {pairs:?}"
        );
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&restored)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(encoding, "listpack");
        let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&restored)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(all, pairs, "case {case}");
        let _: i64 = redis::cmd("DEL")
            .arg(&restored)
            .arg(&set)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_batch_creates_missing_hashes_whole_and_leaves_existing_ones_to_hset() {
    let Some(store) = shared_store(RedisOnlineStoreConfig {
        key_ttl_seconds: Some(100),
        ..RedisOnlineStoreConfig::default()
    })
    .await
    else {
        return;
    };
    let address = shared_address();
    let project = unique_project("restore");
    let table = driver_view(&project, "stats");
    let other = TableRef::new(&project, "other").with_schema(["driver_id"], ["x"]);
    // Key 3 already holds another view's fields.
    let at_other = ts(50, 0);
    store
        .online_write_batch(&other, &[row(key(3), at_other, &[("x", Val::Int64Val(7))])])
        .await
        .unwrap();
    let restores = calls(&address, "restore").await;
    let at = ts(100, 5);
    let features = |i: i64| {
        [
            ("conv_rate", Val::FloatVal(i as f32)),
            ("acc_rate", Val::DoubleVal(-(i as f64))),
        ]
    };
    let mut rows: Vec<WriteRow> = (0..40).map(|i| row(key(i), at, &features(i))).collect();
    // Keys 5 and 6 come twice: an older row (skipped) and a newer one of one feature.
    rows.push(row(
        key(5),
        ts(90, 0),
        &[("conv_rate", Val::FloatVal(-5.0))],
    ));
    rows.push(row(
        key(6),
        ts(110, 0),
        &[("conv_rate", Val::FloatVal(66.0))],
    ));
    assert_eq!(store.online_write_batch(&table, &rows).await.unwrap(), 41);
    // Every key that came once was offered to RESTORE (key 3 in vain).
    assert!(calls(&address, "restore").await >= restores + 38);

    let conv = feature_field("stats", "conv_rate").to_vec();
    let acc = feature_field("stats", "acc_rate").to_vec();
    let ts_stats = ts_field("stats");
    let mut conn = raw(&address).await;
    for i in 0..40 {
        let k = redis_key(&key(i), &project);
        let mut want = vec![
            (ts_stats.clone(), at.encode_to_vec()),
            (conv.clone(), v(Val::FloatVal(i as f32)).encode_to_vec()),
            (acc.clone(), v(Val::DoubleVal(-(i as f64))).encode_to_vec()),
        ];
        if i == 3 {
            let mut first = vec![
                (ts_field("other"), at_other.encode_to_vec()),
                (
                    feature_field("other", "x").to_vec(),
                    v(Val::Int64Val(7)).encode_to_vec(),
                ),
            ];
            first.append(&mut want);
            want = first;
        }
        if i == 6 {
            want[0].1 = ts(110, 0).encode_to_vec();
            want[1].1 = v(Val::FloatVal(66.0)).encode_to_vec();
        }
        assert_eq!(hgetall(&address, &k).await, want, "key {i}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((90..=100).contains(&ttl), "key {i}: ttl {ttl}");
    }

    // Existing hashes keep newer-wins: an older batch writes nothing, a newer one all.
    let older: Vec<WriteRow> = (0..40)
        .map(|i| row(key(i), ts(99, 0), &features(0)))
        .collect();
    assert_eq!(store.online_write_batch(&table, &older).await.unwrap(), 0);
    let newer: Vec<WriteRow> = (0..40)
        .map(|i| row(key(i), ts(200, 0), &features(i + 1000)))
        .collect();
    assert_eq!(store.online_write_batch(&table, &newer).await.unwrap(), 40);
    let got = store
        .online_read(&table, &[key(3), key(39)], &names(&["conv_rate"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(FeatureRow {
                event_ts: ts(200, 0),
                values: vec![Some(v(Val::FloatVal(1003.0)))]
            }),
            Some(FeatureRow {
                event_ts: ts(200, 0),
                values: vec![Some(v(Val::FloatVal(1039.0)))]
            }),
        ]
    );
    store.teardown(&project, &[table, other]).await.unwrap();
}

#[tokio::test]
async fn restore_is_tried_where_it_pays() {
    // A private server, so that INFO counts only this test's RESTOREs.
    let Some((server, store)) = private_store().await else {
        return;
    };
    let address = server.address();
    let a = driver_view("learn", "a");
    let b = TableRef::new("learn", "b").with_schema(["driver_id"], ["y"]);
    let rows = |table: &str, ids: std::ops::Range<i64>, at: i64| -> Vec<WriteRow> {
        let name = if table == "a" { "conv_rate" } else { "y" };
        ids.map(|i| row(key(i), ts(at, 0), &[(name, Val::Int64Val(i * at))]))
            .collect()
    };
    let mut restores = 0;
    let mut write = async |table: &TableRef, rows: Vec<WriteRow>| {
        let written = store.online_write_batch(table, &rows).await.unwrap();
        let now = calls(&address, "restore").await;
        let sent = now - restores;
        restores = now;
        (written, sent)
    };
    // New keys: RESTORE alone.
    assert_eq!(write(&a, rows("a", 0..40, 1)).await, (40, 40));
    assert_eq!(write(&a, rows("a", 40..80, 1)).await, (40, 40));
    // The same keys, newer: every RESTORE finds its key, so the view reads first from
    // now on, and only keys the read finds missing are restored.
    assert_eq!(write(&a, rows("a", 0..40, 2)).await, (40, 40));
    assert_eq!(write(&a, rows("a", 0..50, 3)).await, (50, 0));
    assert_eq!(write(&a, rows("a", 70..110, 4)).await, (40, 30));
    // Mostly new keys again: back to RESTORE first.
    assert_eq!(write(&a, rows("a", 110..150, 5)).await, (40, 40));
    assert_eq!(write(&a, rows("a", 150..190, 5)).await, (40, 40));

    // View b's entities all have hashes (view a's): its RESTOREs find them, then so do
    // those of keys read as missing, and b writes with HSET alone for a while.
    assert_eq!(write(&b, rows("b", 0..40, 1)).await, (40, 40));
    assert_eq!(write(&b, rows("b", 40..80, 1)).await, (40, 40));
    for start in [80, 120] {
        assert_eq!(write(&b, rows("b", start..start + 40, 1)).await, (40, 0));
    }
    // Small writes never try.
    assert_eq!(write(&a, rows("a", 1000..1010, 1)).await, (10, 0));

    let want = |id: i64, at: i64| {
        Some(FeatureRow {
            event_ts: ts(at, 0),
            values: vec![Some(v(Val::Int64Val(id * at)))],
        })
    };
    let got = store
        .online_read(
            &a,
            &[key(0), key(45), key(75), key(100), key(160)],
            &names(&["conv_rate"]),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            want(0, 3),
            want(45, 3),
            want(75, 4),
            want(100, 4),
            want(160, 5)
        ]
    );
    let got = store
        .online_read(&b, &[key(0), key(79), key(150)], &names(&["y"]))
        .await
        .unwrap();
    assert_eq!(got, vec![want(0, 1), want(79, 1), want(150, 1)]);
}

#[tokio::test]
async fn a_server_that_refuses_restore_gets_hset() {
    let Some(server) = PrivateRedis::start(
        free_port(),
        &["--user", "writer", "on", ">pw", "~*", "+@all", "-restore"],
    ) else {
        return;
    };
    let store = RedisOnlineStore::connect(
        &config(&format!("{},username=writer,password=pw", server.address())),
        3,
    )
    .await
    .unwrap();
    let table = driver_view("refused", "stats");
    for round in 0..2 {
        let rows: Vec<WriteRow> = (0..50)
            .map(|i| {
                row(
                    key(i + 100 * round),
                    ts(1, 0),
                    &[("conv_rate", Val::Int64Val(i))],
                )
            })
            .collect();
        assert_eq!(store.online_write_batch(&table, &rows).await.unwrap(), 50);
    }
    let got = store
        .online_read(&table, &[key(7), key(149)], &names(&["conv_rate"]))
        .await
        .unwrap();
    let values: Vec<_> = got.into_iter().map(|r| r.unwrap().values).collect();
    assert_eq!(
        values,
        vec![
            vec![Some(v(Val::Int64Val(7)))],
            vec![Some(v(Val::Int64Val(49)))]
        ]
    );
}

#[tokio::test]
async fn newer_wins_at_nanosecond_precision_like_feast() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("dedup");
    let table = driver_view(&project, "stats");
    let f = names(&["conv_rate"]);
    let write = |at: Timestamp, x: f32| row(key(1), at, &[("conv_rate", Val::FloatVal(x))]);
    let read = || async {
        let r = store.online_read(&table, &[key(1)], &f).await.unwrap();
        let r = r[0].clone().unwrap();
        (r.event_ts, r.values[0].clone().unwrap())
    };

    assert_eq!(
        store
            .online_write_batch(&table, &[write(ts(10, 5), 1.0)])
            .await
            .unwrap(),
        1
    );
    // Same instant: skipped (Feast skips `new <= stored`). One nanosecond older: skipped.
    for at in [ts(10, 5), ts(10, 4), ts(9, 999_999_999)] {
        assert_eq!(
            store
                .online_write_batch(&table, &[write(at, 2.0)])
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(read().await, (ts(10, 5), v(Val::FloatVal(1.0))));
    // One nanosecond newer (and given unnormalized): written.
    assert_eq!(
        store
            .online_write_batch(&table, &[write(ts(11, -999_999_994), 3.0)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(read().await, (ts(10, 6), v(Val::FloatVal(3.0))));

    // Within a batch, a row is compared with the newest earlier row of the same entity.
    let batch = [
        write(ts(20, 0), 4.0),
        write(ts(15, 0), 5.0),
        write(ts(20, 0), 6.0),
        write(ts(25, 0), 7.0),
        row(key(2), ts(1, 0), &[("conv_rate", Val::FloatVal(8.0))]),
    ];
    assert_eq!(store.online_write_batch(&table, &batch).await.unwrap(), 3);
    assert_eq!(read().await, (ts(25, 0), v(Val::FloatVal(7.0))));
    store.teardown(&project, &[table]).await.unwrap();
}

#[tokio::test]
async fn skip_dedup_writes_every_row_in_order() {
    let Some(store) = shared_store(RedisOnlineStoreConfig {
        skip_dedup: true,
        ..RedisOnlineStoreConfig::default()
    })
    .await
    else {
        return;
    };
    let project = unique_project("skipdedup");
    let table = driver_view(&project, "stats");
    let f = names(&["conv_rate"]);
    let write = |at: i64, x: f32| row(key(1), ts(at, 0), &[("conv_rate", Val::FloatVal(x))]);
    store
        .online_write_batch(&table, &[write(30, 1.0)])
        .await
        .unwrap();
    assert_eq!(
        store
            .online_write_batch(&table, &[write(10, 2.0), write(5, 3.0)])
            .await
            .unwrap(),
        2
    );
    let r = store.online_read(&table, &[key(1)], &f).await.unwrap();
    assert_eq!(
        r[0],
        Some(FeatureRow {
            event_ts: ts(5, 0),
            values: vec![Some(v(Val::FloatVal(3.0)))]
        })
    );
    store.teardown(&project, &[table]).await.unwrap();
}

#[tokio::test]
async fn key_ttl_seconds_expires_the_whole_hash() {
    let Some(store) = shared_store(RedisOnlineStoreConfig {
        key_ttl_seconds: Some(100),
        ..RedisOnlineStoreConfig::default()
    })
    .await
    else {
        return;
    };
    let project = unique_project("ttl");
    let table = driver_view(&project, "stats");
    store
        .online_write_batch(
            &table,
            &[row(key(1), ts(1, 0), &[("conv_rate", Val::FloatVal(1.0))])],
        )
        .await
        .unwrap();
    let mut conn = raw(&shared_address()).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis_key(&key(1), &project))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((90..=100).contains(&ttl), "ttl {ttl}");

    // Without key_ttl_seconds nothing expires.
    let plain = shared_store(RedisOnlineStoreConfig::default())
        .await
        .unwrap();
    plain
        .online_write_batch(
            &table,
            &[row(key(2), ts(1, 0), &[("conv_rate", Val::FloatVal(1.0))])],
        )
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis_key(&key(2), &project))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
    store.teardown(&project, &[table]).await.unwrap();
}

#[tokio::test]
async fn views_share_the_entity_hash_and_read_many_reads_them_together() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("many");
    let a = TableRef::new(&project, "view_a").with_schema(["driver_id"], ["x"]);
    let b = TableRef::new(&project, "view_b").with_schema(["driver_id"], ["y"]);
    store
        .online_write_batch(&a, &[row(key(1), ts(1, 0), &[("x", Val::Int64Val(10))])])
        .await
        .unwrap();
    store
        .online_write_batch(
            &b,
            &[
                row(key(1), ts(2, 0), &[("y", Val::StringVal("one".into()))]),
                row(key(2), ts(3, 0), &[("y", Val::StringVal("two".into()))]),
            ],
        )
        .await
        .unwrap();
    let fields = hgetall(&shared_address(), &redis_key(&key(1), &project)).await;
    assert_eq!(
        fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        vec![
            ts_field("view_a"),
            feature_field("view_a", "x").to_vec(),
            ts_field("view_b"),
            feature_field("view_b", "y").to_vec(),
        ]
    );

    let keys_a = [key(1), key(2)];
    let keys_b = [key(2), key(1), key(3)];
    let (fa, fb) = (names(&["x"]), names(&["y"]));
    let many = store
        .online_read_many(&[
            ReadSpec {
                table: &a,
                entity_keys: &keys_a,
                features: &fa,
                entity_fields: None,
            },
            ReadSpec {
                table: &b,
                entity_keys: &keys_b,
                features: &fb,
                entity_fields: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![
            vec![
                Some(FeatureRow {
                    event_ts: ts(1, 0),
                    values: vec![Some(v(Val::Int64Val(10)))]
                }),
                // key 2 has view_b only.
                None,
            ],
            vec![
                Some(FeatureRow {
                    event_ts: ts(3, 0),
                    values: vec![Some(v(Val::StringVal("two".into())))]
                }),
                Some(FeatureRow {
                    event_ts: ts(2, 0),
                    values: vec![Some(v(Val::StringVal("one".into())))]
                }),
                None,
            ],
        ]
    );
    // Each part is what online_read answers alone.
    assert_eq!(many[1], store.online_read(&b, &keys_b, &fb).await.unwrap());
    assert_eq!(
        store.online_read_many(&[]).await.unwrap(),
        Vec::<Vec<_>>::new()
    );
    store.teardown(&project, &[a, b]).await.unwrap();
}

/// The shared store, with `conv_rate = i` stored for keys `0..n` in a fresh project's
/// `stats` view.
async fn numbered_rows(
    tag: &str,
    n: i64,
) -> Option<(std::sync::Arc<RedisOnlineStore>, String, TableRef)> {
    let store = shared_store(RedisOnlineStoreConfig::default()).await?;
    let project = unique_project(tag);
    let table = driver_view(&project, "stats");
    let rows: Vec<WriteRow> = (0..n)
        .map(|i| row(key(i), ts(1, 0), &[("conv_rate", Val::Int64Val(i))]))
        .collect();
    store.online_write_batch(&table, &rows).await.unwrap();
    Some((std::sync::Arc::new(store), project, table))
}

/// Redis's count of `command` calls (`INFO commandstats`).
async fn calls(address: &str, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw(address).await)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_wide_read_takes_the_whole_hash_and_answers_as_a_picked_one() {
    let Some((server, store)) = private_store().await else {
        return;
    };
    let project = unique_project("whole");
    let wide_features: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let wide = TableRef::new(&project, "wide").with_schema(["driver_id"], &wide_features);
    let other = TableRef::new(&project, "other").with_schema(["driver_id"], ["y", "z"]);
    let wide_row = |id: i64| {
        let values: Vec<(&str, Val)> = wide_features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.as_str(), Val::Int64Val(id * 100 + i as i64)))
            .collect();
        row(key(id), ts(id, 7), &values)
    };
    store
        .online_write_batch(&wide, &[wide_row(1), wide_row(2)])
        .await
        .unwrap();
    // Fields of a view nobody asks for sit in the same hashes (key 3 holds only them).
    store
        .online_write_batch(
            &other,
            &[
                row(key(1), ts(5, 0), &[("y", Val::StringVal("y1".into()))]),
                row(key(3), ts(5, 0), &[("z", Val::StringVal("z3".into()))]),
            ],
        )
        .await
        .unwrap();
    let keys = [key(2), key(1), key(3), key(4), key(1)];
    // The view twice, once in another order with a feature it lacks.
    let some: Vec<String> = names(&["f19", "f3", "missing", "f0"]);
    let held = wide_features.len() + 1 + 2 + 1;
    let specs = |entity_fields| {
        [
            ReadSpec {
                table: &wide,
                entity_keys: &keys,
                features: &wide_features,
                entity_fields,
            },
            ReadSpec {
                table: &wide,
                entity_keys: &keys,
                features: &some,
                entity_fields,
            },
        ]
    };
    let address = server.address();
    let (hmget, hgetall) = (
        calls(&address, "hmget").await,
        calls(&address, "hgetall").await,
    );
    let picked = store.online_read_many(&specs(None)).await.unwrap();
    assert_eq!(calls(&address, "hmget").await, hmget + 4);
    let whole = store.online_read_many(&specs(Some(held))).await.unwrap();
    assert_eq!(
        calls(&address, "hgetall").await,
        hgetall + 4,
        "one per distinct key"
    );
    assert_eq!(
        calls(&address, "hmget").await,
        hmget + 4,
        "no HMGET for a wide read"
    );
    assert_eq!(whole, picked);
    let two = whole[0][0].as_ref().unwrap();
    assert_eq!(two.event_ts, ts(2, 7));
    assert_eq!(two.values[19], Some(v(Val::Int64Val(219))));
    assert_eq!(
        whole[1][1].as_ref().unwrap().values,
        vec![
            Some(v(Val::Int64Val(119))),
            Some(v(Val::Int64Val(103))),
            None,
            Some(v(Val::Int64Val(100))),
        ]
    );
    assert_eq!(whole[0][2], None, "key 3 holds another view only");
    assert_eq!(whole[0][3], None);
    assert_eq!(whole[0][4], whole[0][1]);

    // Few fields, under a third of the hash, or a hash too large to be a listpack: picked.
    let few = names(&["f1"]);
    for (features, entity_fields) in [(&few, 2), (&wide_features, 64), (&wide_features, 129)] {
        store
            .online_read_many(&[ReadSpec {
                table: &wide,
                entity_keys: &keys,
                features,
                entity_fields: Some(entity_fields),
            }])
            .await
            .unwrap();
    }
    assert_eq!(calls(&address, "hgetall").await, hgetall + 4);
    assert_eq!(calls(&address, "hmget").await, hmget + 16);
}

#[tokio::test]
async fn readers_that_give_up_leave_the_others_in_step() {
    let Some((store, project, table)) = numbered_rows("give_up", 100).await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (store, table) = (store.clone(), table.clone());
        tasks.spawn(async move {
            let features = names(&["conv_rate"]);
            // Polled once (its pipeline queued), then dropped before any reply. (Not a
            // zero timeout: that polls the read again once the timer fires, by when the
            // reply may have come.)
            let gave_up =
                futures::FutureExt::now_or_never(store.online_read(&table, &[key(i)], &features));
            assert!(gave_up.is_none(), "a read answered on its first poll");
            let got = store
                .online_read(&table, &[key(99 - i)], &features)
                .await
                .unwrap();
            (i, got)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, got) = done.unwrap();
        assert_eq!(
            got[0].as_ref().unwrap().values,
            vec![Some(v(Val::Int64Val(99 - i)))]
        );
    }
    store.teardown(&project, &[table]).await.unwrap();
}

#[tokio::test]
async fn stored_garbage_is_invalid_data() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("garbage");
    let table = driver_view(&project, "stats");
    let k = redis_key(&key(1), &project);
    let mut conn = raw(&shared_address()).await;
    let _: () = redis::cmd("HSET")
        .arg(&k)
        .arg(ts_field("stats"))
        .arg(&[0xffu8][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store
        .online_read(&table, &[key(1)], &names(&["conv_rate"]))
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::Invalid(_)), "{err:?}");
    // A key of another type.
    let _: () = redis::cmd("DEL")
        .arg(&k)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&k)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store
        .online_read(&table, &[key(1)], &names(&["conv_rate"]))
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::Invalid(_)), "{err:?}");
    let _: () = redis::cmd("DEL")
        .arg(&k)
        .query_async(&mut conn)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// update and teardown

#[tokio::test]
async fn update_deletes_a_view_like_feasts_delete_table() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("update");
    let a = TableRef::new(&project, "view_a").with_schema(["driver_id"], ["x"]);
    let b = TableRef::new(&project, "view_b").with_schema(["driver_id"], ["y"]);
    let x = |id| row(key(id), ts(1, 0), &[("x", Val::Int64Val(id))]);
    let y = |id| row(key(id), ts(1, 0), &[("y", Val::Int64Val(id))]);
    store.online_write_batch(&a, &[x(1), x(2)]).await.unwrap();
    store.online_write_batch(&b, &[y(2), y(3)]).await.unwrap();
    // A project whose name ends with this one's matches Feast's SCAN pattern too; it must
    // be left alone.
    let suffixed = format!("x{project}");
    let a_other = TableRef::new(&suffixed, "view_a").with_schema(["driver_id"], ["x"]);
    store.online_write_batch(&a_other, &[x(1)]).await.unwrap();

    store
        .update(&project, std::slice::from_ref(&b), std::slice::from_ref(&a))
        .await
        .unwrap();
    let addr = shared_address();
    // Only view_a in it: the hash is gone.
    assert!(!exists(&addr, &redis_key(&key(1), &project)).await);
    // Shared with view_b: view_a's fields go, view_b's stay.
    assert_eq!(
        hgetall(&addr, &redis_key(&key(2), &project)).await,
        vec![
            (ts_field("view_b"), ts(1, 0).encode_to_vec()),
            (
                feature_field("view_b", "y").to_vec(),
                v(Val::Int64Val(2)).encode_to_vec()
            ),
        ]
    );
    assert!(exists(&addr, &redis_key(&key(3), &project)).await);
    assert!(exists(&addr, &redis_key(&key(1), &suffixed)).await);

    // full_scan_for_deletion: false keeps the data, as Feast.
    let keep = shared_store(RedisOnlineStoreConfig {
        full_scan_for_deletion: Some(false),
        ..RedisOnlineStoreConfig::default()
    })
    .await
    .unwrap();
    keep.update(&project, &[], std::slice::from_ref(&b))
        .await
        .unwrap();
    assert!(exists(&addr, &redis_key(&key(3), &project)).await);

    // Without join keys the store cannot find the data: an error, not a silent no-op.
    let err = store
        .update(&project, &[], &[TableRef::new(&project, "view_b")])
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::Invalid(_)), "{err:?}");

    store.teardown(&project, &[b]).await.unwrap();
    store.teardown(&suffixed, &[a_other]).await.unwrap();
}

#[tokio::test]
async fn teardown_deletes_every_hash_of_the_projects_entities() {
    let Some(store) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let project = unique_project("teardown");
    let other = unique_project("teardown_other");
    let drivers = TableRef::new(&project, "drivers").with_schema(["driver_id"], ["x"]);
    let other_drivers = TableRef::new(&other, "drivers").with_schema(["driver_id"], ["x"]);
    // Two join keys, one of them 42 bytes long: its length is the byte `*` (0x2a) in the
    // key prefix, a glob metacharacter the SCAN pattern must escape.
    let long_name = "k".repeat(42);
    let pair = |id: i64| {
        serialize_entity_key(
            &EntityKey {
                join_keys: vec![long_name.clone(), "customer_id".into()],
                entity_values: vec![v(Val::StringVal(format!("s{id}"))), v(Val::Int32Val(7))],
            },
            3,
        )
        .unwrap()
    };
    assert!(pair(1).contains(&b'*'));
    let pairs =
        TableRef::new(&project, "pairs").with_schema([long_name.as_str(), "customer_id"], ["z"]);
    let entityless = TableRef::new(&project, "global").with_schema(["__dummy_id"], ["g"]);
    let dummy = serialize_entity_key(
        &EntityKey {
            join_keys: vec!["__dummy_id".into()],
            entity_values: vec![v(Val::StringVal(String::new()))],
        },
        3,
    )
    .unwrap();
    let x = |id| row(key(id), ts(1, 0), &[("x", Val::Int64Val(id))]);
    store
        .online_write_batch(&drivers, &[x(1), x(2)])
        .await
        .unwrap();
    store
        .online_write_batch(&other_drivers, &[x(1)])
        .await
        .unwrap();
    store
        .online_write_batch(
            &pairs,
            &[row(pair(1), ts(1, 0), &[("z", Val::BoolVal(true))])],
        )
        .await
        .unwrap();
    store
        .online_write_batch(
            &entityless,
            &[row(dummy.clone(), ts(1, 0), &[("g", Val::DoubleVal(1.5))])],
        )
        .await
        .unwrap();

    store
        .teardown(&project, &[drivers, pairs, entityless])
        .await
        .unwrap();
    let addr = shared_address();
    for k in [key(1), key(2), pair(1), dummy] {
        assert!(!exists(&addr, &redis_key(&k, &project)).await);
    }
    assert!(exists(&addr, &redis_key(&key(1), &other)).await);
    store.teardown(&other, &[other_drivers]).await.unwrap();
    assert!(!exists(&addr, &redis_key(&key(1), &other)).await);
}

// ---------------------------------------------------------------------------------------
// Configuration, errors, outages

#[tokio::test]
async fn sentinel_is_not_supported_and_bad_options_are_invalid() {
    let sentinel = RedisOnlineStoreConfig {
        redis_type: RedisType::RedisSentinel,
        ..config("127.0.0.1:26379")
    };
    let err = RedisOnlineStore::connect(&sentinel, 3).await.err().unwrap();
    assert!(
        matches!(&err, OnlineStoreError::Invalid(m) if m.contains("redis_sentinel is not supported")),
        "{err:?}"
    );
    let err = RedisOnlineStore::connect(&config("127.0.0.1:1,socket_timeout=soon"), 3)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OnlineStoreError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_named() {
    let port = free_port();
    // Connecting is lazy: the store opens, and each call says where Redis was expected.
    let store = RedisOnlineStore::connect(&config(&format!("127.0.0.1:{port},db=0")), 3)
        .await
        .unwrap();
    let table = driver_view("p", "stats");
    // Reading no entities needs no connection.
    assert_eq!(
        store
            .online_read(&table, &[], &names(&["conv_rate"]))
            .await
            .unwrap(),
        vec![]
    );
    let err = store
        .online_read(&table, &[key(1)], &names(&["conv_rate"]))
        .await
        .unwrap_err();
    match err {
        OnlineStoreError::Unavailable(m) => {
            assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}")
        }
        e => panic!("{e:?}"),
    }
    let err = store
        .online_write_batch(
            &table,
            &[row(key(1), ts(1, 0), &[("conv_rate", Val::FloatVal(1.0))])],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, OnlineStoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn reconnects_by_itself_when_redis_comes_back() {
    let Some((mut server, store)) = private_store().await else {
        return;
    };
    let table = driver_view("outage", "stats");
    let f = names(&["conv_rate"]);
    let write = |x: f32| [row(key(1), ts(1, 0), &[("conv_rate", Val::FloatVal(x))])];
    assert_eq!(
        store.online_write_batch(&table, &write(1.0)).await.unwrap(),
        1
    );
    assert!(store.online_read(&table, &[key(1)], &f).await.unwrap()[0].is_some());

    server.kill();
    let err = store.online_read(&table, &[key(1)], &f).await.unwrap_err();
    match err {
        OnlineStoreError::Unavailable(m) => assert!(m.contains(&server.address()), "{m}"),
        e => panic!("{e:?}"),
    }
    // Still down: still unavailable, quickly.
    let started = Instant::now();
    assert!(matches!(
        store.online_read(&table, &[key(1)], &f).await,
        Err(OnlineStoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));

    server.spawn();
    // The server kept nothing: the entity is gone, but the read succeeds within ~1 s.
    let deadline = Instant::now() + Duration::from_secs(1);
    let got = loop {
        match store.online_read(&table, &[key(1)], &f).await {
            Ok(rows) => break rows,
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery within 1 s: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(got, vec![None]);
    assert_eq!(
        store.online_write_batch(&table, &write(2.0)).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_restart_between_requests_does_not_fail_the_next_read() {
    let Some((mut server, store)) = private_store().await else {
        return;
    };
    let table = driver_view("restart", "stats");
    let f = names(&["conv_rate"]);
    let write = [row(key(1), ts(1, 0), &[("conv_rate", Val::FloatVal(1.0))])];
    store.online_write_batch(&table, &write).await.unwrap();
    // Several concurrent reads leave several idle connections behind.
    let keys = [key(1)];
    let reads = (0..4).map(|_| store.online_read(&table, &keys, &f));
    for got in futures::future::join_all(reads).await {
        assert!(got.unwrap()[0].is_some());
    }
    server.kill();
    server.spawn();
    // The idle connections all went stale; the read is retried on a fresh one.
    assert_eq!(
        store.online_read(&table, &[key(1)], &f).await.unwrap(),
        vec![None]
    );
}

#[tokio::test]
async fn authenticates_and_selects_the_configured_db() {
    let port = free_port();
    let Some(server) = PrivateRedis::start(
        port,
        &[
            "--requirepass",
            "s3cret",
            "--user",
            "reader",
            "on",
            ">pw",
            "~*",
            "+@all",
        ],
    ) else {
        return;
    };
    let address = server.address();
    let table = driver_view("auth", "stats");
    let f = names(&["conv_rate"]);
    for options in ["db=3,password=s3cret", "db=3,username=reader,password=pw"] {
        let store = RedisOnlineStore::connect(&config(&format!("{address},{options}")), 3)
            .await
            .unwrap();
        let x = if options.contains("reader") { 2.0 } else { 1.0 };
        store
            .online_write_batch(
                &table,
                &[row(
                    key(1),
                    ts(x as i64, 0),
                    &[("conv_rate", Val::FloatVal(x))],
                )],
            )
            .await
            .unwrap();
        let got = store.online_read(&table, &[key(1)], &f).await.unwrap();
        assert_eq!(
            got[0].as_ref().unwrap().values,
            vec![Some(v(Val::FloatVal(x)))]
        );
    }
    // The hash is in db 3, not in db 0 (`exists` takes the URL's authority and path).
    let k = redis_key(&key(1), "auth");
    assert!(exists(&format!(":s3cret@{address}/3"), &k).await);
    assert!(!exists(&format!(":s3cret@{address}/0"), &k).await);

    // A wrong password: unavailable, with Redis's reason.
    let store = RedisOnlineStore::connect(&config(&format!("{address},password=nope")), 3)
        .await
        .unwrap();
    match store.online_read(&table, &[key(1)], &f).await.unwrap_err() {
        OnlineStoreError::Unavailable(m) => {
            assert!(m.contains(&address) && m.contains("WRONGPASS"), "{m}")
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn concurrent_reads_each_get_their_own_rows() {
    let Some((store, project, table)) = numbered_rows("concurrent", 200).await else {
        return;
    };
    // Many readers at once, sharing a few connections: their pipelines go out together.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (store, table) = (store.clone(), table.clone());
        tasks.spawn(async move {
            let keys = [key(i), key(1000 + i)];
            let got = store
                .online_read(&table, &keys, &names(&["conv_rate", "acc_rate"]))
                .await
                .unwrap();
            (i, got)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, got) = done.unwrap();
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.values, vec![Some(v(Val::Int64Val(i))), None]);
        assert_eq!(got[1], None);
    }
    store.teardown(&project, &[table]).await.unwrap();
}

#[tokio::test]
async fn the_factory_opens_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = |online: &str| {
        RepoConfig::from_yaml_str(
            &format!(
                "project: p\nregistry: data/registry.db\nprovider: local\n{online}\n\
                 entity_key_serialization_version: 3\n"
            ),
            "feature_store.yaml",
            dir.path(),
        )
        .unwrap()
    };
    let sqlite = yaml("online_store:\n  type: sqlite\n  path: data/online.db");
    let store = open_online_store(&sqlite).await.unwrap();
    store
        .update("p", &[TableRef::new("p", "v")], &[])
        .await
        .unwrap();
    assert!(dir.path().join("data/online.db").exists());

    let remote = yaml("online_store:\n  type: remote\n  path: http://127.0.0.1:1");
    let err = open_online_store(&remote).await.err().unwrap();
    assert!(
        matches!(&err, OnlineStoreError::Invalid(m) if m.contains("`remote` is not supported")),
        "{err:?}"
    );

    let redis = yaml(&format!(
        "online_store:\n  type: redis\n  connection_string: \"{}\"",
        shared_address()
    ));
    let Some(_) = shared_store(RedisOnlineStoreConfig::default()).await else {
        return;
    };
    let store = open_online_store(&redis).await.unwrap();
    let table = driver_view(&unique_project("factory"), "stats");
    assert_eq!(
        store.online_read(&table, &[key(1)], &[]).await.unwrap(),
        vec![None]
    );
}

// ---------------------------------------------------------------------------------------
// Redis Cluster

/// Three primaries on free ports, slots assigned by `redis-cli --cluster create`.
struct TestCluster {
    nodes: Vec<PrivateRedis>,
}

impl TestCluster {
    fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            nodes.push(PrivateRedis::start(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(n.address());
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every node must agree before clients can use it.
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not converge");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(TestCluster { nodes })
    }

    fn connection_string(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateRedis::address)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[tokio::test]
async fn works_on_a_redis_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let cfg = RedisOnlineStoreConfig {
        redis_type: RedisType::RedisCluster,
        ..config(&cluster.connection_string())
    };
    let store = RedisOnlineStore::connect(&cfg, 3).await.unwrap();
    let project = "clustered";
    let a = TableRef::new(project, "view_a").with_schema(["driver_id"], ["x"]);
    let b = TableRef::new(project, "view_b").with_schema(["driver_id"], ["y"]);
    // Enough entities to land on every node.
    let ids: Vec<i64> = (0..200).collect();
    let rows_a: Vec<WriteRow> = ids
        .iter()
        .map(|&id| row(key(id), ts(100, 1), &[("x", Val::Int64Val(id))]))
        .collect();
    assert_eq!(store.online_write_batch(&a, &rows_a).await.unwrap(), 200);
    // The dedup read works across slots too.
    assert_eq!(store.online_write_batch(&a, &rows_a).await.unwrap(), 0);
    let rows_b: Vec<WriteRow> = ids
        .iter()
        .filter(|id| *id % 2 == 0)
        .map(|&id| row(key(id), ts(200, 0), &[("y", Val::Int64Val(-id))]))
        .collect();
    assert_eq!(store.online_write_batch(&b, &rows_b).await.unwrap(), 100);

    // Keys really are spread over the nodes.
    let mut per_node = Vec::new();
    for n in &cluster.nodes {
        let mut c = raw(&n.address()).await;
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        per_node.push(size);
    }
    assert!(per_node.iter().all(|&s| s > 0), "{per_node:?}");
    assert_eq!(per_node.iter().sum::<i64>(), 200);

    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| key(id)).chain([key(999)]).collect();
    let (fa, fb) = (names(&["x"]), names(&["y"]));
    let many = store
        .online_read_many(&[
            ReadSpec {
                table: &a,
                entity_keys: &keys,
                features: &fa,
                entity_fields: None,
            },
            ReadSpec {
                table: &b,
                entity_keys: &keys,
                features: &fb,
                entity_fields: None,
            },
        ])
        .await
        .unwrap();
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            many[0][i],
            Some(FeatureRow {
                event_ts: ts(100, 1),
                values: vec![Some(v(Val::Int64Val(id)))]
            })
        );
        assert_eq!(
            many[1][i],
            (id % 2 == 0).then(|| FeatureRow {
                event_ts: ts(200, 0),
                values: vec![Some(v(Val::Int64Val(-id)))]
            })
        );
    }
    assert_eq!(many[0][200], None);

    // update scans every primary: view_a goes, whole hashes for odd ids.
    store
        .update(project, std::slice::from_ref(&b), std::slice::from_ref(&a))
        .await
        .unwrap();
    let after = store.online_read(&a, &keys, &fa).await.unwrap();
    assert!(after.iter().all(Option::is_none));
    let mut total = 0;
    for n in &cluster.nodes {
        let mut c = raw(&n.address()).await;
        total += redis::cmd("DBSIZE")
            .query_async::<i64>(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(total, 100);
    assert!(store.online_read(&b, &keys, &fb).await.unwrap()[0].is_some());

    store.teardown(project, &[b]).await.unwrap();
    let mut total = 0;
    for n in &cluster.nodes {
        let mut c = raw(&n.address()).await;
        total += redis::cmd("DBSIZE")
            .query_async::<i64>(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(total, 0);
}
