"""feast-rs's Postgres online store (services/online/src/store/postgres.rs) on the very tables
Feast's PostgreSQLOnlineStore uses (PROTOCOLS.md §6.4).

A fresh database on the PostgreSQL server at 127.0.0.1:5432 (FEAST_RS_TEST_POSTGRES overrides
the server URL) backs copies of tests/compat/feast_repo configured with
`online_store: {type: postgres}`:
- Feast applies, materializes one view and writes another, and `feast-rs serve` must answer every
  `get_online_features` exactly as Feast does locally (through Feast's remote client),
  including requests over both views (Feast 0.67 reads those in one UNION ALL statement);
- feast-rs writes rows (`feast-rs internal online-write --repo`) and Feast must read them;
  the raw rows feast-rs writes (entity_key, feature_name, value, value_text, vector_value,
  event_ts, created_ts) must equal the ones Feast writes for the same data;
- newer wins in feast-rs: it never replaces a row Feast stored with a newer event time;
- `feast-rs apply` creates the same tables and indexes as `feast apply`, in `db_schema`,
  records no infra objects (as Feast), and `feast-rs teardown` drops the project's tables.
The server's TimeZone must be UTC (see the module documentation of postgres.rs). Without a
reachable PostgreSQL the module is skipped, except under CI=true, where it fails.
"""

import json
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pandas as pd
import psycopg
import pytest
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from test_online_server import FEATURES, as_sent_over_json, free_port, write_fresh_data

UTC = timezone.utc
PROJECT = "compat"
VIEW = "driver_hourly_stats"
FRESH = "driver_stats_fresh"
TABLE = f"{PROJECT}_{VIEW}"
SERVER = os.environ.get("FEAST_RS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
ROW_COLUMNS = "entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts"


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
    name = f"feast_rs_compat_{uuid.uuid4().hex}"
    with admin:
        tz = admin.execute("SHOW TimeZone").fetchone()[0]
        assert tz in ("UTC", "Etc/UTC"), f"these tests need a server whose TimeZone is UTC, not {tz}"
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with admin_connect() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sql(database, query, params=()):
    with admin_connect(database) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def pg_repo(tmp, database, name, template="feast_repo", schema="public", **extra):
    repo = copy_repo(template, tmp / name)
    url = urlparse(SERVER)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"] = {
        "type": "postgres",
        "host": url.hostname,
        "port": url.port or 5432,
        "database": database,
        "db_schema": schema,
        "user": url.username or "postgres",
        "password": url.password or "",
        "sslmode": "disable",
        **extra,
    }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return repo


def entity_key(driver_id: int) -> EntityKey:
    return EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=driver_id)])


def ek(driver_id: int) -> bytes:
    return serialize_entity_key(entity_key(driver_id), entity_key_serialization_version=3)


def stamp(ts):
    t = Timestamp()
    t.FromDatetime(ts)
    return {"seconds": t.seconds, "nanos": t.nanos}


def rs_write(feast_rs_bin, repo, rows, view=VIEW):
    """rows: [(driver_id, event_ts, created_ts or None, {feature: Value})]."""
    payload = [
        {
            "entity_key": ek(driver_id).hex(),
            "event_ts": stamp(ts),
            "created_ts": stamp(created) if created is not None else None,
            "features": {name: v.SerializeToString().hex() for name, v in features.items()},
        }
        for driver_id, ts, created, features in rows
    ]
    proc = subprocess.run(
        [str(feast_rs_bin), "internal", "online-write", "--repo", str(repo), "--view", view],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["written"]


def raw_rows(database, driver_id, table=TABLE, schema="public"):
    rows = sql(
        database,
        f'SELECT {ROW_COLUMNS} FROM "{schema}"."{table}" WHERE entity_key = %s ORDER BY feature_name',
        (ek(driver_id),),
    )
    return [tuple(bytes(c) if isinstance(c, memoryview) else c for c in r) for r in rows]


def feast_row(driver_id, at, created=None, **overrides):
    """A one-row frame for `write_to_online_store` (it needs every feature column)."""
    row = {
        "driver_id": [driver_id],
        "conv_rate": pd.Series([0.75], dtype="float32"),
        "acc_rate": [0.5],
        "avg_daily_trips": [7],
        "rating": pd.Series([5], dtype="int32"),
        "active": [True],
        "name": ["feast"],
        "avatar": [b"\x01\x02"],
        "last_seen": [datetime(2024, 2, 2, tzinfo=UTC)],
        "recent_trips": [[4, 5, 6]],
        "scores": [[1.5]],
        "event_timestamp": [at],
        "created": [created or at],
    }
    row.update({k: [v] for k, v in overrides.items()})
    return pd.DataFrame(row)


@pytest.fixture(scope="module")
def served(tmp_path_factory, feast_rs_bin, feast_cli, database):
    tmp = tmp_path_factory.mktemp("postgres_online")
    repo = pg_repo(tmp, database, "server")
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    write_fresh_data(repo, ts)
    run([feast_cli, "apply"], cwd=repo)
    local = FeatureStore(repo_path=str(repo))
    local.materialize(
        start_date=ts - timedelta(hours=1),
        end_date=ts + timedelta(minutes=1),
        feature_views=[VIEW],
    )
    # The pushed view (its batch source's field mapping stops `materialize`): written directly.
    local.write_to_online_store(
        FRESH,
        pd.DataFrame(
            {
                "driver_id": [1001, 1002],
                "conv_rate": pd.Series([0.5, 0.25], dtype="float32"),
                "acc_rate": [0.1, 1.0],
                "event_timestamp": [ts] * 2,
                "created": [ts] * 2,
            }
        ),
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(repo), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "feast-rs feature server listening on" in line, proc.stderr.read()
        client_repo = tmp / "client"
        client_repo.mkdir()
        config = yaml.safe_load((repo / "feature_store.yaml").read_text())
        config["registry"] = str(repo / "data" / "registry.db")
        config["online_store"] = {"type": "remote", "path": f"http://127.0.0.1:{port}"}
        (client_repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
        remote = FeatureStore(repo_path=str(client_repo))
        yield local, remote, repo, ts, database
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("feast-rs serve did not stop within 10 s of SIGTERM")


def both(served, **kwargs):
    local, remote = served[:2]
    want = as_sent_over_json(local.get_online_features(**kwargs).to_dict())
    got = remote.get_online_features(**kwargs).to_dict()
    return want, got


def test_feast_rs_serves_what_feast_materialized(served):
    database = served[4]
    # Feast's own layout, as PROTOCOLS.md §6.4 states it.
    names = [r[0] for r in sql(database, f'SELECT DISTINCT feature_name FROM "{TABLE}" ORDER BY 1')]
    assert names == sorted(f.split(":")[1] for f in FEATURES)
    for rows in ([{"driver_id": 1001}], [{"driver_id": 1002}, {"driver_id": 404}, {"driver_id": 1001}]):
        want, got = both(served, features=FEATURES, entity_rows=rows)
        assert got == want
    assert got["name"] == ["b", None, "a"]
    assert got["scores"] == [[0.2], None, [0.1, 2.0]]
    # Two views in one request: Feast reads them in one UNION ALL statement, feast-rs too.
    rows = [{"driver_id": 1002}, {"driver_id": 1001}, {"driver_id": 404}]
    two_views = [f"{VIEW}:conv_rate", f"{VIEW}:name", f"{FRESH}:acc_rate", f"{FRESH}:conv_rate"]
    want, got = both(served, features=two_views, entity_rows=rows, full_feature_names=True)
    assert got == want
    assert got[f"{FRESH}__acc_rate"] == [1.0, 0.1, None]
    # Past max_batched_result_rows (2048 = 1025 rows x 2 views) both read view by view.
    many = [{"driver_id": 1001 + (i % 3)} for i in range(1025)]
    want, got = both(served, features=two_views, entity_rows=many, full_feature_names=True)
    assert got == want


def test_rows_written_by_feast_rs_are_identical_to_feasts(served, feast_rs_bin):
    local, _, repo, ts, database = served
    at = ts + timedelta(seconds=1, microseconds=123456)
    created = at + timedelta(minutes=1, microseconds=5)
    local.write_to_online_store(VIEW, feast_row(5001, at, created))
    feast_rows = raw_rows(database, 5001)
    assert len(feast_rows) == 10
    by_name = {r[1]: r for r in feast_rows}
    # Feast's value_text: Python's str() of string, int, float and bool values.
    assert by_name["conv_rate"][3] == "0.75"
    assert by_name["avg_daily_trips"][3] == "7"
    assert by_name["active"][3] == "True"
    assert by_name["name"][3] == "feast"
    assert by_name["avatar"][3] is None and by_name["scores"][3] is None
    assert by_name["name"][5] == at and by_name["name"][6] == created
    sql(database, f'DELETE FROM "{TABLE}" WHERE entity_key = %s', (ek(5001),))

    # The same data through feast-rs.
    values = {r[1]: Value.FromString(r[2]) for r in feast_rows}
    assert rs_write(feast_rs_bin, repo, [(5001, at, created, values)]) == 1
    assert raw_rows(database, 5001) == feast_rows


def test_feast_reads_what_feast_rs_writes(served, feast_rs_bin):
    local, remote, repo, ts, database = served
    at = ts + timedelta(minutes=5, microseconds=7)
    values = {
        "conv_rate": Value(float_val=0.125),
        "acc_rate": Value(double_val=2.5),
        "avg_daily_trips": Value(int64_val=42),
        "name": Value(string_val="written by feast-rs"),
        "scores": Value(double_list_val={"val": [1.0, 2.0]}),
    }
    written = rs_write(feast_rs_bin, repo, [(6001, at, None, values), (6002, at, None, {"rating": Value(int32_val=3)})])
    assert written == 2
    rows = [{"driver_id": 6001}, {"driver_id": 6002}, {"driver_id": 404}]
    got = local.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert got["conv_rate"] == [0.125, None, None]
    assert got["acc_rate"] == [2.5, None, None]
    assert got["avg_daily_trips"] == [42, None, None]
    assert got["name"] == ["written by feast-rs", None, None]
    assert got["scores"] == [[1.0, 2.0], None, None]
    assert got["rating"] == [None, 3, None]
    want, served_got = both(served, features=FEATURES, entity_rows=rows)
    assert served_got == want
    # Microseconds kept, as Feast keeps them.
    stored = sql(database, f'SELECT event_ts FROM "{TABLE}" WHERE entity_key = %s', (ek(6001),))
    assert {r[0] for r in stored} == {at}


def test_newer_wins_against_what_feast_stored(served, feast_rs_bin):
    local, _, repo, ts, database = served
    newer, older = ts + timedelta(hours=2), ts + timedelta(minutes=30)
    local.write_to_online_store(VIEW, feast_row(7001, newer, name="feast"))
    assert rs_write(feast_rs_bin, repo, [(7001, older, None, {"name": Value(string_val="old")})]) == 0
    got = local.get_online_features(features=[f"{VIEW}:name"], entity_rows=[{"driver_id": 7001}]).to_dict()
    assert got["name"] == ["feast"]
    # Equal times overwrite (as Feast's upsert does).
    assert rs_write(feast_rs_bin, repo, [(7001, newer, None, {"name": Value(string_val="same")})]) == 1
    got = local.get_online_features(features=[f"{VIEW}:name"], entity_rows=[{"driver_id": 7001}]).to_dict()
    assert got["name"] == ["same"]


def schema_layout(database, schema):
    columns = sql(
        database,
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (schema,),
    )
    indexes = sql(
        database,
        "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes WHERE schemaname = %s "
        "ORDER BY tablename, indexname",
        (f"{schema}.", schema),
    )
    return columns, indexes


def test_apply_and_teardown_with_postgres(tmp_path, feast_rs_bin, feast_cli, database):
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    # Feast applies the Python repository into schema py; feast-rs the same repository
    # declared in YAML into schema rs (both created by the apply).
    py_repo = pg_repo(tmp_path, database, "py_apply", schema="py")
    write_fresh_data(py_repo, ts)
    run([feast_cli, "apply"], cwd=py_repo)
    rs_repo = pg_repo(tmp_path, database, "rs_apply", template="yaml_repo", schema="rs")
    write_fresh_data(rs_repo, ts)
    out = run([feast_rs_bin, "-c", rs_repo, "apply"]).stdout
    assert out.rstrip().endswith("No changes to infrastructure"), out

    py_columns, py_indexes = schema_layout(database, "py")
    rs_columns, rs_indexes = schema_layout(database, "rs")
    # The YAML repository declares a subset of the Python one's views.
    rs_tables = {c[0] for c in rs_columns}
    assert TABLE in rs_tables and rs_tables <= {c[0] for c in py_columns}
    assert rs_columns == [c for c in py_columns if c[0] in rs_tables]
    assert rs_indexes == [i for i in py_indexes if i[0] in rs_tables]
    assert any(i[1] == f"{TABLE}_fts_idx" for i in rs_indexes)  # `name` is a STRING feature
    rs_infra = FeatureStore(repo_path=str(rs_repo)).registry.proto().infra
    py_infra = FeatureStore(repo_path=str(py_repo)).registry.proto().infra
    assert list(rs_infra.infra_objects) == list(py_infra.infra_objects) == []

    store = FeatureStore(repo_path=str(rs_repo))
    store.materialize(start_date=ts - timedelta(hours=1), end_date=ts + timedelta(minutes=1), feature_views=[VIEW])
    assert len(raw_rows(database, 1001, schema="rs")) == 10
    run([feast_rs_bin, "-c", rs_repo, "teardown"])
    left = sql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'rs'")
    assert left == []
    assert schema_layout(database, "py") == (py_columns, py_indexes)
