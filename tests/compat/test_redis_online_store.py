"""feast-rs's Redis online store (services/online/src/store/redis.rs) on the very keys Feast's
RedisOnlineStore uses (PROTOCOLS.md §6.2).

A private `redis-server` (free port, nothing kept on disk) backs a copy of
tests/compat/feast_repo configured with `online_store: {type: redis}`:
- Feast materializes `driver_hourly_stats` and `feast-rs serve` must answer every
  `get_online_features` exactly as Feast does locally (through Feast's remote client);
- feast-rs writes rows (`feast-rs internal online-write --repo`) and Feast's
  `get_online_features` must read them; the raw `HGETALL` of a hash written by feast-rs must
  be byte-identical to the one Feast writes for the same row (key, fields, field order,
  values, `_ts:` timestamp);
- the dedup rule agrees: Feast skips a write older than what feast-rs stored, and back;
- `feast-rs apply` records no infra objects for Redis (as Feast), and `feast-rs teardown`
  deletes the project's hashes.
Without `redis-server` the module is skipped, except under CI=true, where it fails.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import redis
import requests
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from test_online_server import FEATURES, as_sent_over_json, write_fresh_data

UTC = timezone.utc
PROJECT = "compat"
VIEW = "driver_hourly_stats"
NAMES = [f.split(":")[1] for f in FEATURES]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is needed under CI=true")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def redis_repo(tmp, port, name="server", template="feast_repo"):
    repo = copy_repo(template, tmp / name)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"] = {"type": "redis", "connection_string": f"127.0.0.1:{port}"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return repo


def entity_key(driver_id: int) -> EntityKey:
    return EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=driver_id)])


def rkey(driver_id: int) -> bytes:
    return _redis_key(PROJECT, entity_key(driver_id), entity_key_serialization_version=3)


def rs_write(feast_rs_bin, repo, rows, view=VIEW):
    """rows: [(driver_id, event_ts datetime, {feature: Value})]."""
    payload = []
    for driver_id, ts, features in rows:
        t = Timestamp()
        t.FromDatetime(ts)
        payload.append(
            {
                "entity_key": serialize_entity_key(entity_key(driver_id), entity_key_serialization_version=3).hex(),
                "event_ts": {"seconds": t.seconds, "nanos": t.nanos},
                "features": {name: v.SerializeToString().hex() for name, v in features.items()},
            }
        )
    proc = subprocess.run(
        [str(feast_rs_bin), "internal", "online-write", "--repo", str(repo), "--view", view],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["written"]


def decode_hash(fields):
    """HGETALL pairs → {feature name or _ts:view: decoded proto}."""
    by_field = {_mmh3(f"{VIEW}:{n}"): n for n in NAMES}
    out = {}
    for f, v in fields:
        if f.startswith(b"_ts:"):
            t = Timestamp()
            t.ParseFromString(v)
            out[f.decode()] = t
        else:
            out[by_field[f]] = Value.FromString(v)
    return out


def feast_row(driver_id, at, **overrides):
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
        "created": [at],
    }
    row.update({k: [v] for k, v in overrides.items()})
    return pd.DataFrame(row)


def hgetall_ordered(client, key):
    """HGETALL as an ordered list of pairs (a small hash keeps insertion order)."""
    flat = client.execute_command("HGETALL", key)
    if isinstance(flat, dict):
        return list(flat.items())
    return list(zip(flat[::2], flat[1::2]))


@pytest.fixture(scope="module")
def served(tmp_path_factory, feast_rs_bin, feast_cli, redis_port):
    tmp = tmp_path_factory.mktemp("redis_online")
    repo = redis_repo(tmp, redis_port)
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    write_fresh_data(repo, ts)
    run([feast_cli, "apply"], cwd=repo)
    local = FeatureStore(repo_path=str(repo))
    local.materialize(
        start_date=ts - timedelta(hours=1),
        end_date=ts + timedelta(minutes=1),
        feature_views=[VIEW],
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
        yield local, remote, repo, ts, redis.Redis(port=redis_port)
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
    client = served[4]
    # Feast's own layout, as PROTOCOLS.md §6.2 states it.
    assert client.exists(rkey(1001)) and client.exists(rkey(1002))
    assert client.hget(rkey(1001), _mmh3(f"{VIEW}:conv_rate")) is not None
    for rows in ([{"driver_id": 1001}], [{"driver_id": 1002}, {"driver_id": 404}, {"driver_id": 1001}]):
        want, got = both(served, features=FEATURES, entity_rows=rows)
        assert got == want
    assert got["name"] == ["b", None, "a"]
    assert got["scores"] == [[0.2], None, [0.1, 2.0]]
    want, got = both(
        served,
        features=["driver_hourly_stats:scores", "driver_hourly_stats:conv_rate"],
        entity_rows=[{"driver_id": 1002}, {"driver_id": 1001}],
        full_feature_names=True,
    )
    assert got == want
    # Never materialized: nothing in Redis for it.
    want, got = both(served, features=["driver_stats_fresh:acc_rate"], entity_rows=[{"driver_id": 1001}])
    assert got == want == {"driver_id": [1001], "acc_rate": [None]}


def test_hash_written_by_feast_rs_is_byte_identical_to_feasts(served, feast_rs_bin):
    local, _, repo, ts, client = served
    at = ts + timedelta(seconds=1, microseconds=123456)
    df = feast_row(5001, at)
    local.write_to_online_store(VIEW, df)
    feast_fields = hgetall_ordered(client, rkey(5001))
    assert feast_fields[0][0] == f"_ts:{VIEW}".encode()
    decoded = decode_hash(feast_fields)
    assert decoded[f"_ts:{VIEW}"].ToDatetime(tzinfo=UTC) == at
    client.delete(rkey(5001))

    # The same row through feast-rs, features in the order Feast wrote them.
    order = [n for f, _ in feast_fields[1:] for n in NAMES if _mmh3(f"{VIEW}:{n}") == f]
    assert rs_write(feast_rs_bin, repo, [(5001, at, {n: decoded[n] for n in order})]) == 1
    assert hgetall_ordered(client, rkey(5001)) == feast_fields
    assert client.ttl(rkey(5001)) == -1


def test_hashes_feast_rs_creates_in_bulk_are_the_ones_feast_writes(served, feast_rs_bin):
    # 40 rows: feast-rs creates the missing hashes with RESTORE rather than HSET. Redis must
    # hold exactly what Feast's own write leaves (DUMP compares the stored encoding too), and
    # Feast must read them.
    local, _, repo, ts, client = served
    at = ts + timedelta(minutes=7, microseconds=250)
    ids = list(range(8000, 8040))
    frames = [feast_row(i, at, conv_rate=i / 8, avg_daily_trips=i - 8020, name=f"driver {i}") for i in ids]
    frame = pd.concat(frames, ignore_index=True).astype({"conv_rate": "float32", "rating": "int32"})
    local.write_to_online_store(VIEW, frame)
    feast_hashes = {i: hgetall_ordered(client, rkey(i)) for i in ids}
    feast_dumps = {i: client.dump(rkey(i)) for i in ids}
    client.delete(*[rkey(i) for i in ids])

    rows = []
    for i in ids:
        decoded = decode_hash(feast_hashes[i])
        order = [n for f, _ in feast_hashes[i][1:] for n in NAMES if _mmh3(f"{VIEW}:{n}") == f]
        rows.append((i, at, {n: decoded[n] for n in order}))
    assert rs_write(feast_rs_bin, repo, rows) == 40
    for i in ids:
        assert hgetall_ordered(client, rkey(i)) == feast_hashes[i]
        assert client.dump(rkey(i)) == feast_dumps[i]
        assert client.ttl(rkey(i)) == -1
    got = local.get_online_features(
        features=[f"{VIEW}:conv_rate", f"{VIEW}:avg_daily_trips", f"{VIEW}:name"],
        entity_rows=[{"driver_id": i} for i in ids],
    ).to_dict()
    assert got["avg_daily_trips"] == [i - 8020 for i in ids]
    assert got["name"] == [f"driver {i}" for i in ids]
    # Written again, older: Feast's newer-wins rule skips every row (the keys exist now).
    older = [(i, at - timedelta(seconds=1), values) for i, _, values in rows]
    assert rs_write(feast_rs_bin, repo, older) == 0


def test_feast_reads_what_feast_rs_writes(served, feast_rs_bin):
    local, remote, repo, ts, client = served
    at = ts + timedelta(minutes=5, microseconds=7)
    values = {
        "conv_rate": Value(float_val=0.125),
        "acc_rate": Value(double_val=2.5),
        "avg_daily_trips": Value(int64_val=42),
        "name": Value(string_val="written by feast-rs"),
        "scores": Value(double_list_val={"val": [1.0, 2.0]}),
    }
    assert rs_write(feast_rs_bin, repo, [(6001, at, values), (6002, at, {"rating": Value(int32_val=3)})]) == 2
    rows = [{"driver_id": 6001}, {"driver_id": 6002}, {"driver_id": 404}]
    got = local.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert got["conv_rate"] == [0.125, None, None]
    assert got["acc_rate"] == [2.5, None, None]
    assert got["avg_daily_trips"] == [42, None, None]
    assert got["name"] == ["written by feast-rs", None, None]
    assert got["scores"] == [[1.0, 2.0], None, None]
    assert got["rating"] == [None, 3, None]
    # And feast-rs serves them as Feast reads them.
    want, served_got = both(served, features=FEATURES, entity_rows=rows)
    assert served_got == want
    t = Timestamp()
    t.ParseFromString(client.hget(rkey(6001), f"_ts:{VIEW}"))
    assert (t.seconds, t.nanos) == (int(at.timestamp()), 7000)


def test_dedup_agrees_between_feast_and_feast_rs(served, feast_rs_bin):
    local, _, repo, ts, client = served
    newer, older = ts + timedelta(hours=2), ts + timedelta(minutes=30)
    assert rs_write(feast_rs_bin, repo, [(7001, newer, {"name": Value(string_val="new")})]) == 1
    local.write_to_online_store(VIEW, feast_row(7001, older, name="old"))  # skipped by Feast: older than feast-rs's row
    assert local.get_online_features(features=[f"{VIEW}:name"], entity_rows=[{"driver_id": 7001}]).to_dict()[
        "name"
    ] == ["new"]
    # Feast writes a newer row; feast-rs's equal-time and older writes are skipped.
    newest = ts + timedelta(hours=3)
    local.write_to_online_store(VIEW, feast_row(7001, newest, name="feast"))
    assert rs_write(feast_rs_bin, repo, [(7001, newest, {"name": Value(string_val="x")})]) == 0
    assert rs_write(feast_rs_bin, repo, [(7001, newer, {"name": Value(string_val="x")})]) == 0
    assert decode_hash(hgetall_ordered(client, rkey(7001)))["name"].string_val == "feast"


def test_apply_and_teardown_with_redis(tmp_path, feast_rs_bin, feast_cli, redis_port):
    client = redis.Redis(port=redis_port, db=3)
    # The same repository declared in YAML, which feast-rs reads.
    repo = redis_repo(tmp_path, redis_port, name="rs_apply", template="yaml_repo")
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"]["connection_string"] += ",db=3"
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    write_fresh_data(repo, ts)
    out = run([feast_rs_bin, "-c", repo, "apply"]).stdout
    assert out.rstrip().endswith("No changes to infrastructure"), out
    # Feast records no infra objects for Redis: same registry infra as Feast's apply.
    feast_repo = redis_repo(tmp_path, redis_port, name="py_apply")
    write_fresh_data(feast_repo, ts)
    run([feast_cli, "apply"], cwd=feast_repo)
    rs_infra = FeatureStore(repo_path=str(repo)).registry.proto().infra
    py_infra = FeatureStore(repo_path=str(feast_repo)).registry.proto().infra
    assert list(rs_infra.infra_objects) == list(py_infra.infra_objects) == []

    store = FeatureStore(repo_path=str(repo))
    store.materialize(start_date=ts - timedelta(hours=1), end_date=ts + timedelta(minutes=1), feature_views=[VIEW])
    assert client.exists(rkey(1001))
    other = _redis_key("other_project", entity_key(1001), entity_key_serialization_version=3)
    client.hset(other, "_ts:x", b"")
    run([feast_rs_bin, "-c", repo, "teardown"])
    assert not client.exists(rkey(1001)) and not client.exists(rkey(1002))
    assert client.exists(other)
    client.flushdb()


def start_redis(port, tmp):
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return proc
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)


def test_redis_outage_is_503_and_serving_resumes(tmp_path, feast_rs_bin, redis_port):
    """Redis goes away under a running `feast-rs serve`: reads and writes are 503 with a
    message naming Redis, and the server serves again by itself once Redis is back."""
    del redis_port  # only for its skip/fail rule when redis-server is missing
    port = free_port()
    redis_proc = start_redis(port, tmp_path)
    repo = redis_repo(tmp_path, port, template="yaml_repo")
    run([str(feast_rs_bin), "-c", str(repo), "apply"], cwd=repo)
    http_port = free_port()
    server = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(repo), "serve", "--port", str(http_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{http_port}"
    read = {"entities": {"driver_id": [7]}, "features": ["driver_stats_fresh:acc_rate"]}
    write = {
        "feature_view_name": "driver_stats_fresh",
        "df": {"driver_id": [7], "conv_rate": [0.5], "acc_rate": [0.75],
               "event_timestamp": [datetime.now(UTC).replace(tzinfo=None).isoformat()]},
    }
    try:
        assert "listening on" in server.stdout.readline(), server.stderr.read()
        assert requests.post(f"{base}/write-to-online-store", json=write).status_code == 200
        assert requests.post(f"{base}/get-online-features", json=read).json()["results"][1]["values"] == [0.75]

        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        for path, body in (("/get-online-features", read), ("/write-to-online-store", write)):
            r = requests.post(f"{base}{path}", json=body, timeout=10)
            assert r.status_code == 503, r.text
            assert f"127.0.0.1:{port}" in json.loads(r.json())["message"]

        redis_proc = start_redis(port, tmp_path)
        back = time.monotonic()
        while True:
            r = requests.post(f"{base}/get-online-features", json=read, timeout=10)
            if r.status_code == 200:
                break
            assert time.monotonic() - back < 1.0, f"still {r.status_code} 1 s after Redis returned: {r.text}"
            time.sleep(0.01)
        # The new Redis is empty (nothing is kept on disk): the entity is not found, not an error.
        assert r.json()["results"][1]["statuses"] == ["NOT_FOUND"]
        assert requests.post(f"{base}/write-to-online-store", json=write).status_code == 200
        assert requests.post(f"{base}/get-online-features", json=read).json()["results"][1]["values"] == [0.75]
    finally:
        server.terminate()
        server.wait(timeout=10)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
