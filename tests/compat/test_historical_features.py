"""`feast-rs get-historical-features` (the embedded DataFusion engine) against Feast's own
`get_historical_features(...).to_df()` on the same repository, data and entity frames.
Every case also runs through `feast-rs serve-offline` with the Feast SDK configured with
`offline_store: {type: remote}` (Arrow Flight `do_exchange`), which must give exactly the
CLI's frame.

Feast applies tests/compat/feast_repo (plus an entity-less view written below); feast-rs
reads the registry Feast wrote. Each case runs Feast's `file` (dask) and `duckdb` offline
stores and feast-rs, and compares rows (up to order), values and dtypes.

feast-rs follows the semantics of issue 5 where Feast's stores disagree with each other:
- every entity row is returned. Feast's `file` (dask) store drops an entity row whose key
  has feature rows but none inside the TTL window (or none at or before the entity
  timestamp); the duckdb store keeps it with nulls, as feast-rs does. Against `file` the
  test compares the rows Feast returns, and pins the values of the others itself.
- UnixTimestamp features are timestamps (the view's type); the duckdb store returns strings.
- equal event timestamps go to the latest created timestamp (duckdb orders by both; the
  dask store sorts twice and relies on the sort being stable).
"""

from datetime import datetime, timedelta, timezone
import math
import os
import socket
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import copy_repo, run
from feast import FeatureStore

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

ALL_DRIVER_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:rating",
    "driver_hourly_stats:active",
    "driver_hourly_stats:name",
    "driver_hourly_stats:avatar",
    "driver_hourly_stats:last_seen",
    "driver_hourly_stats:recent_trips",
    "driver_hourly_stats:scores",
]

ENTITYLESS_VIEW = '''
from datetime import timedelta
from feast import FeatureView, Field, FileSource
from feast.types import Int64

global_stats_source = FileSource(
    name="global_stats_source", path="data/global_stats.parquet", timestamp_field="event_timestamp"
)
global_stats = FeatureView(
    name="global_stats",
    entities=[],
    ttl=timedelta(hours=2),
    schema=[Field(name="total", dtype=Int64)],
    source=global_stats_source,
)
'''


def write_data(repo):
    data = repo / "data"
    rows = [
        # driver_id, event_timestamp, created, conv, trips, name
        (1001, T0, T0, 0.1, 1, "a"),
        (1001, T0 + DAY, T0 + DAY + HOUR, 0.3, 3, "c"),  # equal event ts: created later wins
        (1001, T0 + DAY, T0 + DAY, 0.2, 2, "b"),
        (1002, T0, T0, 0.5, 5, "d"),
        (1003, T0, T0, None, 7, None),  # null features are returned as null
    ]
    n = len(rows)
    pd.DataFrame(
        {
            "driver_id": [r[0] for r in rows],
            "conv": np.array([np.nan if r[3] is None else r[3] for r in rows], dtype="float32"),
            "acc_rate": [float(i) for i in range(n)],
            "avg_daily_trips": [r[4] for r in rows],
            "rating": np.array(list(range(n)), dtype="int32"),
            "active": [i % 2 == 0 for i in range(n)],
            "name": [r[5] for r in rows],
            "avatar": [bytes([i, 255]) for i in range(n)],
            "last_seen": [T0 - timedelta(days=i) for i in range(n)],
            "recent_trips": [list(range(i)) for i in range(n)],
            "scores": [[i / 2] for i in range(n)],
            "event_timestamp": [r[1] for r in rows],
            "created": [r[2] for r in rows],
        }
    ).to_parquet(data / "driver_stats.parquet")
    pd.DataFrame(
        {
            "driver_id": [1001, 1001, 1001],
            "customer_id": ["c1", "c1", "c2"],
            "affinity": [0.3, 0.4, 0.9],
            "event_timestamp": [T0, T0 + 10 * DAY, T0 + DAY],
        }
    ).to_parquet(data / "customer_profile.parquet")
    pd.DataFrame({"total": [100, 200], "event_timestamp": [T0, T0 + DAY]}).to_parquet(
        data / "global_stats.parquet"
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory, feast_cli):
    tmp = tmp_path_factory.mktemp("historical")
    repo = copy_repo("feast_repo", tmp)
    (repo / "offline_defs.py").write_text(ENTITYLESS_VIEW)
    write_data(repo)
    run([feast_cli, "apply"], cwd=repo)
    duck = (repo / "feature_store.yaml").read_text().replace("type: file", "type: duckdb")
    (repo / "feature_store_duckdb.yaml").write_text(duck)
    return repo


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_offline_server(feast_rs_bin, repo, *extra):
    """Starts `feast-rs serve-offline` on `repo`; returns (process, port)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(repo), "serve-offline", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "feast-rs offline server listening on" not in line:
        proc.kill()
        raise AssertionError(f"serve-offline did not start: {line}{proc.stderr.read()}")
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("feast-rs serve-offline did not stop within 10 s of SIGTERM")


def remote_client(repo, port, dest):
    """A FeatureStore whose offline store is the feast-rs server on `port` (registry: the
    server repository's file)."""
    dest.mkdir(exist_ok=True)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = str(repo / "data" / "registry.db")
    config["offline_store"] = {"type": "remote", "host": "127.0.0.1", "port": port}
    (dest / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return FeatureStore(repo_path=str(dest))


@pytest.fixture(scope="module")
def flight(repo, feast_rs_bin, tmp_path_factory):
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        yield remote_client(repo, port, tmp_path_factory.mktemp("flight_client"))
    finally:
        stop(proc)


def feast_rs(feast_rs_bin, repo, tmp_path, entity_df, features=None, service=None, full=False, flight=None):
    """The CLI's result; with `flight`, also fetched through the Flight server by the Feast
    SDK and required to be the same frame (values, dtypes, order)."""
    entities = tmp_path / "entities.parquet"
    out = tmp_path / "out.parquet"
    entity_df.to_parquet(entities)
    cmd = [feast_rs_bin, "-c", repo, "get-historical-features", "--entities", entities, "-o", out]
    cmd += ["--feature-service", service] if service else ["--features", *features]
    if full:
        cmd.append("--full-feature-names")
    proc = run(cmd)
    df = pd.read_parquet(out)
    assert proc.stdout.strip() == f"Wrote {len(df)} rows to {out}"
    if flight is not None:
        feats = flight.get_feature_service(service) if service else features
        remote = flight.get_historical_features(
            entity_df=entity_df.copy(), features=feats, full_feature_names=full
        ).to_df()
        pd.testing.assert_frame_equal(remote, df, check_exact=True)
    return df


def feast_df(repo, store, entity_df, features=None, service=None, full=False):
    yaml = repo / ("feature_store.yaml" if store == "file" else "feature_store_duckdb.yaml")
    fs = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
    feats = fs.get_feature_service(service) if service else features
    # Feast's duckdb store resolves relative source paths against the working directory.
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        return fs.get_historical_features(
            entity_df=entity_df.copy(), features=feats, full_feature_names=full
        ).to_df()
    finally:
        os.chdir(cwd)


def norm(v):
    """A cell as a comparable Python value (None for every kind of null)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(norm(x) for x in v)
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (pd.Timestamp, datetime)):
        ts = pd.Timestamp(v)
        return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).isoformat()
    if isinstance(v, (np.floating, float)):
        return round(float(v), 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def rows(df, key_cols):
    out = {}
    for rec in df.to_dict("records"):
        key = tuple(norm(rec[k]) for k in key_cols)
        assert key not in out, f"duplicate entity row {key}"
        out[key] = {k: norm(v) for k, v in rec.items()}
    return out


def kinds_compatible(a, b):
    """dtypes compatible: same kind, ints with nulls may come back as float, timestamps any unit."""
    ka, kb = np.dtype(a).kind if not hasattr(a, "tz") else "M", np.dtype(b).kind if not hasattr(b, "tz") else "M"
    numeric = {"i", "u", "f"}
    return ka == kb or (ka in numeric and kb in numeric)


def compare(ours, theirs, entity_cols, feature_cols, store):
    assert list(ours.columns) == entity_cols + feature_cols
    assert set(theirs.columns) == set(ours.columns), (store, list(theirs.columns))
    for c in ours.columns:
        if store == "duckdb" and hasattr(ours[c].dtype, "tz") and theirs[c].dtype == object:
            # Feast's duckdb store returns UnixTimestamp features as strings
            # ("2024-05-01 00:00:00.000000000Z"); feast-rs (and the file store) as timestamps.
            theirs[c] = pd.to_datetime(theirs[c], utc=True)
        if ours[c].notna().any() and theirs[c].notna().any():
            assert kinds_compatible(ours[c].dtype, theirs[c].dtype), (store, c, ours[c].dtype, theirs[c].dtype)
    mine, feast = rows(ours, entity_cols), rows(theirs, entity_cols)
    for key, row in feast.items():
        assert key in mine, (store, key)
        assert mine[key] == row, (store, key, mine[key], row)
    missing = set(mine) - set(feast)
    if store == "duckdb":
        assert not missing, f"duckdb returned every entity row; feast-rs has extra {missing}"
    for key in missing:
        # Rows the dask store drops: some view has no feature row in the window.
        assert any(mine[key][f] is None for f in feature_cols), (store, key, mine[key])
    return missing


STORES = ["file", "duckdb"]


@pytest.mark.parametrize("store", STORES)
def test_one_view_ttl_edges_ties_missing_and_null_features(repo, feast_rs_bin, tmp_path, store, flight):
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1001, 1001, 1002, 1002, 1003, 9999, 1001],
            "event_timestamp": [
                T0,  # upper bound inclusive
                T0 + DAY,  # tie on event ts, broken by created
                T0 + 2 * DAY,  # lower bound inclusive (ttl 1d)
                T0 + DAY,  # exactly ttl old
                T0 + DAY + timedelta(seconds=1),  # just outside ttl: null
                T0 + 12 * HOUR,  # feature row with null values
                T0 + HOUR,  # unknown entity: null
                T0 - timedelta(seconds=1),  # before any feature row: null
            ],
        }
    )
    ours = feast_rs(feast_rs_bin, repo, tmp_path, entity_df, ALL_DRIVER_FEATURES, flight=flight)
    theirs = feast_df(repo, store, entity_df, ALL_DRIVER_FEATURES)
    features = [f.split(":")[1] for f in ALL_DRIVER_FEATURES]
    missing = compare(ours, theirs, ["driver_id", "event_timestamp"], features, store)
    # Pinned semantics, whatever the store.
    got = rows(ours, ["driver_id", "event_timestamp"])
    at = lambda d, t: got[(d, norm(t))]
    assert at(1001, T0)["conv_rate"] == 0.1
    assert at(1001, T0 + DAY)["avg_daily_trips"] == 3
    assert at(1001, T0 + 2 * DAY)["name"] == "c"
    assert at(1002, T0 + DAY)["avg_daily_trips"] == 5
    assert at(1002, T0 + DAY + timedelta(seconds=1))["avg_daily_trips"] is None
    assert at(1003, T0 + 12 * HOUR)["conv_rate"] is None
    assert at(1003, T0 + 12 * HOUR)["avg_daily_trips"] == 7
    assert at(9999, T0 + HOUR)["name"] is None
    assert len(ours) == len(entity_df)
    # Input order is kept.
    assert list(ours["driver_id"]) == list(entity_df["driver_id"])
    if store == "file":
        assert missing == {
            (1002, norm(T0 + DAY + timedelta(seconds=1))),
            (1001, norm(T0 - timedelta(seconds=1))),
        }
    # Output types follow the view schema (pandas turns ints with nulls into floats).
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert str(schema.field("conv_rate").type) == "float"
    assert str(schema.field("rating").type) == "int32"
    assert str(schema.field("avg_daily_trips").type) == "int64"
    assert str(schema.field("recent_trips").type) == "list<item: int64>"
    assert str(schema.field("last_seen").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("event_timestamp").type).endswith("tz=UTC]")


@pytest.mark.parametrize("store", STORES)
def test_two_join_keys_unbounded_ttl(repo, feast_rs_bin, tmp_path, store, flight):
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1001, 1001, 1002],
            "customer_id": ["c1", "c1", "c2", "c1"],
            "event_timestamp": [T0 + 5 * DAY, T0 + 400 * DAY, T0, T0 + DAY],
        }
    )
    features = ["customer_driver_affinity:affinity"]
    ours = feast_rs(feast_rs_bin, repo, tmp_path, entity_df, features, full=True, flight=flight)
    theirs = feast_df(repo, store, entity_df, features, full=True)
    compare(
        ours, theirs, ["driver_id", "customer_id", "event_timestamp"],
        ["customer_driver_affinity__affinity"], store,
    )
    assert list(ours["customer_driver_affinity__affinity"].fillna(-1)) == [0.3, 0.4, -1, -1]


@pytest.mark.parametrize("store", STORES)
def test_feature_service_alias_and_join_key_map(repo, feast_rs_bin, tmp_path, store, flight):
    entity_df = pd.DataFrame(
        {"driver": [1001, 1002, 1004], "event_timestamp": [T0 + DAY, T0 + HOUR, T0 + HOUR]}
    )
    ours = feast_rs(
        feast_rs_bin, repo, tmp_path, entity_df, service="driver_activity_v2", full=True, flight=flight
    )
    theirs = feast_df(repo, store, entity_df, service="driver_activity_v2", full=True)
    features = ["dhs__" + f.split(":")[1] for f in ALL_DRIVER_FEATURES]
    compare(ours, theirs, ["driver", "event_timestamp"], features, store)
    assert list(ours["dhs__avg_daily_trips"].fillna(-1)) == [3, 5, -1]


@pytest.mark.parametrize("store", STORES)
def test_several_views_entityless_view_and_extra_columns(repo, feast_rs_bin, tmp_path, store, flight):
    entity_df = pd.DataFrame(
        {
            "label": [1.5, 2.5, 3.5, 4.5],
            "driver_id": [1001, 1002, 1001, 1001],
            "customer_id": ["c1", "c1", "c2", "c1"],
            "event_timestamp": [T0 + HOUR, T0 + DAY, T0 + DAY + HOUR, T0 + 3 * HOUR],
        }
    )
    features = [
        "driver_hourly_stats:avg_daily_trips",
        "global_stats:total",
        "customer_driver_affinity:affinity",
    ]
    ours = feast_rs(feast_rs_bin, repo, tmp_path, entity_df, features, flight=flight)
    theirs = feast_df(repo, store, entity_df, features)
    compare(
        ours, theirs, ["label", "driver_id", "customer_id", "event_timestamp"],
        ["avg_daily_trips", "total", "affinity"], store,
    )
    assert list(ours["total"].fillna(-1)) == [100, 200, 200, -1]
    assert list(ours["avg_daily_trips"]) == [1, 5, 3, 1]
    assert list(ours["affinity"].fillna(-1)) == [0.3, -1, 0.9, 0.3]


def test_bad_requests_fail_clearly(repo, feast_rs_bin, tmp_path):
    entities = tmp_path / "e.parquet"
    pd.DataFrame({"driver_id": [1001], "event_timestamp": [T0]}).to_parquet(entities)
    out = tmp_path / "o.parquet"
    base = [feast_rs_bin, "-c", repo, "get-historical-features", "--entities", entities, "-o", out]
    proc = run(base + ["--features", "nope:x"], check=False)
    assert proc.returncode != 0 and "Feature view nope does not exist" in proc.stderr
    proc = run(base + ["--features", "customer_driver_affinity:affinity"], check=False)
    assert proc.returncode != 0 and "no column customer_id" in proc.stderr
