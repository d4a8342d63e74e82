"""Feast's own SqlRegistry (feast==0.67.0) and `feast-rs serve-registry` on one SQL registry.

Both directions, on SQLite and on PostgreSQL (127.0.0.1:5432, a fresh database per test;
skipped with a reason when unreachable, failed under CI=true):
- Feast writes the tables (`feast apply` with `registry_type: sql`), feast-rs serves them
  as they are to the SDK's remote registry;
- feast-rs writes them (`feast apply` through the remote registry), and Feast's SqlRegistry
  reads them: same objects, `feast plan` finds nothing to change, and writes Feast makes
  directly afterwards are picked up by the running feast-rs server.
"""

import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from test_registry_server import free_port, remote_repo, wait_for_port

PG_SERVER = os.environ.get("FEAST_RS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def _postgres_url():
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - requirements.txt installs it
        return _unavailable(f"psycopg is not installed ({e})")
    name = f"feast_rs_compat_{uuid.uuid4().hex}"
    try:
        with psycopg.connect(f"{PG_SERVER}/test", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as e:
        return _unavailable(f"PostgreSQL at {PG_SERVER} is unreachable ({e})")

    def drop():
        with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # Feast rewrites postgresql:// to postgresql+psycopg://; use the explicit driver form.
    return PG_SERVER.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}", drop


def _unavailable(why):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} under CI=true")
    pytest.skip(why)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request, tmp_path):
    if request.param == "sqlite":
        # Four slashes: an absolute path (SQLAlchemy and feast-rs alike).
        yield f"sqlite:///{tmp_path}/sql_registry.db"
        return
    url, drop = _postgres_url()
    try:
        yield url
    finally:
        drop()


def sql_repo(tmp_path: Path, name: str, url: str) -> Path:
    """The compat repo with `registry_type: sql` on `url` (no cache: every read hits the tables)."""
    repo = copy_repo("feast_repo", tmp_path / name)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = {"registry_type": "sql", "path": url, "cache_ttl_seconds": 0}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return repo


@contextmanager
def serving(feast_rs_bin, repo: Path):
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(repo), "serve-registry", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve-registry did not stop within 10 s of SIGTERM")


FEAST_TABLES = [
    "projects", "entities", "data_sources", "feature_views", "stream_feature_views",
    "on_demand_feature_views", "label_views", "feature_services", "saved_datasets",
    "validation_references", "managed_infra", "permissions", "feature_view_version_history",
    "feast_metadata",
]


def table_rows(url: str) -> set:
    """Every row of Feast's tables, as (table, *columns) tuples."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                (table, *(bytes(v) if isinstance(v, memoryview) else v for v in row))
                for table in FEAST_TABLES
                for row in conn.execute(sqlalchemy.text(f"SELECT * FROM {table}"))
            }
    finally:
        engine.dispose()


def names(objects):
    return sorted(o.name for o in objects)


def listing(store: FeatureStore) -> dict:
    return {
        "entities": names(store.list_entities()),
        "feature_views": names(store.list_feature_views()),
        "on_demand_feature_views": names(store.list_on_demand_feature_views()),
        "feature_services": names(store.list_feature_services()),
        "data_sources": names(store.list_data_sources()),
        "permissions": names(store.list_permissions()),
        "projects": names(store.list_projects()),
    }


def test_feast_rs_serves_a_registry_feast_wrote(tmp_path, sql_url, feast_rs_bin, feast_cli):
    writer = sql_repo(tmp_path, "feast_writer", sql_url)
    run([feast_cli, "apply"], cwd=writer)
    direct = FeatureStore(repo_path=str(writer))
    expected = listing(direct)
    assert "driver_hourly_stats" in expected["feature_views"]

    with serving(feast_rs_bin, writer) as port:
        client_repo = remote_repo(tmp_path, port)
        client = FeatureStore(repo_path=str(client_repo))
        assert listing(client) == expected
        fv = client.get_feature_view("driver_hourly_stats")
        assert fv == direct.get_feature_view("driver_hourly_stats")
        assert client.get_project("compat").description == "feast-rs compatibility repo"
        assert "No changes to registry" in run([feast_cli, "plan"], cwd=client_repo).stdout

        # A write Feast makes directly while feast-rs serves is picked up (allow_cache=False).
        direct.delete_feature_service("driver_activity_v2")
        assert names(client.list_feature_services()) == ["driver_activity_v1"]

        # A write through feast-rs touches only its object's rows (the view and, as Feast's
        # delete_feature_view does, its version history) and the project's feast_metadata
        # timestamp: Feast's other rows stay byte for byte as Feast wrote them.
        before = table_rows(sql_url)
        client.delete_feature_view("customer_driver_affinity")
        after = table_rows(sql_url)
        removed = {r[:3] for r in before - after}
        added = {r[:3] for r in after - before}
        # (The timestamp is in whole seconds, so it may not have moved since Feast's write.)
        bumped = {("feast_metadata", "compat", "last_updated_timestamp")}
        assert removed - bumped == {
            ("feature_views", "customer_driver_affinity", "compat"),
            ("feature_view_version_history", "customer_driver_affinity", "compat"),
        }, before ^ after
        assert added <= bumped, before ^ after
        assert names(direct.list_feature_views()) == ["driver_hourly_stats", "driver_stats_fresh"]


def test_feast_reads_what_feast_rs_wrote(tmp_path, sql_url, feast_rs_bin, feast_cli):
    server_repo = sql_repo(tmp_path, "server", sql_url)
    with serving(feast_rs_bin, server_repo) as port:
        client_repo = remote_repo(tmp_path, port)
        applied = run([feast_cli, "apply"], cwd=client_repo).stdout
        assert "Created feature view driver_hourly_stats" in applied
        client = FeatureStore(repo_path=str(client_repo))
        served = listing(client)

        # Feast's SqlRegistry reads the same objects from the tables feast-rs wrote.
        direct_repo = sql_repo(tmp_path, "feast_reader", sql_url)
        direct = FeatureStore(repo_path=str(direct_repo))
        assert listing(direct) == served
        assert direct.get_feature_view("driver_hourly_stats") == client.get_feature_view("driver_hourly_stats")
        assert direct.get_on_demand_feature_view("transformed_conv_rate").name == "transformed_conv_rate"
        assert direct.get_project("compat").owner == "ml@example.com"
        assert direct.registry.list_project_metadata("compat")[0].project_uuid
        proto = direct.registry.proto()
        assert {p.spec.name for p in proto.projects} == {"compat"}
        assert len(proto.infra.infra_objects) == 3
        # ... and finds nothing to change.
        assert "No changes to registry" in run([feast_cli, "plan"], cwd=direct_repo).stdout

        # Feast deletes directly, feast-rs then writes another object: both stick.
        direct.delete_feature_service("driver_activity_v2")
        client.delete_feature_view("customer_driver_affinity")
        assert names(direct.list_feature_views()) == ["driver_hourly_stats", "driver_stats_fresh"]
        with pytest.raises(FeatureServiceNotFoundException):
            client.get_feature_service("driver_activity_v2")
        assert names(client.list_feature_services()) == ["driver_activity_v1"]
