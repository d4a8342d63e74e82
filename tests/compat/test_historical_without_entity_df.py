"""Retrievals without an entity DataFrame through `feast-rs serve-offline` (the Feast SDK
with `offline_store: {type: remote}`) on file sources:

- `entity_df` given as SQL: the file offline store runs it on DataFusion, where each of the
  project's data sources is a table named after the source. Feast's own file stores cannot
  run SQL, so the reference is Feast's `file` (dask) store given the same rows as a
  DataFrame.
- Feast's non-entity mode, `get_historical_features(features, start_date=, end_date=)`.
  Feast 0.67's stores disagree here (the dask store ignores start_date and cross-joins a
  second view; the duckdb store refuses; the Postgres store returns raw rows). feast-rs
  reduces the request to an ordinary point-in-time join at end_date over every entity key
  with a source row in [start_date, end_date] (as Feast's Spark and BigQuery stores do).
  Where the dask store is consistent (one view, or one view with an entity-less view, and
  no start_date) the answers must equal the dask store's; the other cases pin the
  semantics in the README.
"""

from datetime import datetime, timedelta, timezone
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float32, Int64
from feast.value_type import ValueType
from conftest import run
from test_historical_features import start_offline_server, stop

UTC = timezone.utc
H, D = timedelta(hours=1), timedelta(days=1)
E = datetime(2024, 5, 1, 12, tzinfo=UTC)  # the end_date of every case


def frames():
    c0 = E - 100 * D
    stats = [
        (1001, E - 2 * D, c0, 0.10, 10), (1001, E - 3 * H, c0, 0.11, 11),
        (1001, E - 1 * H, c0, 0.12, 12), (1001, E + 1 * H, c0, 0.13, 13),
        (1002, E - 30 * H, c0, 0.20, 20), (1002, E - 2 * H, E - 2 * H, 0.21, 21),
        (1002, E - 2 * H, E - 1 * H, 0.22, 22), (1003, E - 20 * H, c0, 0.30, 30),
        (1003, E - 10 * H, c0, 0.31, 31), (1004, E - 30 * H, c0, 0.40, 40),
        (1004, E - 3 * D, c0, 0.41, 41), (1005, E + 2 * H, c0, 0.50, 50),
        (1006, E - 24 * H, c0, 0.60, 60), (1006, E, c0, 0.61, 61),
        (1008, E - 24 * H, c0, 0.80, 80),
    ]
    extra = [
        (1001, E - 40 * H, c0, 1.5, 100), (1002, E - 5 * H, c0, 2.5, 200),
        (1004, E - 30 * H, c0, 4.5, 400), (1007, E - 1 * H, c0, 7.5, 700),
    ]
    global_stats = [
        (E - 30 * H, c0, 9000), (E - 5 * H, c0, 9001), (E - 1 * H, c0, 9002),
        (E + 1 * H, c0, 9003),
    ]
    lifetime = [
        (1001, E - 10 * D, c0, 1), (1001, E - 5 * D, c0, 2), (1001, E + 1 * H, c0, 3),
        (1002, E - 100 * D, c0, 4),
    ]
    ts = ["event_timestamp", "created"]
    return {
        "driver_stats": pd.DataFrame(stats, columns=["driver_id", *ts, "conv_rate", "trips_today"]),
        "driver_extra": pd.DataFrame(extra, columns=["driver_id", *ts, "rating", "lifetime_rides"]),
        "global_stats": pd.DataFrame(global_stats, columns=[*ts, "total_trips"]),
        "driver_lifetime": pd.DataFrame(lifetime, columns=["driver_id", *ts, "lifetime_score"]),
    }


ARROW = {
    "driver_id": pa.int64(), "event_timestamp": pa.timestamp("us", tz="UTC"),
    "created": pa.timestamp("us", tz="UTC"), "conv_rate": pa.float32(),
    "trips_today": pa.int64(), "rating": pa.float32(), "lifetime_rides": pa.int64(),
    "total_trips": pa.int64(), "lifetime_score": pa.int64(),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("without_entity_df")
    for name, df in frames().items():
        schema = pa.schema([(c, ARROW[c]) for c in df.columns])
        table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
        pq.write_table(table, root / f"{name}.parquet")
    (root / "feature_store.yaml").write_text(
        "project: without_entity_df\nregistry: registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: online.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )

    def source(name):
        return FileSource(
            name=f"{name}_src", path=str(root / f"{name}.parquet"),
            timestamp_field="event_timestamp", created_timestamp_column="created",
        )

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="driver_stats", entities=[driver], ttl=D, source=source("driver_stats"),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float32),
                Field(name="trips_today", dtype=Int64)],
    )
    extra = FeatureView(
        name="driver_extra", entities=[driver], ttl=2 * D, source=source("driver_extra"),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="rating", dtype=Float32),
                Field(name="lifetime_rides", dtype=Int64)],
    )
    global_stats = FeatureView(
        name="global_stats", entities=[], ttl=D, source=source("global_stats"),
        schema=[Field(name="total_trips", dtype=Int64)],
    )
    lifetime = FeatureView(
        name="driver_lifetime", entities=[driver], ttl=timedelta(0),
        source=source("driver_lifetime"),
        schema=[Field(name="driver_id", dtype=Int64), Field(name="lifetime_score", dtype=Int64)],
    )
    service = FeatureService(name="driver_svc", features=[stats, extra[["rating"]]])
    FeatureStore(repo_path=str(root)).apply([driver, stats, extra, global_stats, lifetime, service])
    return root


@pytest.fixture(scope="module")
def remote(repo, feast_rs_bin, tmp_path_factory):
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        dest = tmp_path_factory.mktemp("client")
        config = yaml.safe_load((repo / "feature_store.yaml").read_text())
        config["registry"] = str(repo / "registry.db")
        config["offline_store"] = {"type": "remote", "host": "127.0.0.1", "port": port}
        (dest / "feature_store.yaml").write_text(yaml.safe_dump(config))
        yield FeatureStore(repo_path=str(dest))
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def dask(repo):
    return FeatureStore(repo_path=str(repo))


def table(df):
    """Rows sorted by every column, as plain Python values (NaN/NA as None)."""
    out = []
    for row in df.astype(object).itertuples(index=False):
        out.append(tuple(None if (v is None or v is pd.NA or (isinstance(v, float) and v != v))
                         else round(v, 6) if isinstance(v, float) else v for v in row))
    return sorted(out, key=repr)


def assert_same(ours, theirs):
    assert list(ours.columns) == list(theirs.columns)
    assert table(ours) == table(theirs), f"\nfeast-rs:\n{ours}\nFeast:\n{theirs}"


STATS = ["driver_stats:conv_rate", "driver_stats:trips_today"]


def test_entity_df_sql_runs_on_the_data_sources(remote, dask):
    sql = (
        "SELECT DISTINCT driver_id, event_timestamp + INTERVAL '30 minutes' AS event_timestamp "
        "FROM driver_stats_src WHERE driver_id IN (1001, 1002, 1005) "
        "ORDER BY driver_id, event_timestamp"
    )
    ours = remote.get_historical_features(entity_df=sql, features=STATS).to_df()
    stats = frames()["driver_stats"]
    entities = stats[stats.driver_id.isin([1001, 1002, 1005])][["driver_id", "event_timestamp"]]
    entities = entities.assign(
        event_timestamp=entities.event_timestamp + timedelta(minutes=30)
    ).drop_duplicates()
    theirs = dask.get_historical_features(entity_df=entities, features=STATS).to_df()
    assert len(ours) == len(entities) == 7
    # dask drops entity rows without a feature row in the window (none here) and returns
    # the timestamp column first.
    assert_same(ours[theirs.columns], theirs)


def test_entity_df_sql_errors_are_clear(remote):
    with pytest.raises(Exception) as e:
        remote.get_historical_features(
            entity_df="SELECT driver_id, event_timestamp FROM no_such_source", features=STATS
        ).to_df()
    assert "no_such_source" in str(e.value) and "data sources" in str(e.value)
    with pytest.raises(Exception) as e:
        remote.get_historical_features(
            entity_df="DROP TABLE driver_stats_src", features=STATS
        ).to_df()
    assert "entity_df_sql" in str(e.value)
    # The source is still there.
    df = remote.get_historical_features(
        entity_df="SELECT 1001 AS driver_id, TIMESTAMP '2024-05-01T12:00:00Z' AS event_timestamp",
        features=STATS,
    ).to_df()
    assert df.conv_rate.tolist() == [pytest.approx(0.12)]


@pytest.mark.parametrize(
    "features",
    [
        STATS,
        ["driver_stats:conv_rate", "global_stats:total_trips"],
        ["driver_lifetime:lifetime_score"],
    ],
    ids=["one-view", "with-entityless-view", "ttl-0"],
)
@pytest.mark.parametrize("full", [False, True])
def test_end_date_only_equals_feasts_file_store(remote, dask, features, full):
    ours = remote.get_historical_features(
        features=features, end_date=E, full_feature_names=full
    ).to_df()
    theirs = dask.get_historical_features(
        features=features, end_date=E, full_feature_names=full
    ).to_df()
    if features == ["driver_lifetime:lifetime_score"]:
        # ttl 0: the default window is end_date - 30 days; 1002's only row is older, so
        # feast-rs has no key for it, where dask (which ignores the window) returns it.
        theirs = theirs[theirs.driver_id != 1002]
    assert_same(ours, theirs)
    assert (ours.event_timestamp == E).all()
    assert str(ours.event_timestamp.dtype) == "datetime64[ns, UTC]"


def test_start_date_picks_the_entities(remote):
    # Drivers with a row in [E-6h, E]: 1001 (E-3h, E-1h), 1002 (E-2h) and 1006 (E); each
    # gets its latest row at or before E within the ttl; equal event timestamps go to the
    # later created timestamp.
    df = remote.get_historical_features(features=STATS, start_date=E - 6 * H, end_date=E).to_df()
    assert list(df.columns) == ["event_timestamp", "driver_id", "conv_rate", "trips_today"]
    assert table(df.drop(columns="event_timestamp")) == [
        (1001, 0.12, 12), (1002, 0.22, 22), (1006, 0.61, 61),
    ]
    # A key active in the window whose latest row is older than E - ttl gets nulls (1004).
    df = remote.get_historical_features(features=STATS, start_date=E - 36 * H, end_date=E).to_df()
    assert table(df.drop(columns="event_timestamp")) == [
        (1001, 0.12, 12), (1002, 0.22, 22), (1003, 0.31, 31), (1004, None, None),
        (1006, 0.61, 61), (1008, 0.8, 80),
    ]


def test_several_views_join_on_their_keys(remote):
    # The union of both views' keys with a row in the window (start: E - the longest ttl),
    # each joined point-in-time on driver_id (the dask store cross-joins the second view).
    for features in (
        ["driver_stats:conv_rate", "driver_stats:trips_today", "driver_extra:rating",
         "driver_extra:lifetime_rides"],
    ):
        df = remote.get_historical_features(features=features, end_date=E).to_df()
        assert list(df.columns) == [
            "event_timestamp", "driver_id", "conv_rate", "trips_today", "rating", "lifetime_rides",
        ]
        assert table(df.drop(columns="event_timestamp")) == sorted([
            (1001, 0.12, 12, 1.5, 100), (1002, 0.22, 22, 2.5, 200),
            (1003, 0.31, 31, None, None), (1004, None, None, 4.5, 400),
            (1006, 0.61, 61, None, None), (1007, None, None, 7.5, 700),
            (1008, 0.8, 80, None, None),
        ], key=repr)
    service = remote.get_feature_service("driver_svc")
    df = remote.get_historical_features(features=service, end_date=E, full_feature_names=True).to_df()
    assert list(df.columns) == [
        "event_timestamp", "driver_id", "driver_stats__conv_rate", "driver_stats__trips_today",
        "driver_extra__rating",
    ]
    assert len(df) == 7


def test_a_window_without_rows_gives_no_rows(remote):
    df = remote.get_historical_features(features=STATS, end_date=E - 10 * D).to_df()
    assert len(df) == 0
    assert list(df.columns) == ["event_timestamp", "driver_id", "conv_rate", "trips_today"]
    # Neither date: end_date is now (years after the data), so nothing is in the window.
    df = remote.get_historical_features(features=STATS).to_df()
    assert len(df) == 0


def test_the_cli_gives_the_servers_answers(repo, remote, feast_rs_bin, tmp_path):
    features = ["driver_stats:conv_rate", "driver_extra:rating"]
    out = tmp_path / "out.parquet"
    run([feast_rs_bin, "-c", repo, "get-historical-features", "--start-date",
         (E - 36 * H).isoformat(), "--end-date", "2024-05-01T12:00:00", "--features", *features,
         "-o", out])
    theirs = remote.get_historical_features(
        features=features, start_date=E - 36 * H, end_date=E
    ).to_df()
    pd.testing.assert_frame_equal(pd.read_parquet(out), theirs, check_exact=True)

    sql = "SELECT DISTINCT driver_id, event_timestamp FROM driver_extra_src ORDER BY driver_id"
    run([feast_rs_bin, "-c", repo, "get-historical-features", "--entity-sql", sql,
         "--features", *features, "-o", out])
    theirs = remote.get_historical_features(entity_df=sql, features=features).to_df()
    pd.testing.assert_frame_equal(pd.read_parquet(out), theirs, check_exact=True)
    assert len(theirs) == 4
