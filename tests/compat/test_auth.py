"""The Feast SDK with `auth: {type: oidc, client_id, client_secret, auth_discovery_url}`
against a feast-rs deployment with authorization on: the registry server, the feature
server and the offline server, each validating tokens from a loopback OIDC provider
(oidc_issuer.py) and enforcing the Feast permissions the SDK applied.

The feature and offline servers read the registry from the registry server as themselves
(their own client-credentials identity), as a real deployment does.
"""

from datetime import datetime, timedelta, timezone
import socket
import subprocess
import time

import pandas as pd
import pytest
import yaml

from conftest import run
from feast import FeatureStore
from feast.errors import FeastPermissionError
from oidc_issuer import Issuer
from test_historical_features import start_offline_server, stop

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, Project, ValueType
from feast.feast_object import ALL_RESOURCE_TYPES
from feast.permissions.action import ALL_ACTIONS, AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy
from feast.types import Float64, Int64

project = Project(name="authz", description="auth end to end")
driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="driver_source", path="data/driver.parquet", timestamp_field="event_timestamp")
stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="driver_id", dtype=Int64), Field(name="conv", dtype=Float64)],
    source=source,
    online=True,
)
admins = Permission(
    name="admins",
    types=ALL_RESOURCE_TYPES,
    policy=RoleBasedPolicy(roles=["feast-admin"]),
    actions=ALL_ACTIONS,
)
readers = Permission(
    name="readers",
    types=ALL_RESOURCE_TYPES,
    policy=RoleBasedPolicy(roles=["reader", "service"]),
    actions=[AuthzedAction.DESCRIBE, AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE],
)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_data(repo):
    (repo / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "driver_id": [1, 2, 1],
            "conv": [0.25, 0.5, 0.75],
            "event_timestamp": [NOW - timedelta(hours=3), NOW - timedelta(hours=3), NOW - timedelta(hours=1)],
        }
    ).to_parquet(repo / "data" / "driver.parquet")


def wait_for_view(online_port, token, deadline=30.0):
    """Waits until the feature server's registry refresh (every second) has the applied view."""
    import requests

    body = {"features": ["driver_stats:conv"], "entities": {"driver_id": [1]}}
    headers = {"Authorization": f"Bearer {token}"}
    end = time.monotonic() + deadline
    while True:
        r = requests.post(f"http://127.0.0.1:{online_port}/get-online-features", json=body, headers=headers)
        if r.status_code == 200:
            return
        if time.monotonic() > end:
            raise AssertionError(f"the feature server never served driver_stats: {r.status_code} {r.text}")
        time.sleep(0.1)


def start(cmd, banner):
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if banner not in line:
        proc.kill()
        raise AssertionError(f"{cmd[3]} did not start: {line}{proc.stderr.read()}")
    return proc


def client_repo(path, issuer, client_id, registry_port, online_port, offline_port):
    """A Feast SDK repository that reaches everything through feast-rs as `client_id`."""
    path.mkdir(parents=True)
    write_data(path)
    (path / "definitions.py").write_text(DEFINITIONS)
    config = {
        "project": "authz",
        "provider": "local",
        "registry": {"registry_type": "remote", "path": f"127.0.0.1:{registry_port}"},
        "online_store": {"type": "remote", "path": f"http://127.0.0.1:{online_port}"},
        "offline_store": {"type": "remote", "host": "127.0.0.1", "port": offline_port},
        "auth": {
            "type": "oidc",
            "client_id": client_id,
            "client_secret": f"{client_id}-secret",
            "auth_discovery_url": issuer.discovery_url,
        },
        "entity_key_serialization_version": 3,
    }
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, feast_rs_bin, feast_cli):
    tmp = tmp_path_factory.mktemp("auth")
    issuer = Issuer()
    for client_id, roles in [
        ("admin", ["feast-admin"]),
        ("analyst", ["reader"]),
        ("stranger", []),
        ("feast-rs-service", ["service"]),
    ]:
        issuer.add_client(client_id, f"{client_id}-secret", roles=roles)
    procs = []
    try:
        # The registry server validates tokens; it keeps registry.db.
        registry_repo = tmp / "registry"
        (registry_repo / "data").mkdir(parents=True)
        (registry_repo / "feature_store.yaml").write_text(
            yaml.safe_dump(
                {
                    "project": "authz",
                    "provider": "local",
                    "registry": "data/registry.db",
                    "auth": {"type": "oidc", "client_id": "feast", "auth_discovery_url": issuer.discovery_url},
                }
            )
        )
        registry_port = free_port()
        procs.append(
            start(
                [feast_rs_bin, "-c", registry_repo, "serve-registry", "--host", "127.0.0.1", "--port", registry_port],
                "feast-rs registry server listening on",
            )
        )

        # The feature and offline servers share a repository: the online store, the data
        # files, and their own service identity for the registry.
        service_repo = tmp / "service"
        write_data(service_repo)
        (service_repo / "feature_store.yaml").write_text(
            yaml.safe_dump(
                {
                    "project": "authz",
                    "provider": "local",
                    "registry": {"registry_type": "remote", "path": f"127.0.0.1:{registry_port}"},
                    "online_store": {"type": "sqlite", "path": "data/online.db"},
                    "offline_store": {"type": "file"},
                    "auth": {
                        "type": "oidc",
                        "client_id": "feast-rs-service",
                        "client_secret": "feast-rs-service-secret",
                        "auth_discovery_url": issuer.discovery_url,
                    },
                    "entity_key_serialization_version": 3,
                }
            )
        )
        offline, offline_port = start_offline_server(feast_rs_bin, service_repo, "--registry-ttl-sec", "1")
        procs.append(offline)
        online_port = free_port()
        procs.append(
            start(
                [feast_rs_bin, "-c", service_repo, "serve", "--port", online_port, "--registry-ttl-sec", "1"],
                "feast-rs feature server listening on",
            )
        )

        repos = {
            who: client_repo(tmp / who, issuer, who, registry_port, online_port, offline_port)
            for who in ["admin", "analyst", "stranger"]
        }
        # Bootstrap as a Feast deployment does: first the permission that lets the admin
        # create everything, then the rest. (Permissions staged earlier in an apply already
        # govern its later objects, and Feast applies them in no fixed order.)
        admin_defs = repos["admin"] / "definitions.py"
        admin_defs.write_text(DEFINITIONS.split("readers = Permission(")[0])
        run([feast_cli, "apply"], cwd=repos["admin"])
        admin_defs.write_text(DEFINITIONS)
        run([feast_cli, "apply"], cwd=repos["admin"])
        wait_for_view(online_port, issuer.token("probe", ["feast-admin"]))
        yield issuer, repos, service_repo
    finally:
        for proc in procs:
            stop(proc)
        issuer.stop()


def store(repos, who):
    return FeatureStore(repo_path=str(repos[who]))


def test_admin_applies_writes_and_reads_online_and_offline(deployment):
    issuer, repos, _ = deployment
    admin = store(repos, "admin")
    assert {v.name for v in admin.list_feature_views()} == {"driver_stats"}
    assert {p.name for p in admin.list_permissions()} == {"admins", "readers"}

    admin.write_to_online_store(
        "driver_stats",
        pd.DataFrame({"driver_id": [1, 2], "conv": [0.75, 0.5], "event_timestamp": [NOW, NOW]}),
    )
    online = admin.get_online_features(features=["driver_stats:conv"], entity_rows=[{"driver_id": 1}, {"driver_id": 2}])
    assert online.to_dict()["conv"] == [0.75, 0.5]

    entities = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [NOW, NOW - timedelta(hours=2)]})
    training = admin.get_historical_features(entity_df=entities, features=["driver_stats:conv"]).to_df()
    by_driver = dict(zip(training["driver_id"], training["conv"]))
    assert by_driver == {1: 0.75, 2: 0.5}
    assert issuer.token_requests > 0


def test_reader_reads_but_cannot_write(deployment):
    _, repos, _ = deployment
    analyst = store(repos, "analyst")
    assert {v.name for v in analyst.list_feature_views()} == {"driver_stats"}
    online = analyst.get_online_features(features=["driver_stats:conv"], entity_rows=[{"driver_id": 2}])
    assert online.to_dict()["conv"] == [0.5]
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [NOW]})
    training = analyst.get_historical_features(entity_df=entities, features=["driver_stats:conv"]).to_df()
    assert list(training["conv"]) == [0.75]

    with pytest.raises(FeastPermissionError):
        analyst.write_to_online_store(
            "driver_stats", pd.DataFrame({"driver_id": [3], "conv": [0.1], "event_timestamp": [NOW]})
        )
    stats = analyst.get_feature_view("driver_stats")
    stats.description = "renamed by an analyst"
    with pytest.raises(FeastPermissionError):
        analyst.apply([stats])


def test_user_without_a_role_is_refused_everywhere(deployment, feast_cli):
    _, repos, _ = deployment
    stranger = store(repos, "stranger")
    with pytest.raises(FeastPermissionError):
        stranger.get_feature_view("driver_stats")
    with pytest.raises(FeastPermissionError):
        stranger.get_online_features(features=["driver_stats:conv"], entity_rows=[{"driver_id": 1}])
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [NOW]})
    with pytest.raises(FeastPermissionError):
        stranger.get_historical_features(entity_df=entities, features=["driver_stats:conv"]).to_df()
    applied = run([feast_cli, "apply"], cwd=repos["stranger"], check=False)
    assert applied.returncode != 0
    assert "Permission" in applied.stderr + applied.stdout


def test_servers_refuse_calls_without_a_valid_token(deployment):
    issuer, repos, service_repo = deployment
    import grpc
    import requests
    from feast.protos.feast.registry import RegistryServer_pb2, RegistryServer_pb2_grpc

    registry = yaml.safe_load((repos["admin"] / "feature_store.yaml").read_text())["registry"]["path"]
    channel = grpc.insecure_channel(registry)
    stub = RegistryServer_pb2_grpc.RegistryServerStub(channel)
    request = RegistryServer_pb2.ListFeatureViewsRequest(project="authz")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListFeatureViews(request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    forged = jwt_none(issuer)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListFeatureViews(request, metadata=[("authorization", f"Bearer {forged}")])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = stub.ListFeatureViews(
        request, metadata=[("authorization", f"Bearer {issuer.token('someone', ['reader'])}")]
    )
    assert [v.spec.name for v in ok.feature_views] == ["driver_stats"]

    online = yaml.safe_load((repos["admin"] / "feature_store.yaml").read_text())["online_store"]["path"]
    body = {"features": ["driver_stats:conv"], "entities": {"driver_id": [1]}}
    assert requests.post(f"{online}/get-online-features", json=body).status_code == 401
    headers = {"Authorization": f"Bearer {forged}"}
    assert requests.post(f"{online}/get-online-features", json=body, headers=headers).status_code == 401
    assert requests.get(f"{online}/health").status_code == 200


def jwt_none(issuer):
    """An unsigned token naming a real user: what Feast's intra-communication bypass sent."""
    import jwt

    return jwt.encode({"preferred_username": "admin", "roles": ["feast-admin"], "iss": issuer.url}, None, algorithm="none")
