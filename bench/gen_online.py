"""Data, Feast repositories and request bodies for bench/online.sh.

    python bench/gen_online.py OUT [DRIVERS] [ROWS_PER_DRIVER]

Writes, under OUT:
  data/driver_stats.parquet  DRIVERS drivers (driver_id 1000..) x ROWS_PER_DRIVER hourly rows,
                             the newest an hour old (views' TTL: 1 day), with the columns of
                             every view below plus event_timestamp and created
  repo_redis/, repo_sqlite/  feature_store.yaml (Redis db REDIS_DB on 127.0.0.1:6379, or
                             SQLite) and features.py, the same definitions:
    driver_hourly_stats   10 features: 2 Float32, 4 Float64, 3 Int64, 1 Int32 (TARGETS.md)
    driver_stats_wide     50 features (the same 10 types, five times)
    driver_group_0..9     5 features each (Float32, Float64, Float64, Int64, Int32)
  bodies/*.json              the get-online-features request of each workload
"""

import json
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(sys.argv[1])
DRIVERS = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
ROWS_PER_DRIVER = int(sys.argv[3]) if len(sys.argv) > 3 else 1
REDIS_DB = 5

# The TARGETS.md driver view: 2 Float32, 4 Float64, 3 Int64, 1 Int32.
BASE = [
    ("conv_rate", "Float32"),
    ("acc_rate", "Float32"),
    ("avg_speed", "Float64"),
    ("rating", "Float64"),
    ("earnings", "Float64"),
    ("distance", "Float64"),
    ("avg_daily_trips", "Int64"),
    ("completed_trips", "Int64"),
    ("cancelled_trips", "Int64"),
    ("active_hours", "Int32"),
]
WIDE = [(f"w{i}", BASE[i % 10][1]) for i in range(50)]
GROUP_TYPES = ["Float32", "Float64", "Float64", "Int64", "Int32"]
GROUPS = [[(f"g{g}_f{j}", t) for j, t in enumerate(GROUP_TYPES)] for g in range(10)]
DTYPES = {"Float32": "float32", "Float64": "float64", "Int64": "int64", "Int32": "int32"}


def column(rng, n, feast_type):
    if feast_type.startswith("Float"):
        return rng.random(n).astype(DTYPES[feast_type])
    return rng.integers(0, 1_000, n).astype(DTYPES[feast_type])


def write_data():
    rng = np.random.default_rng(42)
    n = DRIVERS * ROWS_PER_DRIVER
    newest = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    ids = np.tile(np.arange(1000, 1000 + DRIVERS, dtype="int64"), ROWS_PER_DRIVER)
    hours_back = np.repeat(np.arange(ROWS_PER_DRIVER), DRIVERS)
    ts = pd.to_datetime(newest) - pd.to_timedelta(hours_back, unit="h")
    cols = {"driver_id": ids, "event_timestamp": ts, "created": ts}
    for name, t in BASE + WIDE + [f for g in GROUPS for f in g]:
        cols[name] = column(rng, n, t)
    (OUT / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cols).to_parquet(OUT / "data" / "driver_stats.parquet", index=False)
    return newest


def view(name, fields):
    schema = ",\n        ".join(f'Field(name="{f}", dtype={t})' for f, t in fields)
    return f"""
{name} = FeatureView(
    name="{name}",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        {schema},
    ],
    online=True,
    source=source,
)
"""


def write_repo(kind):
    repo = OUT / f"repo_{kind}"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    if kind == "redis":
        online = f'{{type: redis, connection_string: "127.0.0.1:6379,db={REDIS_DB}"}}'
    else:
        online = "{type: sqlite, path: data/online.db}"
    (repo / "feature_store.yaml").write_text(
        "project: online_bench\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        f"online_store: {online}\n"
        "entity_key_serialization_version: 3\n"
    )
    py = f'''from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)

source = FileSource(
    name="driver_stats_source",
    path="{(OUT / "data" / "driver_stats.parquet").resolve()}",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
'''
    py += view("driver_hourly_stats", BASE)
    py += view("driver_stats_wide", WIDE)
    for g, fields in enumerate(GROUPS):
        py += view(f"driver_group_{g}", fields)
    (repo / "features.py").write_text(py)


def write_bodies():
    rng = random.Random(7)
    one = [rng.randrange(1000, 1000 + DRIVERS)]
    hundred = rng.sample(range(1000, 1000 + DRIVERS), 100)
    base = [f"driver_hourly_stats:{f}" for f, _ in BASE]
    wide = [f"driver_stats_wide:{f}" for f, _ in WIDE]
    groups = [f"driver_group_{g}:{f}" for g, fs in enumerate(GROUPS) for f, _ in fs]
    bodies = {
        "e1_f10": (base, one),
        "e100_f10": (base, hundred),
        "e1_f50": (wide, one),
        "e100_f50": (wide, hundred),
        "e100_v10x5": (groups, hundred),
    }
    (OUT / "bodies").mkdir(parents=True, exist_ok=True)
    for name, (features, ids) in bodies.items():
        body = {"features": features, "entities": {"driver_id": ids}, "full_feature_names": False}
        (OUT / "bodies" / f"{name}.json").write_text(json.dumps(body))


newest = write_data()
for kind in ("redis", "sqlite"):
    write_repo(kind)
write_bodies()
# For `feast materialize START END`.
print((newest - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"), (newest + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S"))
