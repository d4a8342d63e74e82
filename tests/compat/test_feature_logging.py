"""`store.write_logged_features(...)` by the Feast SDK on a remote offline store
(`offline_store: {type: remote}`) through `feast-rs serve-offline`, compared with Feast's
own file store writing the same logs: the same files (directories, names), columns, types
and rows under the feature service's `FileLoggingDestination`.
"""

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
import shutil

import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq
import pytest

from conftest import copy_repo, run
from feast import FeatureStore
from feast.feature_logging import FeatureServiceLoggingSource
from test_historical_features import remote_client, start_offline_server, stop, write_data

LOGGED_SERVICES = '''
from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination

from definitions import driver_hourly_stats

driver_logged_by_day = FeatureService(
    name="driver_logged_by_day",
    features=[driver_hourly_stats[["conv_rate", "acc_rate"]]],
    logging_config=LoggingConfig(
        destination=FileLoggingDestination(path="logs/by_day", partition_by=["__log_date"])
    ),
)
driver_logged = FeatureService(
    name="driver_logged",
    features=[driver_hourly_stats[["conv_rate"]]],
    logging_config=LoggingConfig(destination=FileLoggingDestination(path="logs/all")),
)
'''


@pytest.fixture(scope="module")
def repos(tmp_path_factory, feast_rs_bin, feast_cli):
    """(server repo, Feast's repo: a copy of it, remote FeatureStore)."""
    tmp = tmp_path_factory.mktemp("feature_logging")
    repo = copy_repo("feast_repo", tmp)
    (repo / "logged_services.py").write_text(LOGGED_SERVICES)
    write_data(repo)
    run([feast_cli, "apply"], cwd=repo)
    feast_repo = tmp / "feast_side"
    shutil.copytree(repo, feast_repo)
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        remote = remote_client(repo, port, tmp_path_factory.mktemp("logging_client"))
        yield repo, feast_repo, remote, port
    finally:
        stop(proc)


def logs(store, service):
    """Three logged requests over two days, in the schema Feast's logger produces."""
    schema = FeatureServiceLoggingSource(service, store.config.project).get_schema(store.registry)
    t0 = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    n = 3
    columns = {}
    for field in schema:
        name, ty = field.name, field.type
        if name == "driver_id":
            columns[name] = [1001, 1002, 1003]
        elif name == "__log_date":
            columns[name] = [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 1)]
        elif name == "__log_timestamp" or name.endswith("__timestamp"):
            columns[name] = [t0 + timedelta(days=i) for i in range(n)]
        elif name == "__request_id":
            columns[name] = [f"req-{i}" for i in range(n)]
        elif name.endswith("__status"):
            columns[name] = [1, 1, 2]
        elif pa.types.is_floating(ty):
            columns[name] = [0.25 * (i + 1) for i in range(n)]
        else:
            raise AssertionError(f"unexpected logging column {name}: {ty}")
    return pa.Table.from_pydict(columns, schema=schema)


def written(root: Path):
    """{directory relative to root: [(file name, table)]}."""
    out = {}
    for f in sorted(root.rglob("*.parquet")):
        out.setdefault(str(f.parent.relative_to(root)), []).append((f.name, pq.read_table(f)))
    return out


def shape(files):
    """What must agree: per directory, the files' count, name form, schema and rows."""
    result = {}
    for d, tables in files.items():
        result[d] = [
            (
                len(name) == 32 + len("-0.parquet") and name.endswith("-0.parquet"),
                [(f.name, str(f.type)) for f in table.schema],
                table.to_pylist(),
            )
            for name, table in tables
        ]
    return result


@pytest.mark.parametrize("service_name,path", [("driver_logged_by_day", "logs/by_day"), ("driver_logged", "logs/all")])
def test_logs_land_where_feasts_file_store_puts_them(repos, service_name, path):
    repo, feast_repo, remote, _ = repos
    service = remote.get_feature_service(service_name)
    table = logs(remote, service)

    remote.write_logged_features(table, source=service)

    feast = FeatureStore(repo_path=str(feast_repo))
    feast.write_logged_features(table, source=feast.get_feature_service(service_name))

    ours, theirs = written(repo / path), written(feast_repo / path)
    assert ours, f"nothing written under {repo / path}"
    assert shape(ours) == shape(theirs)
    if service_name == "driver_logged_by_day":
        assert sorted(ours) == ["2024-05-01", "2024-05-02"]
        assert [r["driver_id"] for r in ours["2024-05-01"][0][1].to_pylist()] == [1001, 1003]


def test_logs_from_a_parquet_path_and_bad_requests(repos, tmp_path):
    repo, _, remote, port = repos
    service = remote.get_feature_service("driver_logged")
    before = len(list((repo / "logs/all").rglob("*.parquet"))) if (repo / "logs/all").exists() else 0
    # The SDK reads a path itself and sends the table.
    path = tmp_path / "logs.parquet"
    pq.write_table(logs(remote, service), path)
    remote.write_logged_features(path, source=service)
    assert len(list((repo / "logs/all").rglob("*.parquet"))) == before + 1

    # A feature service without logging_config, an unknown one: a Flight error, nothing written.
    client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
    for name, expected in [("driver_activity_v1", "logging_config"), ("no_such_service", "FeatureServiceNotFoundException")]:
        descriptor = fl.FlightDescriptor.for_command(
            f'{{"command_id": "x", "api": "write_logged_features", "feature_service_name": "{name}"}}'
        )
        upload = pa.table({"driver_id": [1]})
        writer, _ = client.do_put(descriptor, upload.schema)
        writer.write_table(upload)
        with pytest.raises(pa.ArrowException) as raised:
            writer.close()
        assert expected in str(raised.value)
    assert len(list((repo / "logs/all").rglob("*.parquet"))) == before + 1
