//! Mutated definitions and `feature_store.yaml` files (bytes flipped, lines dropped or
//! duplicated, YAML punctuation inserted, truncation) are rejected with errors, never with
//! a panic. Deterministic: a fixed-seed generator, so a failure reproduces.

use std::path::{Path, PathBuf};

use feast_core::config::RepoConfig;
use feast_core::repo;

const DEFINITIONS: &str = r#"
project: {name: demo, description: d, tags: {a: b}}
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: pushed, type: push, batch_source: stats}
  - name: req
    type: request
    schema: [{name: a, dtype: Int64}]
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 2h30m
    schema: [{name: x, dtype: Float32}, {name: y, dtype: Array(Int64)}]
    source: stats
  - {name: fresh, entities: [driver], schema: [{name: x, dtype: Float32}], source: pushed}
on_demand_feature_views:
  - {name: odfv, sources: [driver_stats, req], schema: [{name: z, dtype: Float64}], mode: python, udf: "def odfv(x): return x"}
feature_services:
  - name: svc
    features:
      - driver_stats: [x]
      - {feature_view: fresh, alias: f, join_key_map: {driver_id: d}}
      - odfv
permissions:
  - {name: p, types: [feature_view], name_patterns: ["d.*"], actions: [read], policy: {roles: [r]}}
"#;

const CONFIG: &str = r#"
project: demo
registry:
  registry_type: sql
  path: postgresql://u:p@localhost:5432/feast
  cache_ttl_seconds: 60
online_store:
  type: redis
  connection_string: "localhost:6379,db=0,ssl=true"
offline_store:
  type: remote
  host: localhost
  port: 8815
auth:
  type: oidc
  client_id: feast
  auth_discovery_url: http://localhost/.well-known/openid-configuration
entity_key_serialization_version: 3
"#;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(text: &str, rng: &mut XorShift) -> String {
    const PUNCT: &[&str] = &[
        ":", "- ", "[", "]", "{", "}", "\"", "'", "#", "&a", "*a", "!!int ", "\t", "\n", "  ", ",",
        "|", ">", "%", "@", "\u{0}", "é", "${X}",
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !lines.is_empty() => {
                let i = rng.below(lines.len());
                lines.remove(i);
            }
            1 if !lines.is_empty() => {
                let i = rng.below(lines.len());
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 if !lines.is_empty() => {
                let i = rng.below(lines.len());
                let l = &mut lines[i];
                let at = (0..=l.len())
                    .filter(|p| l.is_char_boundary(*p))
                    .nth(rng.below(l.len() + 1))
                    .unwrap_or(0);
                l.insert_str(at, PUNCT[rng.below(PUNCT.len())]);
            }
            3 if !lines.is_empty() => {
                let i = rng.below(lines.len());
                let keep = lines[i]
                    .char_indices()
                    .nth(rng.below(lines[i].len() + 1))
                    .map_or(lines[i].len(), |(p, _)| p);
                lines[i].truncate(keep);
            }
            4 if !lines.is_empty() => {
                // swap a word for another from the document (names, keys, dtypes)
                let words: Vec<String> = text
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect();
                let i = rng.below(lines.len());
                let target = words[rng.below(words.len())].clone();
                let with = words[rng.below(words.len())].clone();
                lines[i] = lines[i].replacen(&target, &with, 1);
            }
            _ => {
                let cut = rng.below(lines.len() + 1);
                lines.truncate(cut);
            }
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_definitions_never_panic() {
    let repo_dir: PathBuf = std::env::temp_dir();
    let mut rng = XorShift(0x5eed_f00d_dead_beef);
    let mut rejected = 0;
    for _ in 0..3000 {
        let text = mutate(DEFINITIONS, &mut rng);
        match repo::parse_definitions(&text) {
            Err(_) => rejected += 1,
            Ok(defs) => {
                if repo::build(&repo_dir, "demo", vec![(PathBuf::from("f.yaml"), defs)]).is_err() {
                    rejected += 1;
                }
            }
        }
    }
    // The mutations must actually exercise the error paths.
    assert!(
        rejected > 1000,
        "only {rejected} of 3000 mutations were rejected"
    );
}

#[test]
fn mutated_configs_never_panic() {
    let mut rng = XorShift(0xc0ff_ee00_1234_5678);
    let mut rejected = 0;
    for _ in 0..3000 {
        let text = mutate(CONFIG, &mut rng);
        if RepoConfig::from_yaml_str_with_env(
            &text,
            "feature_store.yaml",
            Path::new("/repo"),
            &|_| None,
        )
        .is_err()
        {
            rejected += 1;
        }
    }
    assert!(
        rejected > 1000,
        "only {rejected} of 3000 mutations were rejected"
    );
}
