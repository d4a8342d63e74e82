"""feast-rs's SQLite online store (services/online) on the very file Feast's SQLite online store uses.

Feast materializes tests/compat/feast_repo into data/online.db and feast-rs must read back
exactly what `FeatureStore.get_online_features` returns (values, event timestamps, NOT_FOUND);
feast-rs writes rows and Feast must read them; rows feast-rs writes must be byte-identical to
Feast's and tables it creates structurally identical. feast-rs is driven through the hidden test hook
`feast-rs internal online-read|online-write|online-update` (crates/cli/src/online_hook.rs).

Timestamps are stored as epoch seconds evaluated in the host's time zone by Feast; these tests
assume a UTC host, as CI is (PROTOCOLS.md §6.3).
"""

import json
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from conftest import copy_repo, run
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, Value

UTC = timezone.utc
PROJECT = "compat"
VIEW = "driver_hourly_stats"
FEATURES = [
    "conv_rate",
    "acc_rate",
    "avg_daily_trips",
    "rating",
    "active",
    "name",
    "avatar",
    "last_seen",
    "recent_trips",
    "scores",
]


def entity_key(driver_id: int) -> EntityKey:
    return EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=driver_id)])


def key_hex(driver_id: int) -> str:
    return serialize_entity_key(entity_key(driver_id), entity_key_serialization_version=3).hex()


def rs_read(feast_rs_bin, db, ids, features=FEATURES, view=VIEW):
    out = run(
        [
            feast_rs_bin,
            "internal",
            "online-read",
            "--db",
            db,
            "--project",
            PROJECT,
            "--view",
            view,
            "--features",
            ",".join(features),
            "--entity-keys-hex",
            ",".join(key_hex(i) for i in ids),
        ]
    ).stdout
    rows = json.loads(out)
    return [
        None
        if r is None
        else {
            "event_ts": r["event_ts"]["seconds"],
            "values": [None if v is None else Value.FromString(bytes.fromhex(v)) for v in r["values"]],
        }
        for r in rows
    ]


def rs_write(feast_rs_bin, db, rows, view=VIEW):
    """rows: [(driver_id, {feature: Value}, event_ts datetime, created_ts datetime|None)]"""

    def ts(dt):
        if dt is None:
            return None
        secs = dt.timestamp()
        return {"seconds": int(secs // 1), "nanos": dt.microsecond * 1000}

    body = [
        {
            "entity_key": key_hex(i),
            "features": {name: v.SerializeToString().hex() for name, v in values.items()},
            "event_ts": ts(event_ts),
            "created_ts": ts(created_ts),
        }
        for i, values, event_ts, created_ts in rows
    ]
    proc = subprocess.run(
        [str(feast_rs_bin), "internal", "online-write", "--db", str(db), "--project", PROJECT, "--view", view],
        input=json.dumps(body),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["written"]


def feast_read(store, ids, features=FEATURES, view=VIEW):
    """Feast's answer in the shape of rs_read: None when every feature is NOT_FOUND."""
    resp = store.get_online_features(
        features=[f"{view}:{f}" for f in features], entity_rows=[{"driver_id": i} for i in ids]
    ).proto
    column = {name: n for n, name in enumerate(resp.metadata.feature_names.val)}
    rows = []
    for r in range(len(ids)):
        vectors = [resp.results[column[f]] for f in features]
        statuses = [v.statuses[r] for v in vectors]
        if all(s == FieldStatus.NOT_FOUND for s in statuses):
            assert all(v.values[r] == Value() for v in vectors)
            rows.append(None)
            continue
        stamps = {v.event_timestamps[r].seconds for v in vectors}
        assert len(stamps) == 1, stamps
        assert all(v.event_timestamps[r].nanos == 0 for v in vectors)
        rows.append(
            {
                "event_ts": stamps.pop(),
                "values": [v.values[r] if s != FieldStatus.NOT_FOUND else None for v, s in zip(vectors, statuses)],
            }
        )
    return rows


def provider_write(store, rows, view=VIEW):
    """Feast's own online_write_batch (what materialization calls) with partial rows allowed."""
    fv = store.get_feature_view(view)
    data = [(entity_key(i), values, event_ts, created_ts) for i, values, event_ts, created_ts in rows]
    store._get_provider().online_write_batch(store.config, fv, data, None)


@pytest.fixture
def materialized(tmp_path, feast_cli):
    repo = copy_repo("feast_repo", tmp_path)
    run([feast_cli, "apply"], cwd=repo)
    store = FeatureStore(repo_path=str(repo))
    # Only driver_hourly_stats: Feast 0.67 cannot materialize driver_stats_fresh (its push
    # source's batch source has a field_mapping the local compute engine does not apply).
    store.materialize(
        start_date=datetime(2024, 4, 30, tzinfo=UTC),
        end_date=datetime(2024, 5, 2, tzinfo=UTC),
        feature_views=[VIEW],
    )
    return store, repo / "data" / "online.db"


def test_feast_rs_reads_what_feast_materialized(materialized, feast_rs_bin):
    store, db = materialized
    ids = [1001, 404, 1002, 1001]
    got = rs_read(feast_rs_bin, db, ids)
    assert got == feast_read(store, ids)
    assert got[1] is None
    assert got[0]["event_ts"] == int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
    assert got[0]["values"][FEATURES.index("name")] == Value(string_val="a")
    assert got[2]["values"][FEATURES.index("recent_trips")] == Value(int64_list_val=Int64List(val=[3]))
    # A subset, in another order, plus a feature the view never stored.
    subset = ["scores", "conv_rate"]
    assert rs_read(feast_rs_bin, db, [1002], subset) == feast_read(store, [1002], subset)
    assert rs_read(feast_rs_bin, db, [1002], ["nope"]) == [{"event_ts": got[2]["event_ts"], "values": [None]}]
    # A view whose table exists but was never materialized: everything NOT_FOUND.
    assert rs_read(feast_rs_bin, db, [1001], ["acc_rate"], view="driver_stats_fresh") == [None]


def test_feast_reads_what_feast_rs_wrote(materialized, feast_rs_bin):
    store, db = materialized
    t1 = datetime(2024, 5, 3, 12, 30, 15, 750000, tzinfo=UTC)
    new_values = {
        "conv_rate": Value(float_val=0.25),
        "acc_rate": Value(double_val=0.75),
        "avg_daily_trips": Value(int64_val=9),
        "rating": Value(int32_val=5),
        "active": Value(bool_val=True),
        "name": Value(string_val="zoë"),
        "avatar": Value(bytes_val=b"\x00\xff"),
        "last_seen": Value(unix_timestamp_val=1714521600),
        "recent_trips": Value(int64_list_val=Int64List(val=[7, 8])),
        "scores": Value(double_list_val=DoubleList(val=[0.5, 1.5])),
    }
    written = rs_write(
        feast_rs_bin,
        db,
        [
            (1001, new_values, t1, t1),  # newer than the materialized row: replaces it
            (3001, {"name": Value(string_val="new")}, t1, None),  # a new entity, one feature
            (1002, {"name": Value(string_val="stale")}, t1 - timedelta(days=30), None),  # older: skipped
        ],
    )
    assert written == 2
    ids = [1001, 3001, 1002, 404]
    feast_rows = feast_read(store, ids)
    assert feast_rows[0] == {"event_ts": int(t1.timestamp()), "values": [new_values[f] for f in FEATURES]}
    assert feast_rows[1]["values"][FEATURES.index("name")] == Value(string_val="new")
    assert feast_rows[1]["values"][FEATURES.index("conv_rate")] is None
    assert feast_rows[2]["values"][FEATURES.index("name")] == Value(string_val="b")
    assert feast_rows[3] is None
    assert rs_read(feast_rs_bin, db, ids) == feast_rows


def test_rows_are_byte_identical_and_tables_alike(materialized, feast_rs_bin, tmp_path):
    store, db = materialized
    t = datetime(2024, 6, 1, 8, 0, 0, 500000, tzinfo=UTC)
    created = datetime(2024, 6, 1, 9, 0, 0, tzinfo=UTC)
    values = {
        "conv_rate": Value(float_val=0.1),
        "acc_rate": Value(double_val=1e16),
        "avg_daily_trips": Value(int64_val=-3),
        "active": Value(bool_val=False),
        "name": Value(string_val="x"),
        "avatar": Value(bytes_val=b"b"),
        "recent_trips": Value(int64_list_val=Int64List(val=[1])),
    }
    provider_write(store, [(5001, values, t, created), (5002, values, t, None)])
    assert rs_write(feast_rs_bin, db, [(6001, values, t, created), (6002, values, t, None)]) == 2

    conn = sqlite3.connect(db)

    def rows(driver_id):
        return conn.execute(
            "SELECT feature_name, value, value_text, vector_value, typeof(event_ts), event_ts, "
            "typeof(created_ts), created_ts FROM compat_driver_hourly_stats WHERE entity_key = ? "
            "ORDER BY feature_name",
            (bytes.fromhex(key_hex(driver_id)),),
        ).fetchall()

    assert rows(5001) and rows(6001) == rows(5001)
    assert rows(6002) == rows(5002)

    # A table feast-rs creates has the structure of Feast's. (Feast itself has two DDL texts:
    # `feast apply` creates tables through SqliteTable, unquoted and multi-line, while
    # SqliteOnlineStore.update quotes the names on one line; feast-rs uses the latter.)
    other = tmp_path / "rs" / "online.db"
    run([feast_rs_bin, "internal", "online-update", "--db", other, "--project", PROJECT, "--keep", VIEW])

    def schema(path):
        table = f"{PROJECT}_{VIEW}"
        c = sqlite3.connect(path)
        try:
            indexes = sorted(c.execute(f'PRAGMA index_list("{table}")').fetchall(), key=lambda r: r[1])
            return {
                "columns": c.execute(f'PRAGMA table_info("{table}")').fetchall(),
                "indexes": [(i[1:], c.execute(f'PRAGMA index_info("{i[1]}")').fetchall()) for i in indexes],
            }
        finally:
            c.close()

    assert schema(other) == schema(db)
    # ... and Feast reads and writes it.
    feast_side = FeatureStore(repo_path=str(store.repo_path))
    feast_side.config.online_store.path = str(other)
    provider_write(feast_side, [(7001, {"name": Value(string_val="ok")}, t, None)])
    assert rs_read(feast_rs_bin, other, [7001], ["name"]) == [
        {"event_ts": int(t.timestamp()), "values": [Value(string_val="ok")]}
    ]


def test_event_timestamp_when_features_were_written_at_different_times(materialized, feast_rs_bin):
    """Feast reports the event_ts of the entity's last row in its scan; feast-rs does the same."""
    store, db = materialized
    later = datetime(2024, 5, 2, 6, 0, 0, tzinfo=UTC)
    # Feast's store keeps no per-entity timestamp, so a partial write leaves the entity's
    # features with different event_ts values.
    provider_write(store, [(1001, {"acc_rate": Value(double_val=0.9)}, later, None)])
    provider_write(store, [(1002, {"scores": Value(double_list_val=DoubleList(val=[9.0]))}, later, None)])
    # A feature outside the view's schema, inserted last but sorting first: which timestamp
    # wins depends on the order SQLite scans the entity's rows in.
    provider_write(store, [(1003, {"a_extra": Value(int64_val=1)}, later, None)])
    provider_write(store, [(1003, {"name": Value(string_val="c")}, later - timedelta(hours=1), None)])
    stamps = set()
    for subset in (FEATURES, ["conv_rate"], ["acc_rate"], ["scores", "name"]):
        ids = [1002, 1001, 1003]
        feast_rows = feast_read(store, ids, subset)
        # An entity without any requested feature is all NOT_FOUND in a response either way.
        served = [None if r and all(v is None for v in r["values"]) else r for r in rs_read(feast_rs_bin, db, ids, subset)]
        assert served == feast_rows, subset
        stamps.add(tuple(r["event_ts"] if r else None for r in feast_rows))
    # Not the newest of the entity's rows: the last in (entity_key, feature_name) order.
    t0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
    assert stamps == {
        (int(later.timestamp()), t0, int(later.timestamp()) - 3600),
        (int(later.timestamp()), t0, None),
    }
