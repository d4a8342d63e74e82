"""Postgres data sources in feast-rs's offline engine (services/offline/src/postgres/)
against Feast's own postgres offline store, on the same tables.

A fresh database on the PostgreSQL server at 127.0.0.1:5432 (FEAST_RS_TEST_POSTGRES overrides
the server URL) holds a feature table and an entity table. One repository, applied by Feast,
says `offline_store: {type: postgres}` and defines a `PostgreSQLSource` view:
- Feast's `PostgreSQLOfflineStore` (the repository as is) computes the reference results;
- `feast-rs serve-offline` runs on the same repository, and a copy of it whose offline store is
  `{type: remote}` sends the Feast SDK's requests to it over Flight.
Both must agree on get_historical_features with an entity DataFrame and with an entity SQL
string, on the materialization pulls, on column listing, and on `materialize` (the online
features both materializations leave behind). Differences of Feast's store are asserted
explicitly where they show (see `feast_quirks`). Without a reachable PostgreSQL the module is
skipped, except under CI=true, where it fails.
"""

import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pandas as pd
import psycopg
import pytest
import yaml

from conftest import run
from feast import FeatureStore
from feast.errors import FeastError
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
)
from feast.infra.offline_stores.remote import RemoteOfflineStore
from test_historical_features import norm, start_offline_server, stop

UTC = timezone.utc
SERVER = os.environ.get("FEAST_RS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
T0 = datetime(2024, 5, 1, tzinfo=UTC)
H = timedelta(hours=1)

DEFS = '''
from datetime import timedelta

from feast import Entity, FeatureView, Field
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.types import Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"])

driver_pg = PostgreSQLSource(
    name="driver_pg",
    table="driver_stats",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly = FeatureView(
    name="driver_hourly",
    entities=[driver],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="conv_rate", dtype=Float64),
        Field(name="acc_rate", dtype=Float32),
        Field(name="trips", dtype=Int64),
        Field(name="label", dtype=String),
    ],
    source=driver_pg,
    online=True,
)

tied_pg = PostgreSQLSource(
    name="tied_pg",
    query="SELECT driver_id, event_timestamp, trips FROM driver_stats",
    timestamp_field="event_timestamp",
)

driver_tied = FeatureView(
    name="driver_tied",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="trips", dtype=Int64)],
    source=tied_pg,
    online=False,
)

trips_pg = PostgreSQLSource(
    name="trips_pg",
    query="SELECT driver_id, event_timestamp, trips * 10 AS trips10 FROM driver_stats "
    "WHERE label IS DISTINCT FROM 'b'",
    timestamp_field="event_timestamp",
)

driver_tens = FeatureView(
    name="driver_tens",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="trips10", dtype=Int64)],
    source=trips_pg,
    online=True,
)
'''

# Driver 1001 has two rows at T0+1h: the later created timestamp wins (trips 3).
DATA = """
CREATE TABLE driver_stats (
    driver_id bigint, event_timestamp timestamptz, created timestamptz,
    conv_rate double precision, acc_rate real, trips bigint, label text
);
INSERT INTO driver_stats VALUES
    (1001, %(t0)s,           %(t0)s,                0.1, 0.5, 1, 'a'),
    (1001, %(t0)s + INTERVAL '1h',    %(t0)s + INTERVAL '90 min',     0.3, 0.7, 3, 'c'),
    (1001, %(t0)s + INTERVAL '1h',    %(t0)s + INTERVAL '1h',         0.2, 0.6, 2, 'b'),
    (1002, %(t0)s - INTERVAL '1h',    %(t0)s - INTERVAL '1h',         0.5, NULL, 5, NULL),
    (1003, %(t0)s + INTERVAL '3h',    %(t0)s + INTERVAL '3h',         NULL, 0.9, 7, 'z');
CREATE TABLE entity_rows (driver_id bigint, event_timestamp timestamptz, order_id text);
INSERT INTO entity_rows VALUES
    (1001, %(t0)s + INTERVAL '2h',    'o1'),
    (1001, %(t0)s + INTERVAL '30 min', 'o2'),
    (1002, %(t0)s + INTERVAL '30 min', 'o3'),
    (1002, %(t0)s + INTERVAL '2h',    'o4'),
    (1003, %(t0)s + INTERVAL '3h',    'o5'),
    (1004, %(t0)s,           'o6');
"""

FEATURES = [
    "driver_hourly:conv_rate",
    "driver_hourly:acc_rate",
    "driver_hourly:trips",
    "driver_hourly:label",
    "driver_tens:trips10",
]


def admin_connect(dbname="postgres"):
    return psycopg.connect(f"{SERVER}/{dbname}", autocommit=True, connect_timeout=5)


@pytest.fixture(scope="module")
def database():
    try:
        admin = admin_connect()
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {SERVER} is unreachable under CI=true: {e}")
        pytest.skip(f"PostgreSQL at {SERVER} is unreachable: {e}")
    name = f"feast_rs_offline_compat_{uuid.uuid4().hex}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        with admin_connect(name) as conn:
            conn.execute(DATA.replace("%(t0)s", "TIMESTAMPTZ '2024-05-01 00:00:00+00'"))
        yield name
    finally:
        with admin_connect() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def offline_config(database):
    url = urlparse(SERVER)
    return {
        "type": "postgres",
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "database": database,
        "db_schema": "public",
        "user": url.username or "postgres",
        "password": url.password or "",
        "sslmode": "disable",
    }


@pytest.fixture(scope="module")
def stores(tmp_path_factory, database, feast_rs_bin, feast_cli):
    """(Feast's FeatureStore on Postgres, the remote-client FeatureStore, the repo)."""
    repo = tmp_path_factory.mktemp("offline_pg") / "repo"
    (repo / "data").mkdir(parents=True)
    config = {
        "project": "pgcompat",
        "provider": "local",
        "registry": "data/registry.db",
        "online_store": {"type": "sqlite", "path": "data/online.db"},
        "offline_store": offline_config(database),
        "entity_key_serialization_version": 3,
    }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    (repo / "defs.py").write_text(DEFS)
    run([feast_cli, "apply"], cwd=repo)
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        client = repo.parent / "client"
        (client / "data").mkdir(parents=True)
        # The client's own online store, with the tables Feast's apply created (empty); one
        # more copy for test_feast_rs_materialize_from_postgres.
        shutil.copy(repo / "data" / "online.db", client / "data" / "online.db")
        shutil.copy(repo / "data" / "online.db", repo.parent / "empty_online.db")
        remote_config = dict(
            config,
            registry=str(repo / "data" / "registry.db"),
            offline_store={"type": "remote", "host": "127.0.0.1", "port": port},
        )
        (client / "feature_store.yaml").write_text(yaml.safe_dump(remote_config))
        yield FeatureStore(repo_path=str(repo)), FeatureStore(repo_path=str(client)), repo
    finally:
        stop(proc)


def records(df, keys):
    df = df[sorted(df.columns)].sort_values(keys).reset_index(drop=True)
    return [{k: norm(v) for k, v in r.items()} for r in df.to_dict("records")]


def entity_df():
    rows = [
        (1001, T0 + 2 * H),  # both T0+1h rows: created wins (trips 3)
        (1001, T0 + 0.5 * H),  # the T0 row
        (1002, T0 + 0.5 * H),  # T0-1h, inside the 2h ttl
        (1002, T0 + 2 * H),  # T0-1h is outside the ttl: nulls
        (1003, T0 + 3 * H),  # exactly at the event time: included
        (1004, T0),  # unknown driver
    ]
    return pd.DataFrame(
        {
            "driver_id": [r[0] for r in rows],
            "event_timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "order_id": [f"o{i + 1}" for i in range(len(rows))],
        }
    )


def feast_quirks(ours, theirs):
    """The columns whose dtypes differ. Feast's postgres store returns every timestamp with
    its UTC zone dropped (it types its result with `pg_type_code_to_arrow`, which maps
    timestamptz to a naive `timestamp[us]`); feast-rs returns UTC timestamps, as all its
    stores do. Every other dtype is the same. Values are compared after `norm` (naive
    timestamps taken as UTC)."""
    for col in ours.columns:
        o, t = str(ours[col].dtype), str(theirs[col].dtype)
        if o != t:
            yield col, o, t


def check_same(ours, theirs, keys):
    assert sorted(ours.columns) == sorted(theirs.columns)
    assert len(ours) == len(theirs)
    assert records(ours, keys) == records(theirs, keys)
    for col, o, t in feast_quirks(ours, theirs):
        # The only dtype differences allowed: the time zone of timestamps.
        assert o.startswith("datetime64") and t.startswith("datetime64"), (col, o, t)
        assert "UTC" in o, (col, o, t)


def test_entity_dataframe_equals_feasts_postgres_store(stores):
    feast, remote, _ = stores
    theirs = feast.get_historical_features(entity_df(), FEATURES).to_df()
    ours = remote.get_historical_features(entity_df(), FEATURES).to_df()
    check_same(ours, theirs, ["order_id"])
    row = ours.set_index("order_id").loc["o1"]
    assert row["trips"] == 3 and row["label"] == "c" and row["trips10"] == 30
    assert pd.isna(ours.set_index("order_id").loc["o4"]["conv_rate"])


def test_entity_sql_equals_feasts_postgres_store(stores):
    feast, remote, _ = stores
    query = "SELECT driver_id, event_timestamp, order_id FROM entity_rows"
    theirs = feast.get_historical_features(query, FEATURES).to_df()
    ours = remote.get_historical_features(query, FEATURES).to_df()
    check_same(ours, theirs, ["order_id"])
    # Same answers as the DataFrame whose rows the table holds.
    from_df = remote.get_historical_features(entity_df(), FEATURES).to_df()
    assert records(ours, ["order_id"]) == records(from_df, ["order_id"])


def test_bad_entity_sql_is_a_clear_error(stores):
    _, remote, _ = stores
    with pytest.raises(FeastError) as e:
        remote.get_historical_features("SELECT * FROM no_such_table", FEATURES).to_df()
    assert "no_such_table" in str(e.value)


PULL = dict(
    join_key_columns=["driver_id"],
    feature_name_columns=["conv_rate", "trips", "label"],
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)


@pytest.mark.parametrize("start,end", [(T0 - H, T0 + 4 * H), (T0, T0 + H), (T0 + 5 * H, T0 + 6 * H)])
def test_pulls_equal_feasts_postgres_store(stores, start, end):
    feast, remote, _ = stores
    source = feast.get_data_source("driver_pg")
    args = dict(PULL, data_source=source, start_date=start, end_date=end)
    for api in ("pull_latest_from_table_or_query", "pull_all_from_table_or_query"):
        theirs = getattr(PostgreSQLOfflineStore, api)(config=feast.config, **args).to_df()
        ours = getattr(RemoteOfflineStore, api)(config=remote.config, **args).to_df()
        keys = ["driver_id", "event_timestamp", "created"]
        check_same(ours, theirs, keys)


def test_column_listing_equals_feasts(stores):
    feast, remote, _ = stores
    for name in ("driver_pg", "trips_pg"):
        source = feast.get_data_source(name)
        theirs = list(source.get_table_column_names_and_types(feast.config))
        ours = list(
            RemoteOfflineStore.get_table_column_names_and_types_from_data_source(
                RemoteOfflineStore(), remote.config, source
            )
        )
        assert ours == theirs


def test_materialize_from_postgres_equals_feasts(stores):
    feast, remote, _ = stores
    start, end = T0 - 2 * H, T0 + 4 * H
    online = {}
    for name, fs in (("theirs", feast), ("ours", remote)):
        fs.materialize(start_date=start, end_date=end, feature_views=["driver_hourly", "driver_tens"])
        online[name] = fs.get_online_features(
            features=FEATURES, entity_rows=[{"driver_id": d} for d in (1001, 1002, 1003, 1004)]
        ).to_dict()
    assert online["ours"] == online["theirs"]
    assert online["ours"]["trips"] == [3, 5, 7, None]


def test_event_time_ties_without_created_column(stores):
    """Two feature rows with one event timestamp and no created column: Feast's postgres
    store returns the entity row once per tied feature row (its `__cleaned` step joins back
    on the event timestamp only); feast-rs returns every entity row exactly once, with one
    of the tied rows' values."""
    feast, remote, _ = stores
    entity = pd.DataFrame(
        {"driver_id": [1001], "event_timestamp": pd.to_datetime([T0 + 2 * H], utc=True)}
    )
    theirs = feast.get_historical_features(entity, ["driver_tied:trips"]).to_df()
    ours = remote.get_historical_features(entity, ["driver_tied:trips"]).to_df()
    assert sorted(theirs["trips"]) == [2, 3]
    assert len(ours) == 1 and ours["trips"][0] in (2, 3)


def test_cli_entity_sql(stores, feast_rs_bin, tmp_path):
    """`feast-rs get-historical-features --entity-sql` on the Postgres repository gives the
    Flight server's frame."""
    _, remote, repo = stores
    query = "SELECT driver_id, event_timestamp, order_id FROM entity_rows"
    out = tmp_path / "out.parquet"
    features = [f for f in FEATURES]
    run([feast_rs_bin, "-c", repo, "get-historical-features", "--entity-sql", query, "--features", *features, "-o", out])
    cli = pd.read_parquet(out)
    flight = remote.get_historical_features(query, FEATURES).to_df()
    assert records(cli, ["order_id"]) == records(flight, ["order_id"])
    assert len(cli) == 6


def test_feast_rs_materialize_from_postgres(stores, feast_rs_bin, tmp_path):
    """`feast-rs materialize` on a copy of the repository (its own registry and online
    store) pulls from Postgres itself and leaves the online features Feast's leaves."""
    feast, _, repo = stores
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    # An online store nothing was materialized into yet.
    shutil.copy(repo.parent / "empty_online.db", copy / "data" / "online.db")
    start, end = T0 - 2 * H, T0 + 4 * H
    rows = [{"driver_id": d} for d in (1001, 1002, 1003, 1004)]
    empty = FeatureStore(repo_path=str(copy)).get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert empty["trips"] == [None] * 4
    run([feast_rs_bin, "-c", copy, "materialize", start.isoformat(), end.isoformat(),
         "-v", "driver_hourly", "-v", "driver_tens"])
    ours = FeatureStore(repo_path=str(copy)).get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    feast.materialize(start_date=start, end_date=end, feature_views=["driver_hourly", "driver_tens"])
    theirs = feast.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert ours == theirs
    assert ours["trips10"] == [30, 50, 70, None]


YAML_DEFS = """
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - {name: driver_pg, type: postgres, table: driver_stats, timestamp_field: event_timestamp,
     created_timestamp_column: created}
feature_views:
  - name: driver_hourly
    entities: [driver]
    ttl: 2h
    schema:
      - {name: conv_rate, dtype: Float64}
      - {name: trips, dtype: Int64}
    source: driver_pg
"""


def test_doctor_checks_postgres_sources(stores, feast_rs_bin, tmp_path):
    """`feast-rs doctor` on the repository's feast-rs (YAML) definitions describes each
    Postgres source in the database, and fails naming the source when a column is missing
    or the database cannot be read."""
    _, _, repo = stores
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    (copy / "defs.py").unlink()
    (copy / "defs.yaml").write_text(YAML_DEFS)
    ok = run([feast_rs_bin, "-c", copy, "doctor"], check=False)
    assert "1 Postgres source(s) readable with the columns their views need" in ok.stdout, ok.stdout
    (copy / "defs.yaml").write_text(YAML_DEFS.replace("name: trips", "name: tripz"))
    missing = run([feast_rs_bin, "-c", copy, "doctor"], check=False)
    assert missing.returncode == 1
    assert "Postgres source driver_pg has no column tripz" in missing.stdout, missing.stdout
    (copy / "defs.yaml").write_text(YAML_DEFS)
    config = yaml.safe_load((copy / "feature_store.yaml").read_text())
    config["offline_store"]["database"] = "feast_rs_no_such_database"
    (copy / "feature_store.yaml").write_text(yaml.safe_dump(config))
    bad = run([feast_rs_bin, "-c", copy, "doctor"], check=False)
    assert bad.returncode == 1
    assert "Postgres source driver_pg" in bad.stdout and "feast_rs_no_such_database" in bad.stdout, bad.stdout
