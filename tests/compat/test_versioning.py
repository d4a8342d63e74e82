"""Feature-view versions (Feast 0.67's `enable_online_feature_view_versioning`) served by
`feast-rs serve` against what Feast serves from the same registry and online store.

Feast applies a view (version 0) and materializes it, then applies a schema change (version
1, the view's current version) and materializes again: version 0's rows stay in the base
table `vers_driver_stats`, version 1's go to `vers_driver_stats_v1`, with different values.
`view@vN:feature` references, a feature service pinned to a version, the version metadata and
the errors must come out of feast-rs as Feast computes them; and rows feast-rs writes land
where Feast reads the current version.
"""

import json
import socket
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from conftest import run
from feast import FeatureStore
from feast.errors import FeatureViewVersionNotFound

UTC = timezone.utc

CONFIG = """\
project: vers
provider: local
registry:
  path: data/registry.db
  cache_ttl_seconds: 0
  enable_online_feature_view_versioning: true
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""



def definitions(repo, v1: bool):
    """The repository's objects: version 0 of the view has `conv_rate`; version 1 adds
    `acc_rate` and a feature service pinned to version 0. (Applied with `FeatureStore.apply`:
    Feast 0.67's `feast apply` creates the online table of the base name only, so its own
    materialization of version 1 fails with "no such table".)"""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(
        name="stats",
        path=str(repo / "data" / "stats.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    schema = [Field(name="conv_rate", dtype=Float32)]
    if v1:
        schema.append(Field(name="acc_rate", dtype=Float64))
    view = FeatureView(name="driver_stats", entities=[driver], ttl=timedelta(days=2), schema=schema, source=source)
    objects = [driver, source, view]
    if v1:
        objects.append(FeatureService(name="pinned", features=["driver_stats@v0"]))
    return objects


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_data(repo, ts, conv, acc):
    pd.DataFrame(
        {
            "driver_id": [1, 2],
            "conv_rate": np.array(conv, dtype="float32"),
            "acc_rate": acc,
            "event_timestamp": [ts] * 2,
            "created": [ts] * 2,
        }
    ).to_parquet(repo / "data" / "stats.parquet")


REDIS_DB = 9


def repo_config(store: str) -> dict:
    config = yaml.safe_load(CONFIG)
    if store == "redis":
        config["online_store"] = {"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}
    return config


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, tmp_path_factory, feast_rs_bin):
    store_type = request.param
    if store_type == "redis":
        import redis

        # The machine's Redis (as the other Redis tests); a database of this test's own.
        redis.Redis(port=6379, db=REDIS_DB).flushdb()
    tmp = tmp_path_factory.mktemp(f"versioning-{store_type}")
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    config = repo_config(store_type)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    first = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    second = first + timedelta(hours=1)

    write_data(repo, first, [0.5, 0.25], [10.0, 20.0])
    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions(repo, v1=False))
    store.materialize(first - timedelta(minutes=1), first + timedelta(minutes=1))

    write_data(repo, second, [0.75, 0.125], [30.0, 40.0])
    store.apply(definitions(repo, v1=True))
    local = FeatureStore(repo_path=str(repo))
    local.materialize(second - timedelta(minutes=1), second + timedelta(minutes=1))
    assert local.get_feature_view("driver_stats").current_version_number == 1

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
        client = tmp / "client"
        client.mkdir()
        client_config = repo_config(store_type)
        client_config["registry"]["path"] = str(repo / "data" / "registry.db")
        client_config["online_store"] = {"type": "remote", "path": f"http://127.0.0.1:{port}"}
        (client / "feature_store.yaml").write_text(yaml.safe_dump(client_config))
        yield local, FeatureStore(repo_path=str(client)), port, repo, config
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def both(served, **kwargs):
    local, remote = served[0], served[1]
    want = local.get_online_features(**kwargs)
    got = remote.get_online_features(**kwargs)
    return want, got


def view_metadata(response):
    return [(m.name, m.version) for m in response.proto.metadata.feature_view_metadata]


ROWS = [{"driver_id": 2}, {"driver_id": 404}, {"driver_id": 1}]


def test_pinned_and_current_references(served):
    for full in (False, True):
        want, got = both(
            served,
            features=["driver_stats@v0:conv_rate", "driver_stats:acc_rate"],
            entity_rows=ROWS,
            full_feature_names=full,
        )
        assert got.to_dict() == want.to_dict()
    d = got.to_dict()
    # Version 0 reads the base table (first materialization), the current version its own.
    assert d["driver_stats@v0__conv_rate"] == [0.25, None, 0.5]
    assert d["driver_stats__acc_rate"] == [40.0, None, 30.0]

    want, got = both(served, features=["driver_stats@v1:conv_rate"], entity_rows=ROWS, full_feature_names=True)
    assert got.to_dict() == want.to_dict() == {"driver_id": [2, 404, 1], "driver_stats@v1__conv_rate": [0.125, None, 0.75]}
    want, got = both(served, features=["driver_stats@latest:conv_rate"], entity_rows=ROWS)
    assert got.to_dict() == want.to_dict() == {"driver_id": [2, 404, 1], "conv_rate": [0.125, None, 0.75]}


def test_version_metadata(served):
    want, got = both(
        served,
        features=["driver_stats@v0:conv_rate", "driver_stats@v1:acc_rate"],
        entity_rows=ROWS,
        include_feature_view_version_metadata=True,
    )
    assert got.to_dict() == want.to_dict()
    # One entry per view name, the first version read: Feast's deduplication.
    assert view_metadata(got) == view_metadata(want) == [("driver_stats", 0)]
    want, got = both(
        served, features=["driver_stats:acc_rate"], entity_rows=ROWS, include_feature_view_version_metadata=True
    )
    assert view_metadata(got) == view_metadata(want) == [("driver_stats", 1)]


def test_feature_service_pinned_to_a_version(served):
    local, remote = served[0], served[1]
    service = local.get_feature_service("pinned")
    assert [p.version_tag for p in service.feature_view_projections] == [0]
    for full in (False, True):
        want = local.get_online_features(features=service, entity_rows=ROWS, full_feature_names=full).to_dict()
        got = remote.get_online_features(
            features=remote.get_feature_service("pinned"), entity_rows=ROWS, full_feature_names=full
        ).to_dict()
        assert got == want
    assert got == {"driver_id": [2, 404, 1], "driver_stats@v0__conv_rate": [0.25, None, 0.5]}


def test_unknown_version_and_feature(served):
    local, port = served[0], served[2]
    with pytest.raises(FeatureViewVersionNotFound):
        local.get_online_features(features=["driver_stats@v7:conv_rate"], entity_rows=ROWS)
    body = {"entities": {"driver_id": [1]}, "features": ["driver_stats@v7:conv_rate"]}
    r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
    assert r.status_code == 404
    detail = json.loads(r.json())  # Feast's envelope, sent as a JSON string
    assert detail["class"] == "FeatureViewVersionNotFound"
    assert "Version v7 of feature view driver_stats does not exist in project vers" in detail["message"]
    # Version 0 has no acc_rate.
    body["features"] = ["driver_stats@v0:acc_rate"]
    r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
    assert r.status_code == 404
    assert "acc_rate not found in projection driver_stats@v0" in json.loads(r.json())["message"]


def test_versioned_refs_need_versioning_enabled(served, tmp_path, feast_rs_bin):
    repo, config = served[3], dict(served[4])
    config["registry"] = dict(config["registry"])
    config["registry"]["path"] = str(repo / "data" / "registry.db")
    config["registry"]["enable_online_feature_view_versioning"] = False
    if config["online_store"]["type"] == "sqlite":
        config["online_store"] = {"type": "sqlite", "path": str(repo / "data" / "online.db")}
    (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(tmp_path), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in proc.stdout.readline()
        body = {"entities": {"driver_id": [1]}, "features": ["driver_stats@v0:conv_rate"]}
        r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
        assert r.status_code == 422
        assert "enable_online_feature_view_versioning: true" in json.loads(r.json())["message"]
        # Without versioning, the view's data is its base table: version 0's rows.
        body["features"] = ["driver_stats:conv_rate"]
        r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
        assert r.json()["results"][1]["values"] == [0.5]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_writes_land_in_the_current_version(served):
    local, remote, port, repo, _ = served
    ts = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    frame = pd.DataFrame(
        {
            "driver_id": [3],
            "conv_rate": np.array([0.875], dtype="float32"),
            "acc_rate": [50.0],
            "event_timestamp": [ts],
            "created": [ts],
        }
    )
    remote.write_to_online_store("driver_stats", frame)
    rows = [{"driver_id": 3}]
    want = local.get_online_features(features=["driver_stats:conv_rate", "driver_stats:acc_rate"], entity_rows=rows)
    assert want.to_dict() == {"driver_id": [3], "conv_rate": [0.875], "acc_rate": [50.0]}
    old = local.get_online_features(features=["driver_stats@v0:conv_rate"], entity_rows=rows)
    assert old.to_dict() == {"driver_id": [3], "conv_rate": [None]}


def test_feast_rs_materializes_into_the_current_version(served, feast_rs_bin):
    local, _, _, repo, _ = served
    ts = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
    pd.DataFrame(
        {
            "driver_id": [4],
            "conv_rate": np.array([0.0625], dtype="float32"),
            "acc_rate": [60.0],
            "event_timestamp": [ts],
            "created": [ts],
        }
    ).to_parquet(repo / "data" / "stats.parquet")
    start = (ts - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    end = (ts + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    run([feast_rs_bin, "-c", repo, "materialize", start, end, "-v", "driver_stats"])
    rows = [{"driver_id": 4}]
    got = local.get_online_features(features=["driver_stats:conv_rate", "driver_stats:acc_rate"], entity_rows=rows)
    assert got.to_dict() == {"driver_id": [4], "conv_rate": [0.0625], "acc_rate": [60.0]}
    assert local.get_online_features(features=["driver_stats@v0:conv_rate"], entity_rows=rows).to_dict() == {
        "driver_id": [4],
        "conv_rate": [None],
    }


def pin_flow(store, repo):
    """Applies version 0, then a schema change (version 1), then version 1's definition
    pinned to v0 (a revert), then a pin whose definition changed too (refused); returns what
    the registry says after each step."""
    from feast.errors import FeatureViewPinConflict

    seen = []

    def state():
        fv = store.registry.get_feature_view("driver_stats", "vers", allow_cache=False)
        return (fv.current_version_number, sorted(f.name for f in fv.features), fv.version)

    store.apply(definitions(repo, v1=False)[:3])
    seen.append(state())
    store.apply(definitions(repo, v1=True)[:3])
    seen.append(state())
    objects = definitions(repo, v1=True)[:3]
    objects[2].version = "v0"
    store.apply(objects)
    seen.append(state())
    changed = definitions(repo, v1=False)[:3]
    changed[2].version = "v1"
    changed[2].ttl = timedelta(days=5)
    with pytest.raises(FeatureViewPinConflict):
        store.apply(changed)
    seen.append(state())
    return seen


def test_pinned_applies_through_the_registry_server(tmp_path, feast_rs_bin):
    """The SDK with `registry_type: remote` against `feast-rs serve-registry`: pinning a
    recorded version restores it, and a pin that also changes the definition raises
    FeatureViewPinConflict, as Feast's own file registry does."""
    local_repo = tmp_path / "local"
    (local_repo / "data").mkdir(parents=True)
    (local_repo / "feature_store.yaml").write_text(CONFIG)
    write_data(local_repo, datetime.now(UTC), [0.5, 0.25], [1.0, 2.0])
    want = pin_flow(FeatureStore(repo_path=str(local_repo)), local_repo)
    assert want == [
        (None, ["conv_rate"], "latest"),  # version 0 of an unpinned view reads as None
        (1, ["acc_rate", "conv_rate"], "latest"),
        (0, ["conv_rate"], "v0"),
        (0, ["conv_rate"], "v0"),
    ]

    server = tmp_path / "server"
    (server / "data").mkdir(parents=True)
    (server / "feature_store.yaml").write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(server), "serve-registry", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = datetime.now() + timedelta(seconds=30)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert datetime.now() < deadline, "serve-registry did not listen"
        client = tmp_path / "client"
        (client / "data").mkdir(parents=True)
        config = yaml.safe_load(CONFIG)
        config["registry"] = {"registry_type": "remote", "path": f"127.0.0.1:{port}"}
        (client / "feature_store.yaml").write_text(yaml.safe_dump(config))
        write_data(client, datetime.now(UTC), [0.5, 0.25], [1.0, 2.0])
        assert pin_flow(FeatureStore(repo_path=str(client)), client) == want
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_materializing_a_pinned_version(served, feast_rs_bin):
    """`materialize --version v0` (CLI) and the SDK's remote `materialize(..., version="v0")`
    (POST /materialize with `version`) write version 0's definition into version 0's
    table, as Feast's own `materialize(version=...)`; the current version's rows stay."""
    local, remote, _, repo, _ = served
    ts = (datetime.now(UTC) - timedelta(minutes=20)).replace(microsecond=0)
    write_data(repo, ts, [0.01, 0.02], [70.0, 80.0])
    start = (ts - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    end = (ts + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    current_before = local.get_online_features(features=["driver_stats:acc_rate"], entity_rows=ROWS).to_dict()

    run([feast_rs_bin, "-c", repo, "materialize", start, end, "-v", "driver_stats", "--version", "v0", "--force"])
    got = local.get_online_features(features=["driver_stats@v0:conv_rate"], entity_rows=ROWS).to_dict()
    assert got["conv_rate"][1] is None
    assert [round(v, 6) for v in (got["conv_rate"][0], got["conv_rate"][2])] == [0.02, 0.01]
    assert local.get_online_features(features=["driver_stats:acc_rate"], entity_rows=ROWS).to_dict() == current_before

    # Through the feature server, as the SDK delegates it; then Feast's own, on new data.
    ts2 = ts + timedelta(minutes=5)
    write_data(repo, ts2, [0.03, 0.04], [90.0, 91.0])
    remote.materialize(ts2 - timedelta(minutes=1), ts2 + timedelta(minutes=1), feature_views=["driver_stats"], version="v0")
    got = local.get_online_features(features=["driver_stats@v0:conv_rate"], entity_rows=ROWS).to_dict()
    assert [round(v, 6) for v in (got["conv_rate"][0], got["conv_rate"][2])] == [0.04, 0.03]
    assert local.get_online_features(features=["driver_stats:acc_rate"], entity_rows=ROWS).to_dict() == current_before

    # Feast's own version materialization lands in the same place feast-rs wrote.
    ts3 = ts2 + timedelta(minutes=5)
    write_data(repo, ts3, [0.05, 0.06], [92.0, 93.0])
    local.materialize(ts3 - timedelta(minutes=1), ts3 + timedelta(minutes=1), feature_views=["driver_stats"], version="v0")
    via_rs = remote.get_online_features(features=["driver_stats@v0:conv_rate"], entity_rows=ROWS).to_dict()
    assert [round(v, 6) for v in (via_rs["conv_rate"][0], via_rs["conv_rate"][2])] == [0.06, 0.05]

    # A version needs exactly one view, and versioning on (checked before anything runs).
    bad = run([feast_rs_bin, "-c", repo, "materialize", start, end, "--version", "v0"], check=False)
    assert bad.returncode != 0 and "exactly one feature view" in bad.stderr
