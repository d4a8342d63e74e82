"""The Feast SDK (feast==0.67.0) with `registry_type: remote` against `feast-rs serve-registry`.

`feast apply`, `feast plan`, the CLI listings and the SDK's list/get/delete calls go through
feast-rs over gRPC; not-found errors come back as Feast's own exception classes; two projects
in one registry stay isolated; the served registry.db is Feast's format.
"""

import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException, EntityNotFoundException
from feast.protos.feast.core.Registry_pb2 import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"feast-rs serve-registry exited early: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"registry server did not listen on {port} within {deadline}s")


@pytest.fixture
def registry_server(tmp_path, feast_rs_bin):
    server_repo = tmp_path / "server"
    (server_repo / "data").mkdir(parents=True)
    (server_repo / "feature_store.yaml").write_text(
        "project: compat\nregistry: data/registry.db\nprovider: local\nonline_store: {type: sqlite}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(server_repo), "serve-registry", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        yield port, server_repo
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve-registry did not stop within 10 s of SIGTERM")


def remote_repo(tmp_path: Path, port: int, name: str = "feast_repo", project: str = "compat") -> Path:
    repo = copy_repo(name, tmp_path / project)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["project"] = project
    config["registry"] = {"registry_type": "remote", "path": f"127.0.0.1:{port}"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return repo


def test_feast_apply_plan_list_against_feast_rs(tmp_path, registry_server, feast_cli):
    port, server_repo = registry_server
    repo = remote_repo(tmp_path, port)

    applied = run([feast_cli, "apply"], cwd=repo).stdout
    assert "Created feature view driver_hourly_stats" in applied
    plan = run([feast_cli, "plan"], cwd=repo).stdout
    assert "No changes to registry" in plan, plan

    listing = run([feast_cli, "feature-views", "list"], cwd=repo).stdout
    for name in ["driver_hourly_stats", "driver_stats_fresh", "customer_driver_affinity", "transformed_conv_rate"]:
        assert name in listing
    assert "driver_activity_v1" in run([feast_cli, "feature-services", "list"], cwd=repo).stdout

    store = FeatureStore(repo_path=str(repo))
    assert {e.name for e in store.list_entities()} == {"driver", "customer"}
    assert {v.name for v in store.list_feature_views()} == {
        "driver_hourly_stats",
        "driver_stats_fresh",
        "customer_driver_affinity",
    }
    assert store.get_feature_view("driver_hourly_stats").ttl.total_seconds() == 86400
    assert store.get_on_demand_feature_view("transformed_conv_rate").name == "transformed_conv_rate"
    assert {p.name for p in store.list_permissions()} == {"feature-readers", "writers"}
    assert store.get_data_source("driver_stats_push").name == "driver_stats_push"
    assert store.get_project("compat").description == "feast-rs compatibility repo"

    with pytest.raises(FeatureViewNotFoundException):
        store.get_feature_view("no_such_view")
    with pytest.raises(EntityNotFoundException):
        store.get_entity("no_such_entity")

    store.delete_feature_service("driver_activity_v2")
    with pytest.raises(FeatureServiceNotFoundException):
        store.get_feature_service("driver_activity_v2")
    store.refresh_registry()
    assert {s.name for s in store.list_feature_services()} == {"driver_activity_v1"}

    # What the server wrote is Feast's registry.db.
    served = Registry()
    served.ParseFromString((server_repo / "data" / "registry.db").read_bytes())
    assert {fv.spec.name for fv in served.feature_views} == {
        "driver_hourly_stats",
        "driver_stats_fresh",
        "customer_driver_affinity",
    }
    assert served.version_id and served.HasField("last_updated")


def test_projects_are_isolated(tmp_path, registry_server, feast_cli):
    port, _ = registry_server
    compat = remote_repo(tmp_path, port, project="compat")
    other = remote_repo(tmp_path, port, project="other")
    # The other project declares only the entities and one view.
    defs = (other / "definitions.py").read_text()
    defs = defs.split("customer_profile_source = FileSource(")[0]
    defs = defs.replace("project = Project(name=\"compat\"", "project = Project(name=\"other\"")
    (other / "definitions.py").write_text(defs)

    run([feast_cli, "apply"], cwd=compat)
    run([feast_cli, "apply"], cwd=other)

    compat_store = FeatureStore(repo_path=str(compat))
    other_store = FeatureStore(repo_path=str(other))
    assert {v.name for v in other_store.list_feature_views()} == {"driver_hourly_stats", "driver_stats_fresh"}
    assert len(compat_store.list_feature_views()) == 3
    assert other_store.list_feature_services() == []
    assert "No changes to registry" in run([feast_cli, "plan"], cwd=compat).stdout
    with pytest.raises(FeatureViewNotFoundException):
        other_store.get_feature_view("customer_driver_affinity")
    assert {p.name for p in other_store.list_projects()} == {"compat", "other"}


def test_feast_materialize_lifecycle_state_through_feast_rs(tmp_path, registry_server, feast_cli):
    """Feast 0.67's materialize moves a view through its lifecycle states with
    `apply_feature_view` (MATERIALIZING) and `apply_materialization` (AVAILABLE_ONLINE); the
    feast-rs registry applies the state the client sets, and a plain re-apply keeps it."""
    from feast.feature_view import FeatureViewState

    port, _ = registry_server
    repo = remote_repo(tmp_path, port)
    run([feast_cli, "apply"], cwd=repo)
    store = FeatureStore(repo_path=str(repo))
    end = datetime.now(timezone.utc)
    store.materialize(end - timedelta(days=3), end, feature_views=["driver_hourly_stats"])
    fv = store.registry.get_feature_view("driver_hourly_stats", "compat", allow_cache=False)
    assert fv.state == FeatureViewState.AVAILABLE_ONLINE

    # What Feast's materialize does before it runs a view that has a state.
    fv.state = FeatureViewState.MATERIALIZING
    store.registry.apply_feature_view(fv, "compat", commit=True)
    fv = store.registry.get_feature_view("driver_hourly_stats", "compat", allow_cache=False)
    assert fv.state == FeatureViewState.MATERIALIZING
    assert len(fv.materialization_intervals) == 1

    # A second materialization ends it (Feast treats MATERIALIZING as already reserved).
    store.materialize(end, datetime.now(timezone.utc), feature_views=["driver_hourly_stats"])
    fv = store.registry.get_feature_view("driver_hourly_stats", "compat", allow_cache=False)
    assert fv.state == FeatureViewState.AVAILABLE_ONLINE
    assert len(fv.materialization_intervals) == 2

    # `feast apply` (state unspecified) keeps it.
    run([feast_cli, "apply"], cwd=repo)
    fv = store.registry.get_feature_view("driver_hourly_stats", "compat", allow_cache=False)
    assert fv.state == FeatureViewState.AVAILABLE_ONLINE
