"""Offline benchmark: get_historical_features and materialize, feast-rs against Feast 0.67
on the same files (numbers in BENCHMARKS.md; run through bench/offline.sh).

    python bench/offline_bench.py gen OUT [--drivers 10000] [--hours 100]
    python bench/offline_bench.py historical OUT SYSTEM ENTITIES          (one measurement)
    python bench/offline_bench.py materialize OUT SYSTEM VIEW [FEATURE_STORE_YAML]

`gen` writes under OUT (TARGETS.md's dataset):
  data/driver_stats.parquet     DRIVERS drivers x HOURS hourly rows, 10 features (2 Float32,
                                4 Float64, 3 Int64, 1 Int32) + event_timestamp + created
  data/driver_latest.parquet    1M drivers x 1 row (the materialization view)
  entities_100000.parquet, entities_1000000.parquet   random (driver, time) rows
  repo/                         feature_store.yaml (file offline store, Redis online db 6),
                                features.py; `feast apply` is run by offline.sh
SYSTEM: `feast-rs` (Flight server started by offline.sh, the SDK's remote offline store),
`feast-rs-cli` (the embedded engine, writing Parquet), `dask` / `duckdb` (Feast's stores).
Each measurement prints one JSON line: seconds, rows, and the client's peak RSS (MB).
"""

import json
import resource
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [
    ("conv_rate", "Float32"),
    ("acc_rate", "Float32"),
    ("avg_speed", "Float64"),
    ("rating", "Float64"),
    ("earnings", "Float64"),
    ("distance", "Float64"),
    ("avg_daily_trips", "Int64"),
    ("completed_trips", "Int64"),
    ("cancelled_trips", "Int64"),
    ("vehicle_age", "Int32"),
]
NP = {"Float32": "float32", "Float64": "float64", "Int64": "int64", "Int32": "int32"}
T_END = datetime(2024, 6, 1, tzinfo=timezone.utc)


def frame(rng, driver_ids, ts):
    n = len(driver_ids)
    cols = {"driver_id": driver_ids}
    for name, dtype in FEATURES:
        if dtype.startswith("Float"):
            cols[name] = rng.random(n).astype(NP[dtype])
        else:
            cols[name] = rng.integers(0, 1000, n).astype(NP[dtype])
    cols["event_timestamp"] = ts
    cols["created"] = ts
    return pd.DataFrame(cols)


def gen(out: Path, drivers: int, hours: int):
    rng = np.random.default_rng(7)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    ids = np.repeat(np.arange(1000, 1000 + drivers, dtype=np.int64), hours)
    offsets = np.tile(np.arange(hours, dtype=np.int64), drivers)
    ts = pd.to_datetime(T_END) - pd.to_timedelta(offsets, unit="h")
    frame(rng, ids, ts).to_parquet(data / "driver_stats.parquet", row_group_size=1_000_000)
    latest_ids = np.arange(1000, 1000 + 1_000_000, dtype=np.int64)
    frame(rng, latest_ids, pd.DatetimeIndex([T_END - timedelta(hours=1)] * len(latest_ids))).to_parquet(
        data / "driver_latest.parquet", row_group_size=1_000_000
    )
    for n in (100_000, 1_000_000):
        e_ids = rng.integers(1000, 1000 + drivers, n).astype(np.int64)
        e_ts = pd.to_datetime(T_END) - pd.to_timedelta(rng.integers(0, hours * 3600, n), unit="s")
        pd.DataFrame({"driver_id": e_ids, "event_timestamp": e_ts}).to_parquet(out / f"entities_{n}.parquet")
    repo = out / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench_offline\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: redis\n  connection_string: 127.0.0.1:6379,db=6\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    schema = ",\n        ".join(f'Field(name="{n}", dtype={t})' for n, t in FEATURES)
    (repo / "features.py").write_text(
        f'''from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
for name, path in [("driver_hourly_stats", "driver_stats.parquet"), ("driver_latest", "driver_latest.parquet")]:
    globals()[name] = FeatureView(
        name=name,
        entities=[driver],
        ttl=timedelta(days=1),
        schema=[
        {schema}
        ],
        source=FileSource(
            name=name + "_source",
            path="{data}/" + path,
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )
'''.replace("{data}", str(data.resolve()))
    )
    print(f"wrote {len(ids):,} + 1,000,000 feature rows and entity frames under {out}")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def historical(out: Path, system: str, entities: int):
    from feast import FeatureStore

    entity_df = pd.read_parquet(out / f"entities_{entities}.parquet")
    refs = [f"driver_hourly_stats:{n}" for n, _ in FEATURES]
    repo = out / "repo"
    if system == "feast-rs":
        fs = FeatureStore(repo_path=str(out / "client"))
    elif system == "duckdb":
        fs = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / "feature_store_duckdb.yaml")
    else:
        fs = FeatureStore(repo_path=str(repo))
    started = time.perf_counter()
    job = fs.get_historical_features(entity_df=entity_df, features=refs)
    rows = job.to_arrow().num_rows if system == "feast-rs" else len(job.to_df())
    secs = time.perf_counter() - started
    print(json.dumps({"system": system, "entities": entities, "seconds": round(secs, 3), "rows": rows,
                      "client_peak_rss_mb": round(peak_rss_mb())}))


def materialize(out: Path, system: str, view: str, yaml_name: str = "feature_store.yaml"):
    from feast import FeatureStore

    repo = out / "repo"
    yaml = repo / ("feature_store_duckdb.yaml" if system == "duckdb" else yaml_name)
    fs = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
    started = time.perf_counter()
    fs.materialize(start_date=T_END - timedelta(days=30), end_date=T_END, feature_views=[view])
    secs = time.perf_counter() - started
    print(json.dumps({"system": system, "view": view, "seconds": round(secs, 3),
                      "client_peak_rss_mb": round(peak_rss_mb())}))


if __name__ == "__main__":
    cmd, out = sys.argv[1], Path(sys.argv[2])
    if cmd == "gen":
        args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        gen(out, int(args.get("--drivers", 10_000)), int(args.get("--hours", 100)))
    elif cmd == "historical":
        historical(out, sys.argv[3], int(sys.argv[4]))
    elif cmd == "materialize":
        materialize(out, sys.argv[3], sys.argv[4], *sys.argv[5:6])
    else:
        sys.exit(f"unknown command {cmd}")
