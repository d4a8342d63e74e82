"""Hive-partitioned file sources through `feast-rs serve-offline`, driven by the Feast SDK's
remote offline store:

- a `FileSource` over a `event_date=YYYY-MM-DD/` directory, applied by Feast: the
  point-in-time join equals Feast's own file (dask) store on the same files;
- the same source declared in feast-rs YAML with `date_partition_column: event_date`
  (Feast's `FileSource` cannot carry it): partitions outside the request's window are never
  opened, so corrupting them changes nothing, while a corrupt partition inside it fails the
  request.
"""

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import run
from feast import FeatureStore
from test_historical_features import remote_client, start_offline_server, stop

MAY_1 = datetime(2024, 5, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)

CONFIG = {
    "project": "hive",
    "provider": "local",
    "registry": "data/registry.db",
    "online_store": {"type": "sqlite", "path": "data/online.db"},
    "offline_store": {"type": "file"},
    "entity_key_serialization_version": 3,
}

PY_DEFS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64

driver = Entity(name="driver", join_keys=["driver_id"])
trips_src = FileSource(name="trips_src", path="data/trips", timestamp_field="event_timestamp")
trips = FeatureView(
    name="trips",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="rate", dtype=Float64)],
    source=trips_src,
)
'''

YAML_DEFS = '''
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - name: trips_src
    type: file
    path: data/trips
    timestamp_field: event_timestamp
    date_partition_column: event_date
feature_views:
  - name: trips
    entities: [driver]
    ttl: 1d
    schema: [{name: rate, dtype: Float64}]
    source: trips_src
'''


def write_partitions(repo):
    """Two drivers, one row each at noon of May 1st..5th, one partition per day."""
    for day in range(5):
        at = MAY_1 + day * DAY + DAY / 2
        table = pa.table(
            {
                "driver_id": pa.array([1001, 1002], pa.int64()),
                "rate": [day + 0.1, day + 0.2],
                "event_timestamp": pa.array([at, at], pa.timestamp("us", tz="UTC")),
            }
        )
        part = repo / "data" / "trips" / f"event_date=2024-05-0{day + 1}"
        part.mkdir(parents=True)
        pq.write_table(table, part / "part-0.parquet")


def make_repo(root, defs_name, defs):
    root.mkdir()
    (root / "data").mkdir()
    (root / "feature_store.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / defs_name).write_text(defs)
    write_partitions(root)
    return root


def corrupt(repo, day):
    (repo / "data" / "trips" / f"event_date=2024-05-0{day}" / "part-0.parquet").write_bytes(b"not parquet")


# May 3rd and 4th at 18:00, ttl 1 day: the window is May 2nd 18:00 .. May 4th 18:00.
ENTITIES = pd.DataFrame(
    {
        "driver_id": [1001, 1002, 1001],
        "event_timestamp": [MAY_1 + 2 * DAY + DAY * 3 / 4, MAY_1 + 3 * DAY + DAY * 3 / 4, MAY_1 + 3 * DAY + DAY * 3 / 4],
    }
)
EXPECTED = [2.1, 3.2, 3.1]


def rates(df):
    return [round(r, 6) for r in df.sort_values(["event_timestamp", "driver_id"], kind="stable")["rate"]]


@pytest.fixture
def servers(tmp_path, feast_rs_bin):
    started = []

    def start(repo):
        proc, port = start_offline_server(feast_rs_bin, repo)
        started.append(proc)
        return remote_client(repo, port, repo.parent / f"{repo.name}_client")

    yield start
    for proc in started:
        stop(proc)


def test_a_partitioned_source_joins_as_feasts_file_store(tmp_path, feast_cli, servers):
    repo = make_repo(tmp_path / "py", "definitions.py", PY_DEFS)
    run([feast_cli, "apply"], cwd=repo)
    remote = servers(repo)
    features = ["trips:rate"]
    ours = remote.get_historical_features(ENTITIES, features).to_df()
    theirs = FeatureStore(repo_path=str(repo)).get_historical_features(ENTITIES, features).to_df()
    assert list(ours.columns) == list(theirs.columns)
    assert rates(ours) == rates(theirs)
    assert sorted(rates(ours)) == sorted(EXPECTED)


def test_partitions_outside_the_window_are_never_opened(tmp_path, feast_rs_bin, servers):
    repo = make_repo(tmp_path / "yaml", "definitions.yaml", YAML_DEFS)
    run([feast_rs_bin, "-c", repo, "apply"])
    remote = servers(repo)
    corrupt(repo, 1)
    corrupt(repo, 5)
    df = remote.get_historical_features(ENTITIES, ["trips:rate"]).to_df()
    assert sorted(rates(df)) == sorted(EXPECTED)
    # A pull (what materialize runs) over May 2nd..4th is pruned the same way.
    from feast.infra.offline_stores.remote import RemoteOfflineStore

    pulled = RemoteOfflineStore.pull_all_from_table_or_query(
        config=remote.config,
        data_source=remote.get_data_source("trips_src"),
        join_key_columns=["driver_id"],
        feature_name_columns=["rate"],
        timestamp_field="event_timestamp",
        created_timestamp_column=None,
        start_date=MAY_1 + DAY,
        end_date=MAY_1 + 4 * DAY - timedelta(seconds=1),
    ).to_df()
    assert len(pulled) == 6

    # Inside the window, a corrupt partition fails the request.
    corrupt(repo, 3)
    with pytest.raises(Exception) as raised:
        remote.get_historical_features(ENTITIES, ["trips:rate"]).to_df()
    assert "event_date=2024-05-03" in str(raised.value) or "arquet" in str(raised.value)
