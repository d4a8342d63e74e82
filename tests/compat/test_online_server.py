"""The Feast SDK (feast==0.67.0) with `online_store: {type: remote}` against `feast-rs serve`.

Feast applies tests/compat/feast_repo and materializes `driver_hourly_stats` into its SQLite
online store; `feast-rs serve` serves that repository over HTTP. Every
`get_online_features(...).to_dict()` made through a second repository configured with
`online_store: {type: remote}` (same registry file) must equal the same call made by Feast
locally. The data is rewritten with event timestamps one hour old, so the views' TTLs do not
expire it (feast-rs reports expired rows as OUTSIDE_MAX_AGE where Feast says PRESENT).
"""

import base64
import json
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.errors import (
    FeastError,
    FeatureNameCollisionError,
    FeatureViewNotFoundException,
)

UTC = timezone.utc
FEATURES = [
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fresh_data(repo, ts: datetime) -> None:
    pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "conv": np.array([0.5, 0.25], dtype="float32"),
            "acc_rate": [0.1, 1.0],
            "avg_daily_trips": [1, 2],
            "rating": np.array([3, 4], dtype="int32"),
            "active": [True, False],
            "name": ["a", "b"],
            "avatar": [b"x", b"\x00\xff"],
            "last_seen": [datetime(2024, 1, 1, tzinfo=UTC)] * 2,
            "recent_trips": [[1, 2], [3]],
            "scores": [[0.1, 2.0], [0.2]],
            "event_timestamp": [ts] * 2,
            "created": [ts] * 2,
        }
    ).to_parquet(repo / "data" / "driver_stats.parquet")


@pytest.fixture(scope="module")
def served(tmp_path_factory, feast_rs_bin, feast_cli):
    tmp = tmp_path_factory.mktemp("online")
    repo = copy_repo("feast_repo", tmp / "server")
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    write_fresh_data(repo, ts)
    run([feast_cli, "apply"], cwd=repo)
    local = FeatureStore(repo_path=str(repo))
    local.materialize(
        start_date=ts - timedelta(hours=1),
        end_date=ts + timedelta(minutes=1),
        feature_views=["driver_hourly_stats"],
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
        yield local, remote, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("feast-rs serve did not stop within 10 s of SIGTERM")


def as_sent_over_json(d):
    """What Feast's remote client makes of a local result: it re-types every JSON value by
    inference, so bytes arrive as their base64 text and UnixTimestamp values as epoch-second
    ints (Feast's own Python server gives the same). Everything else must match exactly."""

    def one(v):
        if isinstance(v, bytes):
            return base64.b64encode(v).decode()
        if isinstance(v, datetime):
            return int(v.timestamp())
        if isinstance(v, list):
            return [one(x) for x in v]
        return v

    return {k: [one(v) for v in vs] for k, vs in d.items()}


def both(served, **kwargs):
    local, remote, _ = served
    want = as_sent_over_json(local.get_online_features(**kwargs).to_dict())
    got = remote.get_online_features(**kwargs).to_dict()
    return want, got


def test_single_batch_and_missing_entities(served):
    for rows in ([{"driver_id": 1001}], [{"driver_id": 1002}, {"driver_id": 404}, {"driver_id": 1001}]):
        want, got = both(served, features=FEATURES, entity_rows=rows)
        assert got == want
    assert got["name"] == ["b", None, "a"]
    assert got["avatar"][0] == base64.b64encode(b"\x00\xff").decode()
    assert got["last_seen"][0] == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    assert got["scores"] == [[0.2], None, [0.1, 2.0]]


def test_full_feature_names_and_subsets(served):
    want, got = both(
        served,
        features=["driver_hourly_stats:scores", "driver_hourly_stats:conv_rate"],
        entity_rows=[{"driver_id": 1002}, {"driver_id": 1001}],
        full_feature_names=True,
    )
    assert got == want
    assert set(got) == {"driver_id", "driver_hourly_stats__scores", "driver_hourly_stats__conv_rate"}


def test_view_never_materialized_is_not_found(served):
    want, got = both(served, features=["driver_stats_fresh:acc_rate"], entity_rows=[{"driver_id": 1001}])
    assert got == want == {"driver_id": [1001], "acc_rate": [None]}


def test_feature_service_with_alias_and_join_key_map(served):
    """`driver_activity_v2` serves driver_hourly_stats under the alias `dhs` with the join key
    mapped to the request column `driver`. Feast 0.67's local SDK cannot serve it (its
    join-key check asks for the mapped key of every entity in the project and raises
    KeyError), so feast-rs is compared with the plain view renamed as the service names it."""
    local, remote, _ = served
    rows = [{"driver": 1001}, {"driver": 1002}, {"driver": 404}]
    with pytest.raises(KeyError):
        local.get_online_features(features=local.get_feature_service("driver_activity_v2"), entity_rows=rows)
    service = remote.get_feature_service("driver_activity_v2")
    for full in (False, True):
        plain = as_sent_over_json(
            local.get_online_features(
                features=FEATURES, entity_rows=[{"driver_id": r["driver"]} for r in rows], full_feature_names=full
            ).to_dict()
        )
        want = {
            ("driver" if k == "driver_id" else k.replace("driver_hourly_stats__", "dhs__")): v
            for k, v in plain.items()
        }
        got = remote.get_online_features(features=service, entity_rows=rows, full_feature_names=full).to_dict()
        assert got == want
        if full:
            assert "dhs__conv_rate" in got


def test_raw_response_shape(served):
    port = served[2]
    body = {
        "entities": {"driver_id": [1002, 404]},
        "features": ["driver_hourly_stats:acc_rate", "driver_hourly_stats:scores"],
    }
    r = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["metadata"] == {"feature_names": ["driver_id", "acc_rate", "scores"]}
    assert out["results"][0] == {
        "values": [1002, 404],
        "statuses": ["PRESENT", "PRESENT"],
        "event_timestamps": ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"],
    }
    assert out["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND"]
    # 1.0 must stay a JSON float, or the client would type it INT64.
    assert '"values":[1.0,null]' in r.text.replace(" ", "")
    assert out["results"][2]["values"] == [[0.2], None]
    assert requests.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_errors_are_feast_exceptions(served):
    _, remote, port = served
    with pytest.raises(FeatureViewNotFoundException, match="Feature view nope does not exist"):
        remote.get_online_features(features=["nope:x"], entity_rows=[{"driver_id": 1}])
    r = requests.post(
        f"http://127.0.0.1:{port}/get-online-features",
        json={"entities": {"driver_id": [1]}, "feature_service": "nope"},
    )
    assert r.status_code == 404
    assert '"class": "FeatureServiceNotFoundException"' in r.json()
    # The same output name twice: Feast's own exception on both sides.
    for store in served[:2]:
        with pytest.raises(FeatureNameCollisionError, match="Duplicate features named conv_rate"):
            store.get_online_features(
                features=["driver_hourly_stats:conv_rate", "driver_stats_fresh:conv_rate"],
                entity_rows=[{"driver_id": 1001}],
            )
    # On-demand views are not executed yet: a clear 4xx the client raises as a FeastError.
    with pytest.raises(FeastError, match="on-demand"):
        remote.get_online_features(
            features=["transformed_conv_rate:conv_rate_plus_val1"],
            entity_rows=[{"driver_id": 1001, "val_to_add": 1, "val_to_add_2": 2}],
        )
    with pytest.raises(FeastError, match="transformed_conv_rate is an on-demand feature view"):
        remote.get_online_features(
            features=remote.get_feature_service("driver_activity_v1"),
            entity_rows=[{"driver_id": 1001, "val_to_add": 1, "val_to_add_2": 2}],
        )
    # Wrong entity type and missing join key: 422 with a message.
    r = requests.post(
        f"http://127.0.0.1:{port}/get-online-features",
        json={"entities": {"driver_id": ["x"]}, "features": ["driver_hourly_stats:acc_rate"]},
    )
    assert r.status_code == 422 and "INT64" in r.json()
    r = requests.post(
        f"http://127.0.0.1:{port}/get-online-features",
        json={"entities": {"other": [1]}, "features": ["driver_hourly_stats:acc_rate"]},
    )
    assert r.status_code == 422 and "driver_id" in r.json()
    r = requests.post(f"http://127.0.0.1:{port}/get-online-features", data=b"{not json")
    assert r.status_code == 422 and "detail" in r.json()


def test_sdk_write_to_online_store_lands_and_feast_reads_it(served):
    """`write_to_online_store` through the remote SDK goes to feast-rs's
    /write-to-online-store; feast-rs writes Feast's SQLite layout, so Feast's own local
    `get_online_features` on the same file reads exactly what was written."""
    local, remote, _ = served
    ts = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
    rows = pd.DataFrame(
        {
            "driver_id": [2001, 2002],
            # Feast's SDK checks the feature columns by feature name before it applies the
            # batch source's field_mapping (`conv` -> `conv_rate`), so this is `conv_rate`.
            "conv_rate": np.array([0.75, 0.125], dtype="float32"),
            "acc_rate": [0.5, None],
            "avg_daily_trips": [7, 8],
            "rating": np.array([5, 1], dtype="int32"),
            "active": [True, True],
            "name": ["written", "by-sdk"],
            "avatar": [None, None],
            "last_seen": [datetime(2024, 2, 1, tzinfo=UTC)] * 2,
            "recent_trips": [[4], [5, 6]],
            "scores": [[0.5], [0.25, 1.0]],
            "event_timestamp": [ts] * 2,
            "created": [ts] * 2,
        }
    )
    remote.write_to_online_store("driver_hourly_stats", rows)
    entity_rows = [{"driver_id": 2001}, {"driver_id": 2002}]
    want, got = both(served, features=FEATURES, entity_rows=entity_rows)
    assert got == want
    assert got["conv_rate"] == [0.75, 0.125]
    assert got["name"] == ["written", "by-sdk"]
    assert got["acc_rate"] == [0.5, None]
    assert got["recent_trips"] == [[4], [5, 6]]

    # An older write does not replace the newer values (newer wins, as Feast's stores do
    # not promise but feast-rs does).
    older = rows.assign(name=["stale", "stale"], event_timestamp=[ts - timedelta(minutes=5)] * 2)
    remote.write_to_online_store("driver_hourly_stats", older)
    assert local.get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()["name"] == [
        "written",
        "by-sdk",
    ]


def test_sdk_push_and_http_push_land(served):
    """The SDK's `push` with a remote online store writes through /write-to-online-store; a
    plain HTTP client uses /push. Both reach `driver_stats_fresh`, fed by the push source."""
    local, remote, port = served
    ts = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    remote.push(
        "driver_stats_push",
        pd.DataFrame(
            {
                "driver_id": [3001],
                "conv_rate": np.array([0.5], dtype="float32"),
                "acc_rate": [0.25],
                "event_timestamp": [ts],
                "created": [ts],
            }
        ),
    )
    r = requests.post(
        f"http://127.0.0.1:{port}/push",
        json={
            "push_source_name": "driver_stats_push",
            "df": {
                "driver_id": [3002],
                "conv": [1.5],
                "acc_rate": [2.5],
                "event_timestamp": [ts.replace(tzinfo=None).isoformat()],
            },
            "to": "online",
        },
    )
    assert r.status_code == 200, r.text
    features = ["driver_stats_fresh:conv_rate", "driver_stats_fresh:acc_rate"]
    entity_rows = [{"driver_id": 3001}, {"driver_id": 3002}]
    want, got = both(served, features=features, entity_rows=entity_rows)
    assert got == want == {"driver_id": [3001, 3002], "conv_rate": [0.5, 1.5], "acc_rate": [0.25, 2.5]}

    r = requests.post(
        f"http://127.0.0.1:{port}/push", json={"push_source_name": "nope", "df": {"driver_id": [1]}}
    )
    assert r.status_code == 422 and '"class": "PushSourceNotFoundException"' in r.json()


def test_http_push_to_offline_lands_in_the_batch_source_feast_reads(served):
    """`/push` with to=offline appends the row to the push source's batch source (the
    repository's Parquet file, through feast-rs's file offline store); Feast's own offline
    store then finds it in a point-in-time join, every column typed as the file declares."""
    local, _, port = served
    ts = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    r = requests.post(
        f"http://127.0.0.1:{port}/push",
        json={
            "push_source_name": "driver_stats_push",
            "to": "offline",
            "df": {
                "driver_id": [3003],
                "conv": [0.75],
                "acc_rate": [0.5],
                "avg_daily_trips": [9],
                "rating": [5],
                "active": [True],
                "name": ["offline-push"],
                "avatar": [None],
                "last_seen": ["2024-02-01T00:00:00+00:00"],
                "recent_trips": [[7, 8]],
                "scores": [[0.5]],
                "event_timestamp": [ts.isoformat()],
                "created": [ts.isoformat()],
            },
        },
    )
    assert r.status_code == 200, r.text
    entity_df = pd.DataFrame({"driver_id": [3003], "event_timestamp": [ts + timedelta(seconds=1)]})
    got = local.get_historical_features(
        entity_df=entity_df,
        features=[
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:avg_daily_trips",
            "driver_hourly_stats:rating",
            "driver_hourly_stats:name",
            "driver_hourly_stats:recent_trips",
            "driver_hourly_stats:last_seen",
        ],
    ).to_df()
    row = got.iloc[0]
    assert row["conv_rate"] == pytest.approx(0.75)
    assert (row["avg_daily_trips"], row["rating"], row["name"]) == (9, 5, "offline-push")
    assert list(row["recent_trips"]) == [7, 8]
    assert pd.Timestamp(row["last_seen"]) == pd.Timestamp("2024-02-01", tz="UTC")

    # Columns that do not match the batch source are refused, and nothing is appended.
    r = requests.post(
        f"http://127.0.0.1:{port}/push",
        json={
            "push_source_name": "driver_stats_push",
            "to": "offline",
            "df": {"driver_id": [3004], "conv": [1.0], "event_timestamp": [ts.isoformat()]},
        },
    )
    assert r.status_code == 422, r.text
    assert "missing" in r.text and "acc_rate" in r.text


def test_bad_writes_are_clear_4xx(served):
    """(The SDK converts values before it sends them, so these come from a plain client.)"""
    port = served[2]
    url = f"http://127.0.0.1:{port}/write-to-online-store"
    r = requests.post(url, json={"feature_view_name": "nope", "df": {}})
    assert r.status_code == 404 and '"class": "FeastObjectNotFoundException"' in r.json()
    r = requests.post(
        url,
        json={
            "feature_view_name": "driver_stats_fresh",
            "df": {"driver_id": [1], "conv_rate": ["fast"], "acc_rate": [1.0], "event_timestamp": ["2024-01-01"]},
        },
    )
    assert r.status_code == 422
    assert 'df["conv_rate"][0]: expected FLOAT' in json.loads(r.json())["message"]


def test_sdk_over_tls(served, feast_rs_bin, tmp_path):
    """`feast-rs serve --cert --key` serves HTTPS; the SDK's remote online store with
    `cert:` (Feast's setting for a self-signed server certificate) reads through it."""
    local, _, _ = served
    data = Path(__file__).resolve().parents[2] / "services" / "online" / "tests" / "data"
    server_repo = Path(local.repo_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(feast_rs_bin), "-c", str(server_repo), "serve", "--port", str(port),
            "--cert", str(data / "tls-cert.pem"), "--key", str(data / "tls-key.pem"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line and "TLS" in line, proc.stderr.read()
        config = yaml.safe_load((server_repo / "feature_store.yaml").read_text())
        config["registry"] = str(server_repo / "data" / "registry.db")
        config["online_store"] = {
            "type": "remote",
            "path": f"https://localhost:{port}",
            "cert": str(data / "tls-cert.pem"),
        }
        (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump(config))
        remote = FeatureStore(repo_path=str(tmp_path))
        rows = [{"driver_id": 1001}, {"driver_id": 404}]
        want = as_sent_over_json(local.get_online_features(features=FEATURES, entity_rows=rows).to_dict())
        assert remote.get_online_features(features=FEATURES, entity_rows=rows).to_dict() == want
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
