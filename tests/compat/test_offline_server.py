"""`feast-rs serve-offline` (Arrow Flight) driven by the Feast SDK's remote offline store
(`offline_store: {type: remote}`) and by a raw pyarrow Flight client, compared with what
Feast's own `file` (dask) store computes on the same files.

Historical retrieval through Flight is covered case by case in test_historical_features.py;
this file covers the rest of the protocol: the materialization pulls, `materialize` end to
end, offline writes and offline pushes, the legacy do_put → get_flight_info → do_get path,
list_actions, and errors (a clear Flight error, and the server keeps serving).
"""

from datetime import timedelta
import json
import shutil
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.flight as fl
import pytest
import yaml

from conftest import copy_repo, run
from feast import FeatureStore
from feast.data_source import PushMode
from feast.errors import DataSourceObjectNotFoundException, FeastError
from feast.infra.offline_stores.dask import DaskOfflineStore
from feast.infra.offline_stores.remote import RemoteOfflineStore
from test_historical_features import (
    DAY,
    ENTITYLESS_VIEW,
    HOUR,
    T0,
    norm,
    remote_client,
    start_offline_server,
    stop,
    write_data,
)


def make_repo(tmp, feast_cli):
    repo = copy_repo("feast_repo", tmp)
    (repo / "offline_defs.py").write_text(ENTITYLESS_VIEW)
    write_data(repo)
    run([feast_cli, "apply"], cwd=repo)
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory, feast_rs_bin, feast_cli):
    """(server repo, local FeatureStore on it, remote FeatureStore, port)."""
    repo = make_repo(tmp_path_factory.mktemp("offline_server"), feast_cli)
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        remote = remote_client(repo, port, tmp_path_factory.mktemp("offline_client"))
        yield repo, FeatureStore(repo_path=str(repo)), remote, port
    finally:
        stop(proc)


def frame_rows(df, keys):
    df = df[sorted(df.columns)].sort_values(keys).reset_index(drop=True)
    return [{k: norm(v) for k, v in r.items()} for r in df.to_dict("records")]


PULL_ARGS = dict(
    join_key_columns=["driver_id"],
    feature_name_columns=["conv", "avg_daily_trips", "name"],
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)


@pytest.mark.parametrize(
    "start,end",
    [(T0, T0 + DAY), (T0 - DAY, T0 + 10 * DAY), (T0 + HOUR, T0 + 2 * DAY), (T0, T0)],
)
def test_pull_latest_equals_feast(server, start, end):
    repo, local, remote, _ = server
    source = local.get_data_source("driver_hourly_stats_source")
    args = dict(PULL_ARGS, data_source=source, start_date=start, end_date=end)
    ours = RemoteOfflineStore.pull_latest_from_table_or_query(config=remote.config, **args).to_df()
    theirs = DaskOfflineStore.pull_latest_from_table_or_query(config=local.config, **args).to_df()
    assert set(ours.columns) == set(theirs.columns)
    assert frame_rows(ours, ["driver_id"]) == frame_rows(theirs, ["driver_id"])
    if start == T0 and end == T0 + DAY:
        # The event-timestamp tie of driver 1001 goes to the later created timestamp.
        row = ours.set_index("driver_id").loc[1001]
        assert row["avg_daily_trips"] == 3 and row["name"] == "c"
    assert str(ours["event_timestamp"].dtype).endswith("UTC]")


def test_pull_all_and_keyless_pull(server):
    repo, local, remote, _ = server
    source = local.get_data_source("driver_hourly_stats_source")
    args = dict(PULL_ARGS, data_source=source, start_date=T0, end_date=T0 + DAY)
    ours = RemoteOfflineStore.pull_all_from_table_or_query(config=remote.config, **args).to_df()
    theirs = DaskOfflineStore.pull_all_from_table_or_query(config=local.config, **args).to_df()
    keys = ["driver_id", "event_timestamp", "created"]
    assert frame_rows(ours, keys) == frame_rows(theirs, keys)
    assert len(ours) == 5

    # A source without join keys: Feast's `__dummy_id` column, one latest row.
    gsource = local.get_data_source("global_stats_source")
    keyless = dict(
        data_source=gsource,
        join_key_columns=[],
        feature_name_columns=["total"],
        timestamp_field="event_timestamp",
        created_timestamp_column=None,
        start_date=T0 - DAY,
        end_date=T0 + 2 * DAY,
    )
    latest = RemoteOfflineStore.pull_latest_from_table_or_query(config=remote.config, **keyless).to_df()
    assert list(latest["total"]) == [200]
    assert list(latest["__dummy_id"]) == [""]


def test_materialize_through_flight_equals_local_materialize(server, tmp_path):
    """`materialize` with the remote offline store pulls over Flight; the online store then
    holds what Feast's own materialization from the dask store writes."""
    repo, _, _, port = server
    online = {}
    for name, offline in [("theirs", None), ("ours", port)]:
        client = tmp_path / name
        shutil.copytree(repo / "data", client / "data")
        config = yaml.safe_load((repo / "feature_store.yaml").read_text())
        if offline is not None:
            config["offline_store"] = {"type": "remote", "host": "127.0.0.1", "port": offline}
        (client / "feature_store.yaml").write_text(yaml.safe_dump(config))
        fs = FeatureStore(repo_path=str(client))
        fs.materialize(
            start_date=T0 - DAY,
            end_date=T0 + DAY,
            feature_views=["driver_hourly_stats", "global_stats"],
        )
        online[name] = fs.get_online_features(
            features=[
                "driver_hourly_stats:conv_rate",
                "driver_hourly_stats:avg_daily_trips",
                "driver_hourly_stats:name",
                "driver_hourly_stats:recent_trips",
                "global_stats:total",
            ],
            entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 1003}],
        ).to_dict()
    assert online["ours"] == online["theirs"]
    assert online["ours"]["avg_daily_trips"] == [3, 5, 7]
    assert online["ours"]["total"] == [200, 200, 200]


def test_write_to_offline_store_and_offline_push(tmp_path, feast_rs_bin, feast_cli):
    """`write_to_offline_store` and `push(to=OFFLINE)` through the server append to the
    Parquet source, and Feast's own dask store reads the rows back."""
    repo = make_repo(tmp_path / "srv", feast_cli)
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        remote = remote_client(repo, port, tmp_path / "client")
        before = pd.read_parquet(repo / "data" / "driver_stats.parquet")
        new = before.iloc[[0]].copy()
        new["driver_id"] = 2001
        new["avg_daily_trips"] = 42
        new["event_timestamp"] = T0 + 3 * DAY
        new["created"] = T0 + 3 * DAY
        remote.write_to_offline_store("driver_hourly_stats", new.reset_index(drop=True))

        # The SDK checks source column names, then renames them by the source's
        # field_mapping (conv -> conv_rate) before sending: the server maps them back.
        pushed = before.iloc[[1]].copy()
        pushed["driver_id"] = 2002
        pushed["avg_daily_trips"] = 43
        pushed["event_timestamp"] = T0 + 3 * DAY
        pushed["created"] = T0 + 3 * DAY
        remote.push("driver_stats_push", pushed.reset_index(drop=True), to=PushMode.OFFLINE)

        after = pd.read_parquet(repo / "data" / "driver_stats.parquet")
        assert len(after) == len(before) + 2
        assert list(after.columns) == list(before.columns)
        assert after.dtypes.equals(before.dtypes)

        entity_df = pd.DataFrame(
            {"driver_id": [2001, 2002, 1002], "event_timestamp": [T0 + 3 * DAY + HOUR] * 2 + [T0 + HOUR]}
        )
        feats = ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:conv_rate"]
        local = FeatureStore(repo_path=str(repo))
        theirs = local.get_historical_features(entity_df=entity_df, features=feats).to_df()
        ours = remote.get_historical_features(entity_df=entity_df, features=feats).to_df()
        assert list(ours["avg_daily_trips"]) == [42, 43, 5]
        assert frame_rows(ours, ["driver_id"]) == frame_rows(theirs, ["driver_id"])

        # A frame whose columns do not match the source is refused and writes nothing.
        with pytest.raises(Exception, match="columns"):
            RemoteOfflineStore.offline_write_batch(
                remote.config,
                remote.get_feature_view("driver_hourly_stats"),
                pa.table({"driver_id": [1], "bogus": [2]}),
                None,
            )
        assert len(pd.read_parquet(repo / "data" / "driver_stats.parquet")) == len(after)
    finally:
        stop(proc)


def command(api, **params):
    return json.dumps({"command_id": str(uuid.uuid4()), "api": api, **params})


HISTORICAL = dict(
    feature_view_names=["driver_hourly_stats"],
    feature_refs=["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:name"],
    project="compat",
    full_feature_names=False,
    name_aliases=[None],
)


def exchange(client, cmd, table):
    writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(cmd))
    writer.begin(table.schema)
    writer.write_table(table)
    writer.done_writing()
    return reader.read_all()


def test_legacy_put_info_get_path_and_list_actions(server):
    _, _, _, port = server
    client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
    entities = pa.Table.from_pandas(
        pd.DataFrame({"driver_id": [1001, 1002], "event_timestamp": [T0 + DAY, T0 + HOUR]})
    )
    cmd = command("get_historical_features", **HISTORICAL)
    descriptor = fl.FlightDescriptor.for_command(cmd)
    writer, _ = client.do_put(descriptor, entities.schema)
    writer.write_table(entities)
    writer.close()
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1
    legacy = client.do_get(info.endpoints[0].ticket).read_all()
    assert legacy.to_pydict()["avg_daily_trips"] == [3, 5]
    # The same request over do_exchange gives the same table.
    assert exchange(client, command("get_historical_features", **HISTORICAL), entities).equals(legacy)
    # A ticket is served once (gRPC NOT_FOUND, which pyarrow raises as a KeyError).
    with pytest.raises(KeyError, match="Unknown ticket"):
        client.do_get(info.endpoints[0].ticket).read_all()
    with pytest.raises(KeyError, match="Flight not found"):
        client.get_flight_info(fl.FlightDescriptor.for_command(command("get_historical_features")))

    actions = sorted(a.type for a in client.list_actions())
    assert actions == ["offline_write_batch", "persist", "write_logged_features"]


def test_column_names_and_types_match_feast(server):
    _, local, remote, _ = server
    source = local.get_data_source("driver_hourly_stats_source")
    ours = remote._get_provider().get_table_column_names_and_types_from_data_source(remote.config, source)
    theirs = source.get_table_column_names_and_types(local.config)
    assert list(ours) == list(theirs)


def test_bad_requests_are_clear_flight_errors_and_the_server_keeps_serving(server, tmp_path):
    repo, _, remote, port = server
    client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
    good = pa.Table.from_pandas(pd.DataFrame({"driver_id": [1001], "event_timestamp": [T0 + DAY]}))

    def fails(cmd, table, match):
        # pyarrow raises by gRPC status: FlightServerError (UNKNOWN), ArrowInvalid
        # (INVALID_ARGUMENT), ...; Feast's client reads the envelope out of any of them.
        with pytest.raises((fl.FlightError, pa.ArrowException)) as e:
            exchange(client, cmd, table)
        assert "Flight error: {" in str(e.value), str(e.value)
        assert match in str(e.value), str(e.value)

    # Unknown view: Feast's envelope, so the SDK re-raises FeatureViewNotFoundException.
    fails(
        command("get_historical_features", **dict(HISTORICAL, feature_view_names=["nope"], feature_refs=["nope:x"])),
        good,
        '"class": "FeatureViewNotFoundException"',
    )
    # Entity table without the join key.
    fails(
        command("get_historical_features", **HISTORICAL),
        pa.Table.from_pandas(pd.DataFrame({"driver": [1001], "event_timestamp": [T0]})),
        "no column driver_id",
    )
    # Timestamp column of the wrong type.
    fails(
        command("get_historical_features", **HISTORICAL),
        pa.table({"driver_id": [1001], "event_timestamp": ["yesterday"]}),
        "event_timestamp",
    )
    # Another tenant's project.
    fails(command("get_historical_features", **dict(HISTORICAL, project="other")), good, "serves project compat")
    # A data source sent inline may not point outside the repository (no probing of the
    # server's files); the registered source of that name, with its own path, is fine.
    mock = pa.table({"key": ["m"]})
    outside = json.dumps({"name": "x", "type": "BATCH_FILE", "fileOptions": {"uri": "/etc/hostname"}})
    fails(
        command("get_table_column_names_and_types_from_data_source", data_source_proto=outside),
        mock,
        "inside the server's repository",
    )
    registered = json.dumps(
        {"name": "global_stats_source", "type": "BATCH_FILE", "fileOptions": {"uri": "data/global_stats.parquet"}}
    )
    listed = exchange(
        client, command("get_table_column_names_and_types_from_data_source", data_source_proto=registered), mock
    )
    assert "total" in listed.to_pydict()["name"]
    # Not JSON / no api.
    fails("not json", good, "not JSON")
    fails(json.dumps({"command_id": "x"}), good, "api parameter is mandatory")

    # Through the SDK: the exception class comes back.
    with pytest.raises(DataSourceObjectNotFoundException):
        RemoteOfflineStore.pull_latest_from_table_or_query(
            config=remote.config,
            data_source=type("S", (), {"name": "nope"})(),
            join_key_columns=["driver_id"],
            feature_name_columns=["conv"],
            timestamp_field="event_timestamp",
            created_timestamp_column=None,
            start_date=T0,
            end_date=T0 + DAY,
        ).to_df()

    # A source file that is missing: a clear error naming it.
    moved = tmp_path / "customer_profile.parquet"
    shutil.move(repo / "data" / "customer_profile.parquet", moved)
    try:
        with pytest.raises(FeastError, match="customer_profile.parquet does not exist"):
            remote.get_historical_features(
                entity_df=pd.DataFrame({"driver_id": [1001], "customer_id": ["c1"], "event_timestamp": [T0]}),
                features=["customer_driver_affinity:affinity"],
            ).to_df()
    finally:
        shutil.move(moved, repo / "data" / "customer_profile.parquet")

    # Still serving.
    assert exchange(client, command("get_historical_features", **HISTORICAL), good).to_pydict()["avg_daily_trips"] == [3]


def test_create_saved_dataset_persists_through_the_server(tmp_path, feast_rs_bin, feast_cli):
    """`create_saved_dataset` runs the retrieval on the server (`persist`), which writes the
    Parquet file inside its repository; the SDK registers the dataset and reads it back
    through the server."""
    from feast.errors import SavedDatasetLocationAlreadyExists
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    repo = make_repo(tmp_path / "srv", feast_cli)
    proc, port = start_offline_server(feast_rs_bin, repo)
    try:
        remote = remote_client(repo, port, tmp_path / "client")
        entity_df = pd.DataFrame(
            {"driver_id": [1001, 1002, 9999], "event_timestamp": [T0 + DAY, T0 + HOUR, T0]}
        )
        feats = ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:name"]
        job = remote.get_historical_features(entity_df=entity_df, features=feats)
        storage = SavedDatasetFileStorage(path="data/saved/training.parquet")
        remote.create_saved_dataset(from_=job, name="training", storage=storage)

        saved = pd.read_parquet(repo / "data" / "saved" / "training.parquet")
        pd.testing.assert_frame_equal(saved, job.to_df(), check_exact=True)
        assert list(saved["avg_daily_trips"].fillna(-1)) == [3, 5, -1]
        # Registered by the SDK, and read back through the server.
        back = remote.get_saved_dataset("training").to_df()
        assert sorted(back["avg_daily_trips"].fillna(-1)) == [-1, 3, 5]

        with pytest.raises(SavedDatasetLocationAlreadyExists):
            remote.create_saved_dataset(from_=job, name="training2", storage=storage)
        remote.create_saved_dataset(from_=job, name="training3", storage=storage, allow_overwrite=True)

        # A destination outside the repository is refused.
        with pytest.raises(FeastError, match="inside the server's repository"):
            remote.create_saved_dataset(
                from_=job, name="escape", storage=SavedDatasetFileStorage(path="../escape.parquet")
            )
        assert not (tmp_path / "srv" / "escape.parquet").exists()
    finally:
        stop(proc)


def test_entity_sql_runs_on_a_file_store_server(server):
    """An entity_df given as SQL to a file-store server runs on DataFusion (one of the
    project's data sources, or none); a query that cannot run is a clear error, and the
    server keeps serving."""
    _, _, remote, _ = server
    df = remote.get_historical_features(
        "SELECT CAST(1001 AS BIGINT) AS driver_id, now() AS event_timestamp",
        ["driver_hourly_stats:conv_rate"],
    ).to_df()
    assert list(df.columns) == ["driver_id", "event_timestamp", "conv_rate"]
    assert len(df) == 1
    with pytest.raises(FeastError) as e:
        remote.get_historical_features(
            "SELECT driver_id FROM orders", ["driver_hourly_stats:conv_rate"]
        ).to_df()
    assert "entity_df_sql" in str(e.value) and "orders" in str(e.value)
    df = remote.get_historical_features(
        "SELECT CAST(1001 AS BIGINT) AS driver_id, now() AS event_timestamp",
        ["driver_hourly_stats:conv_rate"],
    ).to_df()
    assert len(df) == 1
