"""Maps, JSON, lists, bytes, timestamps and TTL expiry through `feast-rs serve`.

A repository with a string-keyed view of every value shape (a Map, a Json, lists of strings
and bools, bytes, a UnixTimestamp, Float32, Int32; TTL one hour) is filled by Feast's own
`write_to_online_store` into its SQLite store, one row fresh and one three hours old. Two
`feast-rs serve` processes share it: with `--expired-as-present` the remote SDK must get
exactly Feast's local answer; by default the expired row is OUTSIDE_MAX_AGE and null.
"""

import json
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from conftest import run
from feast import FeatureStore
from test_online_server import as_sent_over_json, free_port

UTC = timezone.utc
NAMES = ["attrs", "doc", "tags", "flags", "blob", "seen", "score", "level"]
FEATURES = [f"profiles:{n}" for n in NAMES]
ROWS = [{"customer_id": "c1"}, {"customer_id": "c2"}, {"customer_id": "nobody"}]

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Bytes, Float32, Int32, Json, Map, String, UnixTimestamp

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
source = FileSource(name="profiles_source", path="data/profiles.parquet", timestamp_field="event_timestamp")
profiles = FeatureView(
    name="profiles",
    entities=[customer],
    ttl=timedelta(hours=1),
    schema=[
        Field(name="attrs", dtype=Map),
        Field(name="doc", dtype=Json),
        Field(name="tags", dtype=Array(String)),
        Field(name="flags", dtype=Array(Bool)),
        Field(name="blob", dtype=Bytes),
        Field(name="seen", dtype=UnixTimestamp),
        Field(name="score", dtype=Float32),
        Field(name="level", dtype=Int32),
    ],
    source=source,
)
'''


def serve(feast_rs_bin, repo, *flags):
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(repo), "serve", "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "listening on" in proc.stdout.readline(), proc.stderr.read()
    return proc, port


def client(tmp, repo, name, port):
    path = tmp / name
    path.mkdir()
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = str(repo / "data" / "registry.db")
    config["online_store"] = {"type": "remote", "path": f"http://127.0.0.1:{port}"}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return FeatureStore(repo_path=str(path))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, feast_rs_bin, feast_cli):
    tmp = tmp_path_factory.mktemp("types")
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "types",
                "provider": "local",
                "registry": "data/registry.db",
                "online_store": {"type": "sqlite", "path": "data/online.db"},
                "offline_store": {"type": "file"},
                "entity_key_serialization_version": 3,
            }
        )
    )
    (repo / "definitions.py").write_text(DEFINITIONS)
    run([feast_cli, "apply"], cwd=repo)
    local = FeatureStore(repo_path=str(repo))
    now = datetime.now(UTC).replace(microsecond=0)
    local.write_to_online_store(
        "profiles",
        pd.DataFrame(
            {
                "customer_id": ["c1", "c2"],
                "attrs": [{"a": 1, "b": "two"}, {"nested": {"k": 1.5}}],
                "doc": ['{"x": [1, 2]}', '"s"'],
                "tags": [["a", "b"], ["c"]],
                "flags": [[True, False], [False]],
                "blob": [b"\x00\x01", b"zz"],
                "seen": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)],
                "score": np.array([1.5, 2.25], dtype="float32"),
                "level": np.array([3, 4], dtype="int32"),
                "event_timestamp": [now - timedelta(minutes=5), now - timedelta(hours=3)],
            }
        ),
    )
    procs = []
    try:
        as_feast, port_a = serve(feast_rs_bin, repo, "--expired-as-present")
        procs.append(as_feast)
        default, port_b = serve(feast_rs_bin, repo)
        procs.append(default)
        yield local, client(tmp, repo, "as_feast", port_a), client(tmp, repo, "default", port_b), port_b
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def remote_dict(store):
    got = store.get_online_features(features=FEATURES, entity_rows=ROWS).to_dict()
    # A Json feature travels as its JSON text; the client keeps it a string where Feast's
    # local read parses it.
    got["doc"] = [json.loads(d) if isinstance(d, str) else d for d in got["doc"]]
    return got


def test_every_value_shape_matches_feast_including_expired_rows(stores):
    local, as_feast, _, _ = stores
    want = as_sent_over_json(local.get_online_features(features=FEATURES, entity_rows=ROWS).to_dict())
    got = remote_dict(as_feast)
    assert got == want
    # Feast's own read of the map shows the union of keys across rows (pyarrow struct
    # unification on write); both servers read the same stored map.
    assert got["attrs"][0] == {"a": 1.0, "b": "two", "nested": None}
    assert got["blob"][0] == "AAE="
    assert got["level"] == [3, 4, None]


def test_expired_rows_are_outside_max_age_by_default(stores):
    local, _, default, port = stores
    want = as_sent_over_json(local.get_online_features(features=FEATURES, entity_rows=ROWS).to_dict())
    got = remote_dict(default)
    for name in NAMES:
        assert got[name][0] == want[name][0], name
        assert got[name][1] is None, name
        assert got[name][2] is None, name
    body = {"entities": {"customer_id": ["c1", "c2", "nobody"]}, "features": ["profiles:level"]}
    out = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body).json()
    assert out["results"][1]["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
    assert out["results"][1]["values"] == [3, None, None]
    # The expired value's own timestamp is still reported.
    assert out["results"][1]["event_timestamps"][1] != "1970-01-01T00:00:00Z"
