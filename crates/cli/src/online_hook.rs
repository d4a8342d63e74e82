//! `feast-rs internal online-*`: a test hook that drives feast-online's stores directly, so
//! the compatibility tests can check the online stores against Feast byte for byte. Not a
//! user interface: keys and values travel as hex (serialized entity keys, serialized
//! `feast.types.Value`s) so the tests compare exact bytes.
//!
//! The store is either a SQLite file (`--db F --project P`) or whatever a repository's
//! `feature_store.yaml` configures (`--repo DIR`, the project defaulting to the file's).
//!
//! - `online-read --db F --project P --view V --features a,b --entity-keys-hex k1,k2`
//!   prints a JSON array aligned with the keys: `null` (not found) or
//!   `{"event_ts": {"seconds", "nanos"}, "values": [hex or null, ...]}`.
//! - `online-write --db F --project P --view V` reads a JSON array of
//!   `{"entity_key": hex, "event_ts": {"seconds", "nanos"?}, "created_ts": {...} | null,
//!   "features": {"name": hex, ...}}` from stdin and prints `{"written": n}`.
//! - `online-update --db F --project P [--keep v1,v2] [--delete v3] [--join-keys k1,k2
//!   --features f1,f2]` runs the store's `update` (Feast's table DDL; Redis deletes the
//!   data of the `--delete` views, found by `--join-keys`, whose `--features` it removes).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use feast_core::config::RepoConfig;
use feast_online::{OnlineStore, SqliteOnlineStore, TableRef, WriteRow, open_online_store};
use feast_proto::types::Value;
use prost::Message;
use serde::Deserialize;
use serde_json::json;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// A SQLite online store file.
    #[arg(long, required_unless_present = "repo", conflicts_with = "repo")]
    db: Option<PathBuf>,
    /// A repository directory: the store its feature_store.yaml configures.
    #[arg(long)]
    repo: Option<PathBuf>,
    /// The project (default: the repository's).
    #[arg(long, required_unless_present = "repo")]
    project: Option<String>,
}

impl StoreArgs {
    /// The store and the project.
    async fn open(&self) -> Result<(Arc<dyn OnlineStore>, String)> {
        if let Some(db) = &self.db {
            let store: Arc<dyn OnlineStore> = Arc::new(SqliteOnlineStore::open(db).await?);
            return Ok((store, self.project.clone().unwrap_or_default()));
        }
        let repo = self.repo.as_deref().context("--db or --repo")?;
        let config = RepoConfig::load(repo, None)?;
        let project = self
            .project
            .clone()
            .unwrap_or_else(|| config.project.clone());
        Ok((open_online_store(&config).await?, project))
    }
}

#[derive(clap::Subcommand)]
pub enum OnlineHook {
    /// Read entities of one feature view (hex keys in, hex values out).
    #[command(name = "online-read")]
    Read {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        view: String,
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        entity_keys_hex: Vec<String>,
    },
    /// Write rows (JSON on stdin) to one feature view.
    #[command(name = "online-write")]
    Write {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        view: String,
    },
    /// Create (--keep) and drop (--delete) feature-view tables.
    #[command(name = "online-update")]
    Update {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_delimiter = ',')]
        keep: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        delete: Vec<String>,
        /// Join keys of every view named (Redis).
        #[arg(long, value_delimiter = ',')]
        join_keys: Vec<String>,
        /// Features of every view named (Redis).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
}

#[derive(Deserialize)]
struct Ts {
    seconds: i64,
    #[serde(default)]
    nanos: i32,
}

impl From<Ts> for prost_types::Timestamp {
    fn from(t: Ts) -> Self {
        prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

#[derive(Deserialize)]
struct JsonRow {
    entity_key: String,
    event_ts: Ts,
    #[serde(default)]
    created_ts: Option<Ts>,
    features: serde_json::Map<String, serde_json::Value>,
}

fn from_hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex {s:?}");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex {s:?}")))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tables(
    project: &str,
    views: &[String],
    join_keys: &[String],
    features: &[String],
) -> Vec<TableRef> {
    views
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| TableRef::new(project, v.as_str()).with_schema(join_keys, features))
        .collect()
}

pub fn run(hook: &OnlineHook) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        match hook {
            OnlineHook::Read {
                store,
                view,
                features,
                entity_keys_hex,
            } => {
                let (db, project) = store.open().await?;
                let keys = entity_keys_hex
                    .iter()
                    .map(|k| from_hex(k))
                    .collect::<Result<Vec<_>>>()?;
                let rows = db
                    .online_read(&TableRef::new(&project, view), &keys, features)
                    .await?;
                let out: Vec<serde_json::Value> = rows
                    .into_iter()
                    .map(|r| match r {
                        None => serde_json::Value::Null,
                        Some(r) => json!({
                            "event_ts": {"seconds": r.event_ts.seconds, "nanos": r.event_ts.nanos},
                            "values": r.values.iter()
                                .map(|v| v.as_ref().map(|v| to_hex(&v.encode_to_vec())))
                                .collect::<Vec<_>>(),
                        }),
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(out));
            }
            OnlineHook::Write { store, view } => {
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .context("reading rows from stdin")?;
                let json_rows: Vec<JsonRow> =
                    serde_json::from_str(&input).context("parsing rows from stdin")?;
                let mut rows = Vec::with_capacity(json_rows.len());
                for r in json_rows {
                    let mut features = Vec::with_capacity(r.features.len());
                    for (name, v) in r.features {
                        let hex = v.as_str().context("feature values are hex strings")?;
                        features.push((name, Value::decode(from_hex(hex)?.as_slice())?));
                    }
                    rows.push(WriteRow {
                        entity_key: from_hex(&r.entity_key)?,
                        features,
                        event_ts: r.event_ts.into(),
                        created_ts: r.created_ts.map(Into::into),
                    });
                }
                let (db, project) = store.open().await?;
                let written = db
                    .write_creating(&TableRef::new(&project, view), &rows)
                    .await?;
                println!("{}", json!({ "written": written }));
            }
            OnlineHook::Update {
                store,
                keep,
                delete,
                join_keys,
                features,
            } => {
                let (db, project) = store.open().await?;
                db.update(
                    &project,
                    &tables(&project, keep, join_keys, features),
                    &tables(&project, delete, join_keys, features),
                )
                .await?;
            }
        }
        Ok(())
    })
}
