"""Registry lineage served by `feast-rs serve-registry` against Feast's own computation.

The compat repo (plus a stream feature view, a label view in a feature service, an
entityless view, an `input_schema` on-demand view and a saved dataset) is applied through
feast-rs with the Feast SDK; then the lineage feast-rs serves over gRPC
(`GetRegistryLineage`, `GetObjectRelationships`) is compared with what feast==0.67.0
computes from the same registry.db with a local file registry.
"""

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import grpc
import pandas as pd
import pytest

from conftest import run
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
from feast.lineage.registry_lineage import FeastObjectType
from feast.protos.feast.registry import RegistryServer_pb2 as pb
from feast.protos.feast.registry import RegistryServer_pb2_grpc
from feast.registry_server import apply_pagination_and_sorting
from feast.saved_dataset import SavedDataset
from test_registry_server import free_port, remote_repo, wait_for_port

PROJECT = "compat"

EXTRA_DEFINITIONS = '''

# --- lineage additions ---------------------------------------------------------------
from feast import KafkaSource, LabelView
from feast.data_format import JsonFormat
from feast.stream_feature_view import StreamFeatureView

driver_kafka = KafkaSource(
    name="driver_kafka",
    kafka_bootstrap_servers="localhost:9092",
    topic="drivers",
    timestamp_field="event_timestamp",
    message_format=JsonFormat(schema_json="driver_id integer, conv_rate double, event_timestamp timestamp"),
    batch_source=driver_stats_source,
)

driver_stream = StreamFeatureView(
    name="driver_stream",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="conv_rate", dtype=Float32)],
    source=driver_kafka,
    timestamp_field="event_timestamp",
)

driver_labels_source = FileSource(
    name="driver_labels_source",
    path="data/driver_labels.parquet",
    timestamp_field="event_timestamp",
)

driver_labels_push = PushSource(name="driver_labels_push", batch_source=driver_labels_source)

driver_labels = LabelView(
    name="driver_labels",
    source=driver_labels_push,
    entities=[driver],
    schema=[Field(name="is_good", dtype=Int64), Field(name="labeler", dtype=String)],
)

global_stats = FeatureView(
    name="global_stats",
    entities=[],
    ttl=timedelta(days=1),
    schema=[Field(name="total_trips", dtype=Int64)],
    source=customer_profile_source,
)


@on_demand_feature_view(
    input_schema=[Field(name="raw", dtype=Int64)],
    schema=[Field(name="doubled", dtype=Int64)],
    mode="python",
)
def doubled(inputs):
    return {"doubled": [v * 2 for v in inputs["raw"]]}


driver_training = FeatureService(
    name="driver_training",
    features=[driver_hourly_stats[["conv_rate"]], driver_labels, doubled],
)
'''


def _write_label_data(repo: Path) -> None:
    ts = pd.Timestamp("2024-05-01", tz="UTC")
    pd.DataFrame(
        {"driver_id": [1001], "is_good": [1], "labeler": ["a"], "event_timestamp": [ts]}
    ).to_parquet(repo / "data" / "driver_labels.parquet")


def _key(source_type, source_name, target_type, target_name):
    return (source_type, source_name, target_type, target_name)


def from_feast(relations):
    """Feast's EntityRelation dataclasses as (source type, name, target type, name)."""
    return [_key(r.source.type.value, r.source.name, r.target.type.value, r.target.name) for r in relations]


def from_grpc(relations):
    return [_key(r.source.type, r.source.name, r.target.type, r.target.name) for r in relations]


def without_map_ordered(rels, direct, on_demand_names):
    """Drops the edges whose order Feast takes from a protobuf map's (hash) iteration: an
    on-demand view's sources, and what they propagate into services and entity links."""
    sources = {
        (r[0], r[1])
        for r in direct
        if r[2] == "featureView" and r[3] in on_demand_names and r[0] in ("dataSource", "featureView")
    }
    return [
        r
        for r in rels
        if not (
            ((r[0], r[1]) in sources and r[2] in ("featureView", "featureService"))
            or (r[0] == "entity" and (r[2], r[3]) in sources)
        )
    ]


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory, feast_rs_bin):
    """One `feast-rs serve-registry` for the module (the tests only read)."""
    server_repo = tmp_path_factory.mktemp("server")
    (server_repo / "data").mkdir()
    (server_repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\nregistry: data/registry.db\nprovider: local\nonline_store: {{type: sqlite}}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(feast_rs_bin), "-c", str(server_repo), "serve-registry", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
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


@pytest.fixture(scope="module")
def served(tmp_path_factory, registry_server, feast_cli):
    """Applies the extended compat repo through feast-rs; returns (stub, Feast's local registry, remote store)."""
    port, server_repo = registry_server
    tmp_path = tmp_path_factory.mktemp("lineage")
    repo = remote_repo(tmp_path, port)
    (repo / "definitions.py").write_text((repo / "definitions.py").read_text() + EXTRA_DEFINITIONS)
    _write_label_data(repo)
    run([feast_cli, "apply"], cwd=repo)

    remote = FeatureStore(repo_path=str(repo))
    remote.registry.apply_saved_dataset(
        SavedDataset(
            name="training_set",
            features=["driver_hourly_stats:conv_rate", "driver_labels:is_good"],
            join_keys=["driver_id"],
            storage=SavedDatasetFileStorage(path="data/driver_stats.parquet"),
            feature_service_name="driver_activity_v1",
        ),
        PROJECT,
        commit=True,
    )

    # Feast itself, on a copy of the registry.db the server wrote, through a local file registry.
    local_repo = tmp_path / "local"
    (local_repo / "data").mkdir(parents=True)
    shutil.copy(server_repo / "data" / "registry.db", local_repo / "data" / "registry.db")
    (local_repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        "online_store: {type: sqlite, path: online.db}\n"
        "entity_key_serialization_version: 3\n"
    )
    local = FeatureStore(repo_path=str(local_repo)).registry
    assert {v.name for v in local.list_stream_feature_views(PROJECT)} == {"driver_stream"}
    assert {v.name for v in local.list_label_views(PROJECT)} == {"driver_labels"}
    assert {d.name for d in local.list_saved_datasets(PROJECT)} == {"training_set"}

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield RegistryServer_pb2_grpc.RegistryServerStub(channel), local, remote
    finally:
        channel.close()


def served_lineage(stub, **kwargs):
    response = stub.GetRegistryLineage(pb.GetRegistryLineageRequest(project=PROJECT, **kwargs))
    return response, from_grpc(response.relationships), from_grpc(response.indirect_relationships)


def test_full_lineage_matches_feast(served):
    stub, local, _ = served
    direct, indirect = local.get_registry_lineage(PROJECT)
    feast_direct, feast_indirect = from_feast(direct), from_feast(indirect)
    response, ours_direct, ours_indirect = served_lineage(stub)

    assert Counter(ours_direct) == Counter(feast_direct)
    assert Counter(ours_indirect) == Counter(feast_indirect)
    # Every kind of edge is exercised.
    kinds = {(r[0], r[2]) for r in feast_direct}
    assert kinds >= {
        ("featureView", "featureService"),
        ("labelView", "featureService"),
        ("entity", "featureView"),
        ("feature", "featureView"),
        ("dataSource", "featureView"),
        ("featureView", "featureView"),
        ("entity", "labelView"),
        ("dataSource", "labelView"),
    }
    assert ("dataSource", "driver_kafka", "featureView", "driver_stream") in feast_direct
    assert ("dataSource", "__input_schema__doubled", "featureView", "doubled") in feast_direct
    assert ("entity", "__dummy", "featureView", "global_stats") in feast_direct
    # Feast leaves saved datasets out of lineage altogether.
    assert not [r for r in feast_direct + feast_indirect if "savedDataset" in (r[0], r[2])]

    # Same order too, except for on-demand sources (Feast iterates a protobuf map there).
    on_demand = {v.name for v in local.list_on_demand_feature_views(PROJECT)}
    for ours, theirs in [(ours_direct, feast_direct), (ours_indirect, feast_indirect)]:
        assert without_map_ordered(ours, feast_direct, on_demand) == without_map_ordered(theirs, feast_direct, on_demand)

    meta = response.relationships_pagination
    assert (meta.total_count, meta.total_pages, meta.page, meta.limit) == (len(feast_direct), 1, 0, 0)


@pytest.mark.parametrize(
    "filter_type, filter_name",
    [
        ("featureView", ""),  # a type alone filters nothing
        ("", "driver_hourly_stats"),  # nor does a name alone
        ("featureView", "driver_hourly_stats"),
        ("featureView", "transformed_conv_rate"),
        ("labelView", "driver_labels"),
        ("entity", "driver"),
        ("dataSource", "driver_hourly_stats_source"),
        ("featureService", "driver_training"),
        ("feature", "conv_rate"),
        ("savedDataset", "training_set"),
        ("view", "driver_hourly_stats"),  # unknown type: no error, no match
        ("featureView", "no_such_view"),
    ],
)
def test_filtered_lineage_matches_feast(served, filter_type, filter_name):
    stub, local, _ = served
    direct, indirect = local.get_registry_lineage(
        PROJECT, filter_object_type=filter_type, filter_object_name=filter_name
    )
    _, ours_direct, ours_indirect = served_lineage(
        stub, filter_object_type=filter_type, filter_object_name=filter_name
    )
    assert Counter(ours_direct) == Counter(from_feast(direct))
    assert Counter(ours_indirect) == Counter(from_feast(indirect))


@pytest.mark.parametrize("include_indirect", [False, True])
@pytest.mark.parametrize(
    "object_type, object_name",
    [
        ("featureView", "driver_hourly_stats"),
        ("featureView", "driver_stream"),
        ("featureView", "doubled"),
        ("labelView", "driver_labels"),
        ("entity", "driver"),
        ("entity", "customer"),
        ("entity", "__dummy"),
        ("dataSource", "driver_hourly_stats_source"),
        ("dataSource", "driver_stats_push"),
        ("dataSource", "vals_to_add"),
        ("featureService", "driver_activity_v1"),
        ("featureService", "driver_training"),
        ("feature", "conv_rate"),
        ("savedDataset", "training_set"),
        ("featureView", "no_such_view"),
    ],
)
def test_object_relationships_match_feast(served, object_type, object_name, include_indirect):
    stub, local, _ = served
    theirs = from_feast(
        local.get_object_relationships(PROJECT, object_type, object_name, include_indirect=include_indirect)
    )
    response = stub.GetObjectRelationships(
        pb.GetObjectRelationshipsRequest(
            project=PROJECT, object_type=object_type, object_name=object_name, include_indirect=include_indirect
        )
    )
    assert Counter(from_grpc(response.relationships)) == Counter(theirs)
    assert response.pagination.total_count == len(theirs)


def test_unknown_object_type_is_feasts_value_error(served):
    stub, local, _ = served
    with pytest.raises(ValueError) as feast_error:
        local.get_object_relationships(PROJECT, "FeatureView", "driver_hourly_stats")
    with pytest.raises(grpc.RpcError) as ours:
        stub.GetObjectRelationships(
            pb.GetObjectRelationshipsRequest(project=PROJECT, object_type="FeatureView", object_name="driver_hourly_stats")
        )
    assert ours.value.code() == grpc.StatusCode.UNKNOWN
    # grpcio's text for an exception escaping a servicer method.
    assert ours.value.details() == f"Exception calling application: {feast_error.value}"


def test_sorting_and_pagination_match_feast(served):
    stub, local, _ = served
    direct, indirect = local.get_registry_lineage(PROJECT)
    for order in ["asc", "desc"]:
        pagination = pb.PaginationParams(page=2, limit=7)
        sorting = pb.SortingParams(sort_by="source.name", sort_order=order)
        feast_direct, feast_meta = apply_pagination_and_sorting(direct, pagination=pagination, sorting=sorting)
        feast_indirect, feast_indirect_meta = apply_pagination_and_sorting(
            indirect, pagination=pagination, sorting=sorting
        )
        response, ours_direct, ours_indirect = served_lineage(stub, pagination=pagination, sorting=sorting)
        assert ours_direct == from_feast(feast_direct)
        assert ours_indirect == from_feast(feast_indirect)
        assert response.relationships_pagination == feast_meta
        assert response.indirect_relationships_pagination == feast_indirect_meta

    relations = local.get_object_relationships(PROJECT, "entity", "driver", include_indirect=True)
    pagination = pb.PaginationParams(page=1, limit=4)
    sorting = pb.SortingParams(sort_by="target.name", sort_order="desc")
    feast_page, feast_meta = apply_pagination_and_sorting(relations, pagination=pagination, sorting=sorting)
    response = stub.GetObjectRelationships(
        pb.GetObjectRelationshipsRequest(
            project=PROJECT,
            object_type="entity",
            object_name="driver",
            include_indirect=True,
            pagination=pagination,
            sorting=sorting,
        )
    )
    assert from_grpc(response.relationships) == from_feast(feast_page)
    assert response.pagination == feast_meta


def test_feast_sdk_remote_registry_reads_lineage(served):
    """The SDK's remote registry parses every type string feast-rs sends."""
    _, local, remote = served
    direct, indirect = remote.registry.get_registry_lineage(PROJECT)
    local_direct, local_indirect = local.get_registry_lineage(PROJECT)
    assert Counter(from_feast(direct)) == Counter(from_feast(local_direct))
    assert Counter(from_feast(indirect)) == Counter(from_feast(local_indirect))
    related = remote.registry.get_object_relationships(PROJECT, "labelView", "driver_labels", include_indirect=True)
    assert {r.source.type for r in related} >= {FeastObjectType.ENTITY, FeastObjectType.DATA_SOURCE}


def test_unknown_project_has_no_lineage(served):
    stub, local, _ = served
    assert local.get_registry_lineage("no_such_project") == ([], [])
    response = stub.GetRegistryLineage(pb.GetRegistryLineageRequest(project="no_such_project"))
    assert list(response.relationships) == [] and list(response.indirect_relationships) == []
    assert response.relationships_pagination == pb.PaginationMetadata()
