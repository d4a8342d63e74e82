//! Feast's Redis online store (`online_store.type: redis`), on Feast's very layout
//! (PROTOCOLS.md §6.2, Feast 0.67 `infra/online_stores/redis.py` and `helpers.py`).
//!
//! Layout, shared with Feast:
//! - one Redis HASH per (entity key, project), keyed by the serialized entity key followed by
//!   the project name in UTF-8, shared by every feature view with the same join keys;
//! - per feature, the field is the 4-byte little-endian MurmurHash3 x86_32 (seed 0) of
//!   `"{view}:{feature}"` and the value a serialized `feast.types.Value`;
//! - per view, the field `_ts:{view}` holds the event time as a serialized
//!   `google.protobuf.Timestamp` (the created timestamp is not stored);
//! - a write is `HSET key _ts:{view} ts f1 v1 ...` (that field order), followed by
//!   `EXPIRE key key_ttl_seconds` when set (it applies to the whole hash, so to every view in
//!   it). Unless `skip_dedup`, the batch's `_ts:{view}` fields are read first and a row is
//!   skipped when its event time is not *newer*, at nanosecond precision, than the stored one
//!   or an earlier row of the batch for the same key (equal times are skipped too, as Feast);
//! - a batch of many rows creates missing hashes whole, with `RESTORE key ttl payload` (no
//!   `REPLACE`) of exactly the hash `HSET` would build (see `hash_dump`): a hash that did not
//!   exist has nothing to be newer than, and one that exists (`BUSYKEY`, another view's
//!   fields or an earlier write) takes the `HSET` path above. A new key costs Redis less
//!   than half of `HMGET` + `HSET`. Whether a batch tries `RESTORE` before the read, after
//!   it for the keys read as missing, or not at all, each view learns from its earlier
//!   batches ([`RestoreState`]);
//! - reads are one `HMGET key f1 ... _ts:{view}` per entity, all in one pipeline (here one
//!   per entity hash for all the views read from it, and `HGETALL` when a read wants most of
//!   the hash: [`WHOLE_HASH_MIN_FIELDS`]).
//!
//! Differences from Feast, on purpose:
//! - an entity with neither `_ts:{view}` nor any requested field is NOT_FOUND (`None`).
//!   Feast's Python store returns empty values with the epoch as timestamp there (its Go
//!   server says "not found", as feast-rs). A feature missing from a hash that has the view's
//!   timestamp is `None` (NOT_FOUND), where Python Feast returns an empty `Value`;
//! - deleting a view's data ([`OnlineStore::update`]) and [`OnlineStore::teardown`] `SCAN`
//!   with Feast's pattern `prefix(join keys) + "*" + project`, but with the glob
//!   metacharacters of the prefix and the project escaped (a join key 42 bytes long puts a
//!   `*` in the prefix), and only touch keys that really are `prefix ‖ values ‖ project` (the
//!   pattern alone also matches a project whose name ends with this one's). The prefix uses
//!   the configured `entity_key_serialization_version` (Feast's always uses version 3).
//!
//! Deployments: `redis_type: redis` (the first host of the connection string) and
//! `redis_cluster` (every host is a startup node). `redis_sentinel` is not supported.
//! Connection-string options used: `db` (not in cluster mode), `password`, `username`,
//! `ssl`, `ssl_cert_reqs=none` (skip certificate verification), `socket_timeout` and
//! `socket_connect_timeout` (seconds); others are ignored.
//!
//! Connections recover by themselves: a single server is reached through a
//! [`ConnectionManager`], which reconnects when a command fails on a broken connection (a
//! pipeline that failed because the connection had dropped is sent once more; all of them
//! may run twice); the cluster client reconnects to its nodes and refreshes its slot map
//! likewise. The serving reads of a single server without TLS go over the store's own
//! shared connections instead (`resp`), which skip the `redis` crate's reply tree and write
//! the pipelines of concurrent requests together. In a cluster a pipeline must stay
//! within one hash slot, so commands are grouped per slot into pipelines sent concurrently.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use feast_core::config::{RedisOnlineStoreConfig, RedisType};
use feast_proto::types::Value;
use prost::Message;
use prost_types::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};

use super::hash_dump::listpack_hash_payload;
use super::murmur3::murmur3_x86_32;
use super::resp::{self, RespConfig, RespError, RespPool};
use super::{FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow};

/// Connections the serving reads share (see `resp`).
const READ_LANES: usize = 2;

/// An entity's hash is read whole (`HGETALL`) rather than picked (`HMGET`) when the registry
/// says it holds at most [`LISTPACK_FIELDS`] fields and a request wants at least this many of
/// them and at least a third. Redis keeps such a hash as one flat list (a listpack) and
/// `HMGET` scans it once per field asked, so its cost grows with fields wanted × fields held,
/// while `HGETALL`'s grows with fields held only: on a 122-field hash, Redis spent 35 µs on
/// 60 fields picked and 9.3 µs on the whole hash, 16.5 µs against 9.2 µs for 30 fields,
/// 7.4 µs against 9.3 µs for 16 (`bench/redis_hash_cost.py`, BENCHMARKS.md). Where the hash
/// is a hash table after all (a server configured with a lower `hash-max-listpack-entries`,
/// or a value over `hash-max-listpack-value`), wanting a third of it bounds the whole read to
/// about 3× the picked one's cost and fields sent.
const WHOLE_HASH_MIN_FIELDS: usize = 20;
/// Redis's default `hash-max-listpack-entries`: hashes up to this size are listpacks.
const LISTPACK_FIELDS: usize = 128;

/// Writes of fewer rows (a push, say) go straight to `HSET`: creating their hashes with
/// `RESTORE` saves little, and costs a round trip where the keys exist.
const RESTORE_MIN_ROWS: usize = 32;
/// When `RESTORE` did not pay for a batch (its keys held other views' fields, or most rows
/// could not be offered), the view's next batches this many write with `HSET` alone.
const RESTORE_SKIP_BATCHES: u32 = 16;
/// Error replies to `RESTORE` that say nothing about `RESTORE` itself (the server is loading,
/// out of memory, read-only, ...): the rows go the `HSET` way, which meets the same error.
const TRANSIENT_ERRORS: &[&str] = &[
    "LOADING",
    "OOM",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "BUSY",
    "NOREPLICAS",
    "MISCONF",
];

/// Keys per `SCAN` step (its `COUNT` hint).
const SCAN_COUNT: usize = 1000;

/// The hash field of a feature: the 4 little-endian bytes of `murmur3("{view}:{feature}")`.
/// Computed for every feature of every read, so the name is put together on the stack when
/// it fits (no `format!` machinery, no allocation).
pub fn feature_field(view: &str, feature: &str) -> [u8; 4] {
    let (view, feature) = (view.as_bytes(), feature.as_bytes());
    let len = view.len() + 1 + feature.len();
    let mut stack = [0u8; 128];
    let mut heap = Vec::new();
    let name: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    name[..view.len()].copy_from_slice(view);
    name[view.len()] = b':';
    name[view.len() + 1..].copy_from_slice(feature);
    murmur3_x86_32(name, 0).to_le_bytes()
}

/// A write batch and the scratch space its commands are built in.
struct WriteBatch<'a> {
    table: &'a TableRef,
    rows: Vec<&'a WriteRow>,
    /// The Redis key of each row.
    keys: Vec<Vec<u8>>,
    ts_key: Vec<u8>,
    fields: FieldTable,
    /// Per row, whether its key occurs in no other row (worked out when a first row is
    /// offered to `RESTORE`).
    unique: Option<Vec<bool>>,
    payload: Vec<u8>,
    values: Vec<u8>,
    ends: Vec<usize>,
}

/// The hash fields of a write batch's features, computed once per batch (the rows of one
/// view carry the same few features), each with a number shared by every feature name whose
/// field has the same bytes (a murmur3 collision).
#[derive(Default)]
struct FieldTable {
    by_name: HashMap<String, usize>,
    fields: Vec<[u8; 4]>,
    /// Per field number, the last row (1-based) that used it: a row naming one field twice
    /// (a repeated feature or two colliding names) is left to `HSET`, which keeps the last.
    seen_in_row: Vec<u64>,
    row: u64,
}

impl FieldTable {
    fn number(&mut self, view: &str, feature: &str) -> usize {
        if let Some(&n) = self.by_name.get(feature) {
            return n;
        }
        let field = feature_field(view, feature);
        let n = match self.fields.iter().position(|f| *f == field) {
            Some(n) => n,
            None => {
                self.fields.push(field);
                self.seen_in_row.push(0);
                self.fields.len() - 1
            }
        };
        self.by_name.insert(feature.to_string(), n);
        n
    }

    fn field(&mut self, view: &str, feature: &str) -> [u8; 4] {
        let n = self.number(view, feature);
        self.fields[n]
    }

    /// The field of a feature [`Self::encode_row`] has seen.
    fn get(&self, feature: &str) -> &[u8; 4] {
        &self.fields[self.by_name[feature]]
    }

    /// Encodes `row`'s values one after another into `values` (`ends[i]` where the i-th
    /// stops); false when two of its features share a field, or one shares `_ts:{view}`'s.
    fn encode_row(
        &mut self,
        view: &str,
        row: &WriteRow,
        ts_key: &[u8],
        values: &mut Vec<u8>,
        ends: &mut Vec<usize>,
    ) -> bool {
        self.row += 1;
        values.clear();
        ends.clear();
        for (feature, value) in &row.features {
            let n = self.number(view, feature);
            if self.seen_in_row[n] == self.row || self.fields[n][..] == *ts_key {
                return false;
            }
            self.seen_in_row[n] = self.row;
            value
                .encode(values)
                .expect("a Vec grows to fit the encoding");
            ends.push(values.len());
        }
        true
    }
}

/// The hash field holding a view's event timestamp: `_ts:{view}`.
pub fn ts_field(view: &str) -> Vec<u8> {
    [b"_ts:", view.as_bytes()].concat()
}

/// The Redis key of an entity: its serialized key followed by the project's UTF-8.
pub fn redis_key(serialized_entity_key: &[u8], project: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(serialized_entity_key.len() + project.len());
    key.extend_from_slice(serialized_entity_key);
    key.extend_from_slice(project.as_bytes());
    key
}

/// Escapes Redis glob metacharacters (`* ? [ ] \`) so the bytes match only themselves.
fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// True when `key` is `prefix ‖ n_values × (u32 type ‖ u32 len ‖ bytes) ‖ project`: an entity
/// key with exactly the prefix's join keys, of this very project.
fn key_is_of(key: &[u8], prefix: &[u8], n_values: usize, project: &[u8]) -> bool {
    let Some(mut rest) = key.strip_prefix(prefix) else {
        return false;
    };
    for _ in 0..n_values {
        if rest.len() < 8 {
            return false;
        }
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        rest = &rest[8..];
        if rest.len() < len {
            return false;
        }
        rest = &rest[len..];
    }
    rest == project
}

/// The serialized timestamp Feast stores (`Timestamp.FromDatetime`): normalized, zero
/// fields omitted.
fn encode_ts(ts: &Timestamp) -> Vec<u8> {
    let mut ts = *ts;
    ts.normalize();
    ts.encode_to_vec()
}

fn total_nanos(ts: &Timestamp) -> i128 {
    i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)
}

/// The stored event time of an `HMGET key _ts:{view}` reply, in nanoseconds (None when the
/// field is missing).
fn stored_ts(reply: redis::Value, view: &str) -> Result<Option<i128>, OnlineStoreError> {
    let field = match reply {
        redis::Value::Array(mut fields) if fields.len() == 1 => fields.pop(),
        other => {
            return Err(OnlineStoreError::Invalid(format!(
                "Redis: unexpected HMGET reply: {other:?}"
            )));
        }
    };
    match field {
        None | Some(redis::Value::Nil) => Ok(None),
        Some(redis::Value::BulkString(bytes)) => Timestamp::decode(bytes.as_slice())
            .map(|t| Some(total_nanos(&t)))
            .map_err(|e| {
                OnlineStoreError::Invalid(format!(
                    "Redis field _ts:{view} is not a google.protobuf.Timestamp: {e}"
                ))
            }),
        Some(other) => Err(OnlineStoreError::Invalid(format!(
            "Redis: unexpected HMGET reply field: {other:?}"
        ))),
    }
}

/// Connection settings of a [`RedisOnlineStore`] beyond `feature_store.yaml`.
#[derive(Debug, Clone)]
pub struct RedisOnlineStoreOptions {
    /// How long connecting may take (the connection string's `socket_connect_timeout`
    /// overrides it).
    pub connection_timeout: Duration,
    /// How long one command or pipeline may wait for its answer (`socket_timeout`
    /// overrides it).
    pub response_timeout: Duration,
}

impl Default for RedisOnlineStoreOptions {
    fn default() -> Self {
        RedisOnlineStoreOptions {
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Feast's Redis online store. See the module documentation for the layout.
pub struct RedisOnlineStore {
    conn: Conn,
    /// The serving reads' own connections, on a single server without TLS (see `resp`).
    reads: Option<RespPool>,
    /// `host:port[,...]`, for error messages.
    address: String,
    key_ttl_seconds: Option<i64>,
    skip_dedup: bool,
    full_scan_for_deletion: bool,
    entity_key_serialization_version: u32,
    restore: RestoreState,
}

/// How one batch of a view is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WritePlan {
    /// `RESTORE` first for every key that occurs once; the keys that exist (and the rest)
    /// then take Feast's path.
    RestoreFirst,
    /// Feast's path: the dedup read, then `HSET`; with `restore_missing`, the keys the read
    /// found without this view's timestamp are created with `RESTORE` instead (those that
    /// turn out to exist, holding other views' fields, get `HSET`).
    ReadFirst { restore_missing: bool },
}

/// What the last batches of a view found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ViewHistory {
    /// A batch is finding out, `RESTORE` first, whether the view's keys are new; batches
    /// started meanwhile read first.
    Probing(Instant),
    /// Most keys were new: `RESTORE` first.
    KeysNew,
    /// Most keys existed: read first, and create the missing ones with `RESTORE`.
    KeysExist,
    /// `RESTORE` did not pay (even keys without this view's timestamp existed, holding
    /// other views' fields, or most rows could not be sent as a listpack): `HSET` alone for
    /// this many more batches.
    HsetFor(u32),
}

/// Which [`WritePlan`] a view's batches take, learnt from the batches before: a first
/// materialization creates its keys with `RESTORE` alone, a re-run (keys exist) reads first
/// and pays nothing for `RESTORE`, and a view whose entities' hashes hold another view's
/// fields writes with `HSET`, trying again now and then.
#[derive(Default)]
struct RestoreState {
    /// Set for good when the server refuses a payload: a Redis older than 7.0, a user not
    /// allowed `RESTORE`, ...
    refused: AtomicBool,
    /// Per view; none means nothing is known yet.
    views: Mutex<HashMap<String, ViewHistory>>,
}

/// A probe that never reported (its write failed) is given up after this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl RestoreState {
    fn plan(&self, view: &str, rows: usize) -> WritePlan {
        const READ_FIRST: WritePlan = WritePlan::ReadFirst {
            restore_missing: true,
        };
        if rows < RESTORE_MIN_ROWS || self.refused.load(Ordering::Relaxed) {
            return WritePlan::ReadFirst {
                restore_missing: false,
            };
        }
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        match views.get_mut(view) {
            Some(ViewHistory::KeysNew) => WritePlan::RestoreFirst,
            Some(ViewHistory::KeysExist) => READ_FIRST,
            Some(ViewHistory::Probing(since)) if since.elapsed() < PROBE_TIMEOUT => READ_FIRST,
            Some(ViewHistory::HsetFor(left)) => {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    views.insert(view.to_string(), ViewHistory::KeysExist);
                }
                WritePlan::ReadFirst {
                    restore_missing: false,
                }
            }
            None | Some(ViewHistory::Probing(_)) => {
                views.insert(view.to_string(), ViewHistory::Probing(Instant::now()));
                WritePlan::RestoreFirst
            }
        }
    }

    /// Records what a batch of `rows` written by `plan` found: `tried` keys offered to
    /// `RESTORE`, of which `busy` existed.
    fn record(&self, view: &str, plan: WritePlan, rows: usize, tried: usize, busy: usize) {
        let learnt = match plan {
            WritePlan::RestoreFirst if tried * 2 < rows => {
                ViewHistory::HsetFor(RESTORE_SKIP_BATCHES)
            }
            WritePlan::RestoreFirst if busy * 2 > tried => ViewHistory::KeysExist,
            WritePlan::RestoreFirst => ViewHistory::KeysNew,
            WritePlan::ReadFirst {
                restore_missing: true,
            } if busy * 2 > tried => ViewHistory::HsetFor(RESTORE_SKIP_BATCHES),
            WritePlan::ReadFirst {
                restore_missing: true,
            } if (tried - busy) * 2 > rows => ViewHistory::KeysNew,
            _ => return,
        };
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.insert(view.to_string(), learnt);
    }
}

/// Seconds (a JSON number or numeric string) as a duration.
fn seconds_option(
    options: &std::collections::BTreeMap<String, serde_json::Value>,
    name: &str,
) -> Result<Option<Duration>, OnlineStoreError> {
    let Some(v) = options.get(name) else {
        return Ok(None);
    };
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        serde_json::Value::Null => return Ok(None),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(OnlineStoreError::Invalid(format!(
            "Redis connection string option {name}={v} is not a positive number of seconds"
        ))),
    }
}

impl RedisOnlineStore {
    /// Connects as `config` says. `entity_key_serialization_version` is the repository's
    /// (it shapes the key prefix [`OnlineStore::update`] and [`OnlineStore::teardown`] scan
    /// for).
    pub async fn connect(
        config: &RedisOnlineStoreConfig,
        entity_key_serialization_version: u32,
    ) -> Result<Self, OnlineStoreError> {
        Self::connect_with(
            config,
            entity_key_serialization_version,
            RedisOnlineStoreOptions::default(),
        )
        .await
    }

    pub async fn connect_with(
        config: &RedisOnlineStoreConfig,
        entity_key_serialization_version: u32,
        options: RedisOnlineStoreOptions,
    ) -> Result<Self, OnlineStoreError> {
        let cs = config.parsed_connection_string().map_err(|e| {
            OnlineStoreError::Invalid(format!("online_store.connection_string: {e}"))
        })?;
        let connection_timeout = seconds_option(&cs.options, "socket_connect_timeout")?
            .unwrap_or(options.connection_timeout);
        let response_timeout =
            seconds_option(&cs.options, "socket_timeout")?.unwrap_or(options.response_timeout);
        let insecure = cs
            .options
            .get("ssl_cert_reqs")
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let addr = |host: &str, port: u16| {
            if cs.ssl {
                ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.to_owned(), port)
            }
        };
        let address = cs
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port.unwrap_or(6379)))
            .collect::<Vec<_>>()
            .join(",");
        let unavailable =
            |e: RedisError| OnlineStoreError::Unavailable(format!("Redis at {address}: {e}"));
        let mut reads = None;
        let conn = match config.redis_type {
            RedisType::RedisSentinel => {
                return Err(OnlineStoreError::Invalid(
                    "online_store redis_type: redis_sentinel is not supported by feast-rs; \
                     use redis or redis_cluster"
                        .into(),
                ));
            }
            RedisType::Redis => {
                let node = &cs.nodes[0];
                let info = addr(&node.host, node.port.unwrap_or(6379))
                    .into_connection_info()
                    .map_err(unavailable)?;
                let mut redis_info = info.redis_settings().clone();
                if let Some(db) = cs.db {
                    redis_info = redis_info.set_db(db);
                }
                if let Some(user) = &cs.username {
                    redis_info = redis_info.set_username(user);
                }
                if let Some(password) = &cs.password {
                    redis_info = redis_info.set_password(password);
                }
                let info = info.set_redis_settings(redis_info);
                if !cs.ssl {
                    reads = Some(RespPool::new(RespConfig {
                        host: node.host.clone(),
                        port: node.port.unwrap_or(6379),
                        username: cs.username.clone(),
                        password: cs.password.clone(),
                        db: cs.db,
                        connect_timeout: connection_timeout,
                        response_timeout,
                        lanes: READ_LANES,
                    }));
                }
                let client = redis::Client::open(info)
                    .map_err(|e| OnlineStoreError::Invalid(format!("Redis at {address}: {e}")))?;
                // Reconnect quickly: a request arriving while the server is away fails at
                // once, and the first one after it is back gets a fresh connection.
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connection_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, manager_config)
                        .map_err(unavailable)?,
                )
            }
            RedisType::RedisCluster => {
                let nodes: Vec<ConnectionInfo> = cs
                    .nodes
                    .iter()
                    .map(|n| addr(&n.host, n.port.unwrap_or(6379)).into_connection_info())
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(connection_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
                if let Some(user) = &cs.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &cs.password {
                    builder = builder.password(password);
                }
                if cs.ssl {
                    builder = builder.tls(if insecure {
                        redis::TlsMode::Insecure
                    } else {
                        redis::TlsMode::Secure
                    });
                }
                let client = builder.build().map_err(|e| {
                    OnlineStoreError::Invalid(format!("Redis cluster at {address}: {e}"))
                })?;
                Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?)
            }
        };
        Ok(RedisOnlineStore {
            conn,
            reads,
            address,
            key_ttl_seconds: config.key_ttl_seconds,
            skip_dedup: config.skip_dedup,
            full_scan_for_deletion: config.full_scan_for_deletion.unwrap_or(false),
            entity_key_serialization_version,
            restore: RestoreState::default(),
        })
    }

    /// The configured `host:port` list.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn error(&self, e: RedisError) -> OnlineStoreError {
        use redis::ErrorKind;
        let msg = format!("Redis at {}: {e}", self.address);
        // A key that is not a hash (WRONGTYPE) or an unreadable reply is bad data; anything
        // else (I/O, timeouts, cluster down, loading, ...) may pass.
        let bad_data = matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
            || e.code() == Some("WRONGTYPE")
            || e.into_server_errors()
                .is_some_and(|errors| errors.iter().any(|(_, se)| se.code() == "WRONGTYPE"));
        if bad_data {
            OnlineStoreError::Invalid(msg)
        } else {
            OnlineStoreError::Unavailable(msg)
        }
    }

    /// An error reply of the server (as [`Self::error`] classifies the `redis` crate's).
    fn error_reply(&self, text: &str) -> OnlineStoreError {
        let msg = format!("Redis at {}: {text}", self.address);
        if text.starts_with("WRONGTYPE") {
            OnlineStoreError::Invalid(msg)
        } else {
            OnlineStoreError::Unavailable(msg)
        }
    }

    /// A failed pipeline of the serving reads' own connections.
    fn resp_error(&self, e: RespError) -> OnlineStoreError {
        let msg = format!("Redis at {}: {e}", self.address);
        match e {
            RespError::Io(_) | RespError::Timeout(_) | RespError::Handshake(_) => {
                OnlineStoreError::Unavailable(msg)
            }
            RespError::Protocol(_) => OnlineStoreError::Invalid(msg),
        }
    }

    /// The key [`Self::run`] routes a command by: the key itself on a cluster, nothing (no
    /// copy) on a single server, where every command goes down one pipeline.
    fn routing_key(&self, key: &[u8]) -> Vec<u8> {
        match self.conn {
            Conn::Single(_) => Vec::new(),
            Conn::Cluster(_) => key.to_vec(),
        }
    }

    /// Runs `cmds` (each with the key it addresses) as one pipeline on a single server, or one
    /// pipeline per hash slot, sent concurrently, on a cluster; the replies come back in
    /// `cmds` order.
    async fn run(&self, cmds: Vec<(Vec<u8>, Cmd)>) -> Result<Vec<redis::Value>, OnlineStoreError> {
        self.run_pipelines(cmds, false).await
    }

    /// [`Self::run`], but an error reply is the reply of its command
    /// ([`redis::Value::ServerError`]) rather than the failure of the whole call.
    async fn run_each(
        &self,
        cmds: Vec<(Vec<u8>, Cmd)>,
    ) -> Result<Vec<redis::Value>, OnlineStoreError> {
        self.run_pipelines(cmds, true).await
    }

    async fn run_pipelines(
        &self,
        cmds: Vec<(Vec<u8>, Cmd)>,
        ignore_errors: bool,
    ) -> Result<Vec<redis::Value>, OnlineStoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let new_pipe = || {
            let mut pipe = redis::pipe();
            if ignore_errors {
                pipe.ignore_errors();
            }
            pipe
        };
        match &self.conn {
            Conn::Single(conn) => {
                let mut pipe = new_pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = conn.clone();
                match pipe.query_async(&mut conn).await {
                    // The connection broke while it sat idle (Redis restarted, say): the
                    // manager reconnects, and every pipeline sent here may run twice (reads,
                    // newer-wins writes, deletes), so it is sent once more.
                    Err(e) if e.is_connection_dropped() => pipe.query_async(&mut conn).await,
                    done => done,
                }
                .map_err(|e| self.error(e))
            }
            Conn::Cluster(conn) => {
                let n = cmds.len();
                let mut groups: HashMap<Slot, (Vec<usize>, redis::Pipeline)> = HashMap::new();
                for (i, (key, cmd)) in cmds.into_iter().enumerate() {
                    let (slots, pipe) = groups
                        .entry(Slot::for_key(&key))
                        .or_insert_with(|| (Vec::new(), new_pipe()));
                    slots.push(i);
                    pipe.add_command(cmd);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (_, (slots, pipe)) in groups {
                    let mut conn = conn.clone();
                    tasks.spawn(async move {
                        let replies: Result<Vec<redis::Value>, RedisError> =
                            pipe.query_async(&mut conn).await;
                        (slots, replies)
                    });
                }
                let mut out: Vec<redis::Value> = vec![redis::Value::Nil; n];
                while let Some(done) = tasks.join_next().await {
                    let (slots, replies) = done.map_err(|e| {
                        OnlineStoreError::Unavailable(format!("Redis cluster pipeline task: {e}"))
                    })?;
                    for (slot, reply) in slots.into_iter().zip(replies.map_err(|e| self.error(e))?)
                    {
                        out[slot] = reply;
                    }
                }
                Ok(out)
            }
        }
    }

    /// The `RESTORE` TTL (milliseconds, 0 for none) of `key_ttl_seconds`, or None when it
    /// is negative: Feast's `EXPIRE` then deletes the hash, left to that path.
    fn restore_ttl_ms(&self) -> Option<i64> {
        match self.key_ttl_seconds {
            None | Some(0) => Some(0),
            Some(t) if t > 0 => Some(t.saturating_mul(1000)),
            Some(_) => None,
        }
    }

    /// `RESTORE key ttl payload` creating row `i`'s hash, when its key occurs once in the
    /// batch and the hash is one `HSET` would keep as a listpack.
    fn restore_cmd(&self, batch: &mut WriteBatch<'_>, i: usize) -> Option<Cmd> {
        let keys = &batch.keys;
        let unique = batch.unique.get_or_insert_with(|| {
            let mut occurrences: HashMap<&[u8], u32> = HashMap::with_capacity(keys.len());
            for key in keys {
                *occurrences.entry(key).or_default() += 1;
            }
            keys.iter()
                .map(|k| occurrences[k.as_slice()] == 1)
                .collect()
        });
        let (row, key) = (batch.rows[i], &batch.keys[i]);
        if !unique[i]
            || !batch.fields.encode_row(
                &batch.table.view,
                row,
                &batch.ts_key,
                &mut batch.values,
                &mut batch.ends,
            )
        {
            return None;
        }
        let ts = encode_ts(&row.event_ts);
        let (fields, values) = (&batch.fields, &batch.values);
        let pairs = std::iter::once((&batch.ts_key[..], &ts[..])).chain(
            row.features
                .iter()
                .zip(&batch.ends)
                .scan(0, |start, ((feature, _), &end)| {
                    let value = &values[*start..end];
                    *start = end;
                    Some((&fields.get(feature)[..], value))
                }),
        );
        listpack_hash_payload(pairs, &mut batch.payload)?;
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(key)
            .arg(self.restore_ttl_ms().unwrap_or(0))
            .arg(&batch.payload[..]);
        Some(cmd)
    }

    /// [`WritePlan::RestoreFirst`]'s first pipeline: a `RESTORE` for every row
    /// [`Self::restore_cmd`] can offer. Returns how many hashes it created and the rows left
    /// for [`Self::read_then_write`] (not offered, or their key existed), in batch order.
    async fn restore_first(
        &self,
        batch: &mut WriteBatch<'_>,
    ) -> Result<(usize, Vec<usize>), OnlineStoreError> {
        let (mut cmds, mut tried, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..batch.rows.len() {
            match self.restore_cmd(batch, i) {
                Some(cmd) => {
                    cmds.push((self.routing_key(&batch.keys[i]), cmd));
                    tried.push(i);
                }
                None => rest.push(i),
            }
        }
        let replies = self.run_each(cmds).await?;
        let (mut created, mut busy) = (0, 0);
        for (&i, reply) in tried.iter().zip(replies) {
            if self.restored(reply, &mut busy)? {
                created += 1;
            } else {
                rest.push(i);
            }
        }
        self.restore.record(
            &batch.table.view,
            WritePlan::RestoreFirst,
            batch.rows.len(),
            tried.len(),
            busy,
        );
        // Rows of one key are compared in batch order (a key offered to RESTORE occurs once).
        rest.sort_unstable();
        Ok((created, rest))
    }

    /// Whether a `RESTORE` created its hash; `busy` counts the keys that existed. A
    /// refusal of `RESTORE` itself turns it off for this store.
    fn restored(&self, reply: redis::Value, busy: &mut usize) -> Result<bool, OnlineStoreError> {
        match reply {
            redis::Value::Okay => Ok(true),
            redis::Value::ServerError(e) => {
                if e.code() == "BUSYKEY" {
                    *busy += 1;
                } else if !TRANSIENT_ERRORS.contains(&e.code())
                    && !self.restore.refused.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        message = "Redis refused RESTORE; new hashes are written with HSET",
                        redis = %self.address,
                        error = %format!("{} {}", e.code(), e.details().unwrap_or("")),
                    );
                }
                Ok(false)
            }
            other => Err(OnlineStoreError::Invalid(format!(
                "Redis at {}: unexpected RESTORE reply: {other:?}",
                self.address
            ))),
        }
    }

    /// `HSET key _ts:{view} ts f1 v1 ...` of row `i` (+ `EXPIRE`), appended to `cmds`.
    fn push_hset(&self, batch: &mut WriteBatch<'_>, i: usize, cmds: &mut Vec<(Vec<u8>, Cmd)>) {
        let (row, key) = (batch.rows[i], &batch.keys[i]);
        let mut hset = redis::cmd("HSET");
        hset.arg(key)
            .arg(&batch.ts_key)
            .arg(encode_ts(&row.event_ts));
        for (feature, value) in &row.features {
            let field = batch.fields.field(&batch.table.view, feature);
            batch.values.clear();
            value
                .encode(&mut batch.values)
                .expect("a Vec grows to fit the encoding");
            hset.arg(&field[..]).arg(&batch.values[..]);
        }
        cmds.push((self.routing_key(key), hset));
        if let Some(ttl) = self.key_ttl_seconds.filter(|t| *t != 0) {
            cmds.push((
                self.routing_key(key),
                redis::cmd("EXPIRE").arg(key).arg(ttl).clone(),
            ));
        }
    }

    /// Feast's write of the rows `which` of the batch: the dedup read (unless
    /// `skip_dedup`), then one pipeline of `HSET` (+ `EXPIRE`), in which, when `plan` says
    /// `restore_missing`, the rows whose key the read found without this view's timestamp
    /// (and that occur once) are `RESTORE`s instead; those whose key existed after all get
    /// `HSET` in one more pipeline.
    async fn read_then_write(
        &self,
        batch: &mut WriteBatch<'_>,
        which: &[usize],
        plan: WritePlan,
    ) -> Result<usize, OnlineStoreError> {
        if which.is_empty() {
            return Ok(0);
        }
        let restore_missing = plan
            == WritePlan::ReadFirst {
                restore_missing: true,
            };
        let stored: Vec<Option<i128>> = if self.skip_dedup {
            vec![None; which.len()]
        } else {
            let replies = self
                .run(
                    which
                        .iter()
                        .map(|&i| {
                            let mut hmget = redis::cmd("HMGET");
                            hmget.arg(&batch.keys[i]).arg(&batch.ts_key);
                            (self.routing_key(&batch.keys[i]), hmget)
                        })
                        .collect(),
                )
                .await?;
            replies
                .into_iter()
                .map(|reply| stored_ts(reply, &batch.table.view))
                .collect::<Result<_, _>>()?
        };
        let mut to_write = Vec::with_capacity(which.len());
        let mut batch_latest: HashMap<&[u8], i128> = HashMap::new();
        for (&i, stored) in which.iter().zip(stored) {
            let key = batch.keys[i].as_slice();
            if !self.skip_dedup {
                let mut ts = batch.rows[i].event_ts;
                ts.normalize();
                let new = total_nanos(&ts);
                // Feast: 0 stands for "nothing stored", and equal times are skipped.
                let latest = stored
                    .unwrap_or(0)
                    .max(batch_latest.get(key).copied().unwrap_or(0));
                if latest != 0 && new <= latest {
                    continue;
                }
                batch_latest.insert(key, new);
            }
            to_write.push((i, stored.is_none() && !self.skip_dedup));
        }
        let mut cmds = Vec::with_capacity(to_write.len());
        // Per command, the row it restores (None: an HSET or EXPIRE).
        let mut restores: Vec<Option<usize>> = Vec::with_capacity(to_write.len());
        for &(i, missing) in &to_write {
            if restore_missing
                && missing
                && let Some(cmd) = self.restore_cmd(batch, i)
            {
                cmds.push((self.routing_key(&batch.keys[i]), cmd));
                restores.push(Some(i));
                continue;
            }
            let before = cmds.len();
            self.push_hset(batch, i, &mut cmds);
            restores.resize(restores.len() + cmds.len() - before, None);
        }
        if !restores.iter().any(Option::is_some) {
            self.run(cmds).await?;
            return Ok(to_write.len());
        }
        let replies = self.run_each(cmds).await?;
        let (mut tried, mut busy) = (0, 0);
        let mut again = Vec::new();
        for (restore, reply) in restores.into_iter().zip(replies) {
            match restore {
                Some(i) => {
                    tried += 1;
                    if !self.restored(reply, &mut busy)? {
                        again.push(i);
                    }
                }
                None => {
                    if let redis::Value::ServerError(e) = reply {
                        return Err(self.error_reply(&format!(
                            "{} {}",
                            e.code(),
                            e.details().unwrap_or("")
                        )));
                    }
                }
            }
        }
        self.restore
            .record(&batch.table.view, plan, batch.rows.len(), tried, busy);
        let mut cmds = Vec::with_capacity(again.len());
        for i in again {
            self.push_hset(batch, i, &mut cmds);
        }
        self.run(cmds).await?;
        Ok(to_write.len())
    }

    /// Every key matching `pattern`, on every primary of a cluster.
    async fn scan(&self, pattern: &[u8]) -> Result<Vec<Vec<u8>>, OnlineStoreError> {
        let scan_cmd = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            cmd
        };
        let mut keys = Vec::new();
        match &self.conn {
            Conn::Single(conn) => {
                let mut conn = conn.clone();
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = scan_cmd(cursor)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| self.error(e))?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(conn) => {
                let mut conn = conn.clone();
                for (host, port) in self.cluster_primaries(&mut conn).await? {
                    let mut cursor = 0u64;
                    loop {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let reply = conn
                            .route_command(scan_cmd(cursor), routing)
                            .await
                            .map_err(|e| self.error(e))?;
                        let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                            .map_err(|e| {
                                OnlineStoreError::Invalid(format!(
                                    "Redis at {host}:{port}: unexpected SCAN reply: {e}"
                                ))
                            })?;
                        keys.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// `host, port` of every healthy primary, from `CLUSTER NODES`.
    async fn cluster_primaries(
        &self,
        conn: &mut ClusterConnection,
    ) -> Result<Vec<(String, u16)>, OnlineStoreError> {
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| self.error(e))?;
        let text: String = redis::from_redis_value(reply).map_err(|e| {
            OnlineStoreError::Invalid(format!(
                "Redis cluster: unexpected CLUSTER NODES reply: {e}"
            ))
        })?;
        Ok(parse_cluster_primaries(&text))
    }

    /// The keys of `project` whose entity has exactly `join_keys`.
    async fn project_keys(
        &self,
        project: &str,
        join_keys: &[String],
    ) -> Result<Vec<Vec<u8>>, OnlineStoreError> {
        let jk: Vec<&str> = join_keys.iter().map(String::as_str).collect();
        let prefix = feast_core::entity_key::serialize_entity_key_prefix(
            &jk,
            self.entity_key_serialization_version,
        );
        let mut pattern = glob_escape(&prefix);
        pattern.push(b'*');
        pattern.extend(glob_escape(project.as_bytes()));
        let keys = self.scan(&pattern).await?;
        Ok(keys
            .into_iter()
            .filter(|k| key_is_of(k, &prefix, jk.len(), project.as_bytes()))
            .collect())
    }

    /// Feast's `delete_table`: drops `table`'s fields from every hash of the project holding
    /// its `_ts:` field, and the whole hash when that view is the only one in it.
    async fn delete_view(&self, project: &str, table: &TableRef) -> Result<(), OnlineStoreError> {
        let keys = self
            .project_keys(project, require_join_keys(table)?)
            .await?;
        if keys.is_empty() {
            return Ok(());
        }
        let hkeys = self
            .run(
                keys.iter()
                    .map(|k| (k.clone(), redis::cmd("HKEYS").arg(k).clone()))
                    .collect(),
            )
            .await?;
        let own_ts = ts_field(&table.view);
        let mut fields: Vec<Vec<u8>> = table
            .features
            .iter()
            .map(|f| feature_field(&table.view, f).to_vec())
            .collect();
        fields.push(own_ts.clone());
        let mut deletes = Vec::new();
        for (key, reply) in keys.into_iter().zip(hkeys) {
            let names: Vec<Vec<u8>> = redis::from_redis_value(reply).map_err(|e| {
                OnlineStoreError::Invalid(format!("Redis: unexpected HKEYS reply: {e}"))
            })?;
            let views = names.iter().filter(|n| n.starts_with(b"_ts:")).count();
            if !names.contains(&own_ts) {
                continue;
            }
            let cmd = if views == 1 {
                redis::cmd("DEL").arg(&key).clone()
            } else {
                redis::cmd("HDEL").arg(&key).arg(&fields).clone()
            };
            deletes.push((key, cmd));
        }
        self.run(deletes).await?;
        Ok(())
    }
}

fn require_join_keys(table: &TableRef) -> Result<&[String], OnlineStoreError> {
    if table.join_keys.is_empty() {
        return Err(OnlineStoreError::Invalid(format!(
            "Redis needs the join keys of feature view {:?} to find its data \
             (TableRef::with_schema)",
            table.view
        )));
    }
    Ok(&table.join_keys)
}

/// The `ip:port` of each primary not flagged as failed, from `CLUSTER NODES` text
/// (`<id> <ip:port@cport[,hostname]> <flags> ...`).
fn parse_cluster_primaries(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (_id, addr, flags) = (parts.next()?, parts.next()?, parts.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Where each requested hash field goes in a key's reply, by name: places the fields of an
/// `HGETALL` reply as `HMGET` would have answered them.
struct FieldSlots<'a> {
    /// (feature field, read, position among the read's fields), sorted by field.
    features: Vec<([u8; 4], usize, usize)>,
    /// (`_ts:{view}` field, read, position: after the read's features).
    timestamps: Vec<(&'a [u8], usize, usize)>,
}

impl<'a> FieldSlots<'a> {
    fn new(view_fields: &'a [(Vec<[u8; 4]>, Vec<u8>)]) -> Self {
        let mut features = Vec::new();
        let mut timestamps = Vec::new();
        for (ri, (fields, ts)) in view_fields.iter().enumerate() {
            features.extend(fields.iter().enumerate().map(|(pos, &f)| (f, ri, pos)));
            timestamps.push((ts.as_slice(), ri, fields.len()));
        }
        features.sort_unstable();
        FieldSlots {
            features,
            timestamps,
        }
    }

    /// Calls `slot(read, position)` for every requested field named `name` (a view read twice
    /// has two).
    fn for_each(&self, name: &[u8], mut slot: impl FnMut(usize, usize)) {
        if let Ok(field) = <[u8; 4]>::try_from(name) {
            let from = self.features.partition_point(|f| f.0 < field);
            for &(_, ri, pos) in self.features[from..].iter().take_while(|f| f.0 == field) {
                slot(ri, pos);
            }
        } else {
            for &(ts, ri, pos) in &self.timestamps {
                if ts == name {
                    slot(ri, pos);
                }
            }
        }
    }
}

/// One view's part of an `HMGET key f1 ... fn _ts:view` reply: its features' fields
/// (`features.len()` values), then its `_ts:` field.
fn decode_fields(
    view: &str,
    features: &[String],
    reply: &[Option<&[u8]>],
) -> Result<Option<FeatureRow>, OnlineStoreError> {
    let Some((ts, fields)) = reply.split_last() else {
        return Err(OnlineStoreError::Invalid(format!(
            "Redis: empty HMGET reply for {view:?}"
        )));
    };
    let ts = *ts;
    if ts.is_none() && fields.iter().all(Option::is_none) {
        return Ok(None);
    }
    let event_ts = match ts {
        None => Timestamp::default(),
        Some(bytes) => Timestamp::decode(bytes).map_err(|e| {
            OnlineStoreError::Invalid(format!(
                "Redis field _ts:{view} is not a google.protobuf.Timestamp: {e}"
            ))
        })?,
    };
    let mut values = Vec::with_capacity(features.len());
    for (feature, field) in features.iter().zip(fields) {
        values.push(match field {
            None => None,
            Some(bytes) => Some(Value::decode(*bytes).map_err(|e| {
                OnlineStoreError::Invalid(format!(
                    "Redis field of {view}:{feature} is not a feast.types.Value: {e}"
                ))
            })?),
        });
    }
    Ok(Some(FeatureRow { event_ts, values }))
}

#[tonic::async_trait]
impl OnlineStore for RedisOnlineStore {
    async fn online_read(
        &self,
        table: &TableRef,
        entity_keys: &[Vec<u8>],
        features: &[String],
    ) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError> {
        let mut out = self
            .online_read_many(&[ReadSpec {
                table,
                entity_keys,
                features,
                entity_fields: None,
            }])
            .await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Every view's `HMGET`s (one per distinct entity key of the view) in one pipeline.
    async fn online_read_many(
        &self,
        reads: &[ReadSpec<'_>],
    ) -> Result<Vec<Vec<Option<FeatureRow>>>, OnlineStoreError> {
        // Views with the same join keys share Feast's hash (entity key ‖ project), so each
        // distinct key gets ONE `HMGET` carrying the fields of every view that reads it: a
        // 10-view request for 100 entities sends 100 commands, not 1,000.
        //
        // This is the serving hot path: field names are hashed once per view, keys are
        // looked up borrowed (no copies), and views given the very same key slice (the server
        // passes one slice to every view with the same join keys) share one row → command
        // mapping instead of hashing every key again per view.
        let view_fields: Vec<(Vec<[u8; 4]>, Vec<u8>)> = reads
            .iter()
            .map(|r| {
                let fields = r
                    .features
                    .iter()
                    .map(|f| feature_field(&r.table.view, f))
                    .collect();
                (fields, ts_field(&r.table.view))
            })
            .collect();
        // Per distinct (entity key, project): its position in `keys`.
        let mut key_index: HashMap<(&[u8], &str), usize> = HashMap::new();
        // Per distinct key: the entity key, the project, and (read, offset) of each view whose
        // fields its HMGET carries, in order.
        struct KeyRead<'k> {
            entity_key: &'k [u8],
            project: &'k str,
            fields: usize,
            parts: Vec<(usize, usize)>,
        }
        let mut keys: Vec<KeyRead<'_>> = Vec::new();
        // Per read, per entity row: (key index, offset of the view's fields in its reply).
        let mut locate: Vec<Vec<(usize, usize)>> = Vec::with_capacity(reads.len());
        // Row → key index of the last distinct key slice seen, with that slice's identity.
        let mut last_rows: Option<((usize, usize, &str), Vec<usize>)> = None;
        for (ri, r) in reads.iter().enumerate() {
            let project = r.table.project.as_str();
            let identity = (
                r.entity_keys.as_ptr() as usize,
                r.entity_keys.len(),
                project,
            );
            let row_keys = match &last_rows {
                Some((id, rows)) if *id == identity => rows.clone(),
                _ => {
                    let rows: Vec<usize> = r
                        .entity_keys
                        .iter()
                        .map(|ek| {
                            *key_index
                                .entry((ek.as_slice(), project))
                                .or_insert_with(|| {
                                    keys.push(KeyRead {
                                        entity_key: ek,
                                        project,
                                        fields: 0,
                                        parts: Vec::new(),
                                    });
                                    keys.len() - 1
                                })
                        })
                        .collect();
                    last_rows = Some((identity, rows.clone()));
                    rows
                }
            };
            let n = view_fields[ri].0.len() + 1;
            let mut rows = Vec::with_capacity(row_keys.len());
            for ki in row_keys {
                let key = &mut keys[ki];
                let offset = match key.parts.iter().find(|(read, _)| *read == ri) {
                    Some(&(_, offset)) => offset,
                    None => {
                        let offset = key.fields;
                        key.fields += n;
                        key.parts.push((ri, offset));
                        offset
                    }
                };
                rows.push((ki, offset));
            }
            locate.push(rows);
        }
        let expected: Vec<usize> = keys.iter().map(|k| k.fields).collect();
        // Every reply's fields, flat (`fields[starts[key] + offset]`), decoded into rows.
        let decode_all = |fields: &[Option<&[u8]>], starts: &[usize]| {
            let mut out = Vec::with_capacity(reads.len());
            for ((r, rows), (view_fields, _)) in reads.iter().zip(&locate).zip(&view_fields) {
                let n = view_fields.len() + 1;
                let mut decoded = Vec::with_capacity(rows.len());
                for &(ki, offset) in rows {
                    let at = starts[ki] + offset;
                    decoded.push(decode_fields(
                        &r.table.view,
                        r.features,
                        &fields[at..at + n],
                    )?);
                }
                out.push(decoded);
            }
            Ok(out)
        };
        let wrong_count = |got: usize, want: usize| {
            OnlineStoreError::Invalid(format!(
                "Redis: HMGET returned {got} fields, expected {want}"
            ))
        };
        let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(expected.iter().sum());
        let mut starts = Vec::with_capacity(keys.len());
        if keys.is_empty() {
            return decode_all(&fields, &starts);
        }

        if let Some(pool) = &self.reads {
            // The pipeline as RESP bytes: each view's field arguments are encoded once.
            let view_args: Vec<Vec<u8>> = view_fields
                .iter()
                .map(|(fields, ts)| {
                    let mut args = Vec::with_capacity(fields.len() * 10 + ts.len() + 8);
                    for field in fields {
                        resp::push_bulk(&mut args, field);
                    }
                    resp::push_bulk(&mut args, ts);
                    args
                })
                .collect();
            // Per key: whether its whole hash is read.
            let whole: Vec<bool> = keys
                .iter()
                .zip(&expected)
                .map(|(k, &want)| {
                    let held = k
                        .parts
                        .iter()
                        .filter_map(|&(ri, _)| reads[ri].entity_fields);
                    want >= WHOLE_HASH_MIN_FIELDS
                        && held
                            .max()
                            .is_some_and(|h| h <= LISTPACK_FIELDS && 3 * want >= h)
                })
                .collect();
            let slots = whole.contains(&true).then(|| FieldSlots::new(&view_fields));
            let mut read_at: Vec<Option<usize>> = vec![None; reads.len()];
            let mut request = Vec::with_capacity(keys.len() * 64);
            for ((k, &n), &whole) in keys.iter().zip(&expected).zip(&whole) {
                if whole {
                    resp::push_command_header(&mut request, 2);
                    resp::push_bulk(&mut request, b"HGETALL");
                } else {
                    resp::push_command_header(&mut request, n + 2);
                    resp::push_bulk(&mut request, b"HMGET");
                }
                resp::push_bulk_header(&mut request, k.entity_key.len() + k.project.len());
                request.extend_from_slice(k.entity_key);
                request.extend_from_slice(k.project.as_bytes());
                request.extend_from_slice(b"\r\n");
                if !whole {
                    for &(ri, _) in &k.parts {
                        request.extend_from_slice(&view_args[ri]);
                    }
                }
            }
            let replies = pool
                .query(request, keys.len())
                .await
                .map_err(|e| self.resp_error(e))?;
            for (ki, (reply, &want)) in replies.replies().iter().zip(&expected).enumerate() {
                match *reply {
                    resp::Reply::Array { first, len } if whole[ki] => {
                        if len % 2 != 0 {
                            return Err(OnlineStoreError::Invalid(format!(
                                "Redis: HGETALL returned {len} items, not field-value pairs"
                            )));
                        }
                        let start = fields.len();
                        starts.push(start);
                        fields.resize(start + want, None);
                        // Where each read's fields begin in this key's part of `fields`.
                        for &(ri, offset) in &keys[ki].parts {
                            read_at[ri] = Some(start + offset);
                        }
                        let slots = slots.as_ref().expect("built when a hash is read whole");
                        let mut items = replies.elements(first, len);
                        while let (Some(name), Some(value)) = (items.next(), items.next()) {
                            slots.for_each(name.unwrap_or_default(), |ri, pos| {
                                if let Some(at) = read_at[ri] {
                                    fields[at + pos] = value;
                                }
                            });
                        }
                        for &(ri, _) in &keys[ki].parts {
                            read_at[ri] = None;
                        }
                    }
                    resp::Reply::Array { first, len } if len == want => {
                        starts.push(fields.len());
                        fields.extend(replies.elements(first, len));
                    }
                    resp::Reply::Array { len, .. } => return Err(wrong_count(len, want)),
                    resp::Reply::Error(text) => {
                        return Err(self.error_reply(&replies.error_text(text)));
                    }
                    ref other => {
                        return Err(OnlineStoreError::Invalid(format!(
                            "Redis: unexpected HMGET reply: {other:?}"
                        )));
                    }
                }
            }
            return decode_all(&fields, &starts);
        }

        let mut redis_key = Vec::new();
        let cmds = keys
            .iter()
            .map(|k| {
                redis_key.clear();
                redis_key.extend_from_slice(k.entity_key);
                redis_key.extend_from_slice(k.project.as_bytes());
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&redis_key[..]);
                for &(ri, _) in &k.parts {
                    let (fields, ts) = &view_fields[ri];
                    for field in fields {
                        cmd.arg(&field[..]);
                    }
                    cmd.arg(&ts[..]);
                }
                (redis_key.clone(), cmd)
            })
            .collect();
        let replies = self.run(cmds).await?;
        if replies.len() != expected.len() {
            return Err(OnlineStoreError::Invalid(
                "Redis: the pipeline returned fewer replies than commands".into(),
            ));
        }
        for (reply, &want) in replies.iter().zip(&expected) {
            let redis::Value::Array(values) = reply else {
                return Err(OnlineStoreError::Invalid(format!(
                    "Redis: unexpected HMGET reply: {reply:?}"
                )));
            };
            if values.len() != want {
                return Err(wrong_count(values.len(), want));
            }
            starts.push(fields.len());
            for value in values {
                fields.push(match value {
                    redis::Value::Nil => None,
                    redis::Value::BulkString(bytes) => Some(bytes),
                    other => {
                        return Err(OnlineStoreError::Invalid(format!(
                            "Redis: unexpected HMGET reply field: {other:?}"
                        )));
                    }
                });
            }
        }
        decode_all(&fields, &starts)
    }

    /// Feast's write: the dedup read (unless `skip_dedup`), then one pipeline of `HSET`
    /// (+ `EXPIRE`); a batch of many rows creates the hashes that do not exist yet with
    /// `RESTORE` (see the module documentation and [`RestoreState`]).
    async fn online_write_batch(
        &self,
        table: &TableRef,
        rows: &[WriteRow],
    ) -> Result<usize, OnlineStoreError> {
        let rows: Vec<&WriteRow> = rows.iter().filter(|r| !r.features.is_empty()).collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let keys: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| redis_key(&r.entity_key, &table.project))
            .collect();
        let plan = match self.restore_ttl_ms() {
            Some(_) => self.restore.plan(&table.view, rows.len()),
            None => WritePlan::ReadFirst {
                restore_missing: false,
            },
        };
        let mut batch = WriteBatch {
            table,
            rows,
            keys,
            ts_key: ts_field(&table.view),
            fields: FieldTable::default(),
            unique: None,
            payload: Vec::new(),
            values: Vec::new(),
            ends: Vec::new(),
        };
        let (restored, rest) = if plan == WritePlan::RestoreFirst {
            self.restore_first(&mut batch).await?
        } else {
            (0, (0..batch.rows.len()).collect())
        };
        Ok(restored + self.read_then_write(&mut batch, &rest, plan).await?)
    }

    /// Nothing to create (hashes appear on write); each deleted view's fields go away as in
    /// Feast's `delete_table`, when `full_scan_for_deletion` (the default) is on.
    async fn update(
        &self,
        project: &str,
        _tables_to_keep: &[TableRef],
        tables_to_delete: &[TableRef],
    ) -> Result<(), OnlineStoreError> {
        if !self.full_scan_for_deletion {
            return Ok(());
        }
        for table in tables_to_delete {
            self.delete_view(project, table).await?;
        }
        Ok(())
    }

    /// Feast's teardown: deletes every hash of `project` keyed by the join keys of one of
    /// `tables` (with whatever other views' fields it holds).
    async fn teardown(&self, project: &str, tables: &[TableRef]) -> Result<(), OnlineStoreError> {
        let mut join_key_sets: Vec<Vec<String>> = Vec::new();
        for t in tables {
            let mut jk = require_join_keys(t)?.to_vec();
            jk.sort();
            if !join_key_sets.contains(&jk) {
                join_key_sets.push(jk);
            }
        }
        for jk in join_key_sets {
            let keys = self.project_keys(project, &jk).await?;
            self.run(
                keys.into_iter()
                    .map(|k| {
                        let cmd = redis::cmd("DEL").arg(&k).clone();
                        (k, cmd)
                    })
                    .collect(),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_is_planned_from_what_the_view_found() {
        const READ: WritePlan = WritePlan::ReadFirst {
            restore_missing: true,
        };
        const HSET: WritePlan = WritePlan::ReadFirst {
            restore_missing: false,
        };
        let state = RestoreState::default();
        // Small writes never try; nothing is learnt from them.
        assert_eq!(state.plan("v", RESTORE_MIN_ROWS - 1), HSET);
        // The first batch probes; batches started before it reports read first.
        assert_eq!(state.plan("v", 100), WritePlan::RestoreFirst);
        assert_eq!(state.plan("v", 100), READ);
        assert_eq!(state.plan("w", 100), WritePlan::RestoreFirst);
        state.record("v", WritePlan::RestoreFirst, 100, 100, 0);
        assert_eq!(state.plan("v", 100), WritePlan::RestoreFirst);
        // Keys that exist: read first from then on.
        state.record("v", WritePlan::RestoreFirst, 100, 100, 60);
        assert_eq!(state.plan("v", 100), READ);
        // A read-first batch whose keys were mostly missing, and restored: RESTORE first.
        state.record("v", READ, 100, 60, 5);
        assert_eq!(state.plan("v", 100), WritePlan::RestoreFirst);
        // Keys read as missing that existed (other views' fields): HSET alone for a while.
        state.record("v", READ, 100, 10, 9);
        for _ in 0..RESTORE_SKIP_BATCHES {
            assert_eq!(state.plan("v", 100), HSET);
        }
        assert_eq!(state.plan("v", 100), READ);
        // Rows that mostly cannot be offered (duplicates, wide hashes): HSET for a while.
        state.record("w", WritePlan::RestoreFirst, 100, 10, 0);
        assert_eq!(state.plan("w", 100), HSET);
        // A probe that never reports is given up.
        state.views.lock().unwrap().insert(
            "x".into(),
            ViewHistory::Probing(Instant::now() - PROBE_TIMEOUT),
        );
        assert_eq!(state.plan("x", 100), WritePlan::RestoreFirst);
        assert_eq!(state.plan("x", 100), READ);
        // A server that refuses RESTORE: never again.
        state.refused.store(true, Ordering::Relaxed);
        assert_eq!(state.plan("v", 100), HSET);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn driver_key(id: i64) -> Vec<u8> {
        use feast_proto::types::{EntityKey, value::Val};
        let key = EntityKey {
            join_keys: vec!["driver_id".into()],
            entity_values: vec![Value {
                val: Some(Val::Int64Val(id)),
            }],
        };
        crate::store::serialize_entity_key(&key, 3).unwrap()
    }

    #[test]
    fn hash_fields_match_feast() {
        assert_eq!(
            hex(&feature_field("driver_hourly_stats", "conv_rate")),
            "6160e3da"
        );
        assert_eq!(
            hex(&feature_field("driver_hourly_stats", "acc_rate")),
            "fa5e58ad"
        );
        assert_eq!(ts_field("driver_hourly_stats"), b"_ts:driver_hourly_stats");
        // Names longer than the stack buffer hash the same way.
        for n in [126, 127, 128, 300] {
            let view = "v".repeat(n);
            assert_eq!(
                feature_field(&view, "f"),
                murmur3_x86_32(format!("{view}:f").as_bytes(), 0).to_le_bytes(),
                "{n}"
            );
        }
    }

    #[test]
    fn keys_are_entity_key_then_project() {
        let ek = driver_key(1001);
        assert_eq!(
            hex(&redis_key(&ek, "my_project")),
            "0100000002000000090000006472697665725f69640400000008000000e903000000000000\
             6d795f70726f6a656374"
        );
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(
            glob_escape(b"a*b?c[d]e\\f"),
            b"a\\*b\\?c\\[d\\]e\\\\f".to_vec()
        );
        assert_eq!(glob_escape(b"\x00\x01plain"), b"\x00\x01plain".to_vec());
    }

    #[test]
    fn only_keys_of_the_exact_project_and_join_keys_belong() {
        let prefix = feast_core::entity_key::serialize_entity_key_prefix(&["driver_id"], 3);
        let ek = driver_key(1001);
        assert!(key_is_of(&redis_key(&ek, "p"), &prefix, 1, b"p"));
        assert!(!key_is_of(&redis_key(&ek, "ap"), &prefix, 1, b"p"));
        assert!(!key_is_of(&redis_key(&ek, "p"), &prefix, 1, b"ap"));
        assert!(!key_is_of(&redis_key(&ek, "p"), &prefix, 2, b"p"));
        assert!(!key_is_of(b"\x01\x00", &prefix, 1, b"p"));
        // Truncated value lengths never panic.
        let mut short = prefix.clone();
        short.extend_from_slice(&[4, 0, 0, 0, 255, 0, 0, 0, 1]);
        assert!(!key_is_of(&short, &prefix, 1, b""));
    }

    #[test]
    fn timestamps_serialize_like_python_protobuf() {
        assert_eq!(hex(&encode_ts(&Timestamp::default())), "");
        assert_eq!(
            hex(&encode_ts(&Timestamp {
                seconds: 1_714_521_600,
                nanos: 0
            })),
            "08808cc6b106"
        );
        // Python: `Timestamp.FromDatetime(datetime(2024, 5, 1, 0, 0, 0, 123456, tz=utc))`.
        assert_eq!(
            hex(&encode_ts(&Timestamp {
                seconds: 1_714_521_600,
                nanos: 123_456_000
            })),
            "08808cc6b106108094ef3a"
        );
        // Normalized first: 1.5 s given as (2, -500 ms).
        assert_eq!(
            encode_ts(&Timestamp {
                seconds: 2,
                nanos: -500_000_000
            }),
            encode_ts(&Timestamp {
                seconds: 1,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host2 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave a1 0 1 3 connected
d4 127.0.0.1:7004@17004 master,fail - 0 1 4 connected
e5 [::1]:7005@17005 master - 0 1 5 connected 10923-16383
";
        assert_eq!(
            parse_cluster_primaries(text),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002),
                ("::1".to_owned(), 7005)
            ]
        );
    }

    #[test]
    fn hmget_replies_decode_to_rows() {
        use feast_proto::types::value::Val;
        let features = vec!["a".to_string(), "b".to_string()];
        let v = Value {
            val: Some(Val::Int64Val(7)),
        };
        let ts = Timestamp {
            seconds: 10,
            nanos: 5,
        };
        let decode = |v: &[Option<Vec<u8>>]| {
            let fields: Vec<Option<&[u8]>> = v.iter().map(|f| f.as_deref()).collect();
            decode_fields("v", &features, &fields)
        };
        // Nothing at all: not found.
        assert_eq!(decode(&[None, None, None]).unwrap(), None);
        // The timestamp and one feature.
        let some = [Some(v.encode_to_vec()), None, Some(ts.encode_to_vec())];
        assert_eq!(
            decode(&some).unwrap(),
            Some(FeatureRow {
                event_ts: ts,
                values: vec![Some(v.clone()), None]
            })
        );
        // A feature without the view's timestamp: found, at the epoch.
        let no_ts = [None, Some(v.encode_to_vec()), None];
        assert_eq!(
            decode(&no_ts).unwrap().unwrap().event_ts,
            Timestamp::default()
        );
        let bad_ts = [None, None, Some(vec![0xff])];
        assert!(matches!(decode(&bad_ts), Err(OnlineStoreError::Invalid(_))));
        assert!(matches!(decode(&[]), Err(OnlineStoreError::Invalid(_))));
    }
}
