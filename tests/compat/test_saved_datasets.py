"""Saved datasets made by the registry server (Feast 0.67's `CreateDatasetFromRetrieval`,
`GetDatasetJobStatus`, `ListDatasetJobs`, `GetDatasetData`): `feast-rs serve-registry`
against Feast's own `feast serve_registry`, each on its own copy of tests/compat/feast_repo,
driven by the same gRPC calls. The jobs, the saved datasets they register and the previews
must agree.
"""

import json
import socket
import subprocess
import time

import grpc
import pytest

from conftest import copy_repo, run
from feast.protos.feast.registry import RegistryServer_pb2 as pb
from feast.protos.feast.registry import RegistryServer_pb2_grpc as pb_grpc

FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:rating",
    "driver_hourly_stats:active",
    "driver_hourly_stats:name",
    "driver_hourly_stats:avatar",
    "driver_hourly_stats:recent_trips",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"registry server exited early: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"registry server did not listen on {port}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, feast_rs_bin, feast_cli):
    tmp = tmp_path_factory.mktemp("datasets")
    procs, stubs = [], {}
    try:
        for who in ("feast", "feast-rs"):
            repo = copy_repo("feast_repo", tmp / who)
            run([feast_cli, "apply"], cwd=repo)
            port = free_port()
            if who == "feast":
                cmd = [str(feast_cli), "serve_registry", "--port", str(port)]
            else:
                cmd = [str(feast_rs_bin), "-c", str(repo), "serve-registry", "--host", "127.0.0.1", "--port", str(port)]
            proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            wait_for_port(port, proc)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stubs[who] = (pb_grpc.RegistryServerStub(channel), repo)
        yield stubs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def finished(stub, job_id, deadline=60.0):
    end = time.monotonic() + deadline
    while True:
        job = stub.GetDatasetJobStatus(pb.GetDatasetJobStatusRequest(job_id=job_id))
        if job.status in ("completed", "failed"):
            return job
        assert time.monotonic() < end, f"job {job_id} still {job.status}"
        time.sleep(0.1)


def create_on_both(servers, **fields):
    out = {}
    for who, (stub, _) in servers.items():
        started = stub.CreateDatasetFromRetrieval(pb.CreateDatasetFromRetrievalRequest(project="compat", **fields))
        assert started.status in ("pending", "running")
        out[who] = finished(stub, started.job_id)
    return out


def saved(stub, name):
    from feast.protos.feast.registry.RegistryServer_pb2 import GetSavedDatasetRequest

    return stub.GetSavedDataset(GetSavedDatasetRequest(name=name, project="compat"))


def preview(stub, name, limit=0):
    data = stub.GetDatasetData(pb.GetDatasetDataRequest(name=name, project="compat", limit=limit))
    rows = [list(r.values) for r in data.rows]
    return list(data.columns), rows, data.total_rows, data.sample_size


def by_columns(columns, rows):
    """Rows as {column: value} dicts in a fixed order (the engines may order rows and
    columns differently)."""
    return sorted((json.dumps(dict(zip(columns, r)), sort_keys=True) for r in rows))


def test_inline_retrieval_saves_the_same_dataset(servers):
    jobs = create_on_both(
        servers,
        name="inline_ds",
        features=FEATURES,
        entity_source_type="inline",
        entity_keys=["driver_id"],
        entity_values="1001,\n1002, 404",
        start_date="2024-05-01T06:00:00+00:00",
        end_date="2024-05-01T12:00:00+00:00",
        extra_columns="campaign=spring\nweight=2",
        storage_type="file",
        storage_path="data/inline_ds.parquet",
        tags={"owner": "ui"},
    )
    for job in jobs.values():
        assert (job.status, job.error, job.dataset_name, job.project) == ("completed", "", "inline_ds", "compat")
        assert job.created_at.endswith("+00:00") and job.completed_at.endswith("+00:00")

    want, got = (saved(servers[w][0], "inline_ds") for w in ("feast", "feast-rs"))
    assert list(got.spec.features) == list(want.spec.features) == FEATURES
    assert list(got.spec.join_keys) == list(want.spec.join_keys) == ["driver_id"]
    assert got.spec.storage.file_storage.uri == want.spec.storage.file_storage.uri == "data/inline_ds.parquet"
    assert dict(got.spec.tags) == dict(want.spec.tags) == {"owner": "ui"}
    assert got.spec.full_feature_names == want.spec.full_feature_names is False
    assert got.meta.min_event_timestamp == want.meta.min_event_timestamp
    assert got.meta.max_event_timestamp == want.meta.max_event_timestamp

    wcols, wrows, wtotal, wsample = preview(servers["feast"][0], "inline_ds")
    gcols, grows, gtotal, gsample = preview(servers["feast-rs"][0], "inline_ds")
    assert sorted(gcols) == sorted(wcols)
    assert (gtotal, gsample) == (wtotal, wsample) == (3, 3)
    assert by_columns(gcols, grows) == by_columns(wcols, wrows)

    # A limit below the row count.
    assert preview(servers["feast-rs"][0], "inline_ds", limit=2)[2] == 2


def test_parquet_entity_source_and_feature_service(servers):
    import pandas as pd

    for who, (_, repo) in servers.items():
        pd.DataFrame(
            {"driver": [1002, 1001], "event_timestamp": ["2024-05-01T08:00:00+00:00", "2024-05-01T20:00:00+00:00"]}
        ).to_parquet(repo / "data" / "entities.parquet")
    jobs = create_on_both(
        servers,
        name="service_ds",
        feature_service_name="driver_activity_v2",
        entity_source_type="parquet",
        entity_source_path="data/entities.parquet",
        storage_path="data/service_ds.parquet",
    )
    # Both rows within the view's 1-day TTL: Feast's file store drops entity rows without a
    # feature row in the window (README: differences), which would make the previews differ.
    for job in jobs.values():
        assert job.status == "completed", job.error
    want, got = (saved(servers[w][0], "service_ds") for w in ("feast", "feast-rs"))
    assert got.spec.feature_service_name == want.spec.feature_service_name == ""  # Feast does not record it
    assert list(got.spec.features) == list(want.spec.features)
    wcols, wrows, *_ = preview(servers["feast"][0], "service_ds")
    gcols, grows, *_ = preview(servers["feast-rs"][0], "service_ds")
    assert by_columns(gcols, grows) == by_columns(wcols, wrows)


def test_failed_jobs_and_listing(servers):
    jobs = create_on_both(
        servers,
        name="broken_ds",
        features=["driver_hourly_stats:no_such_feature"],
        entity_source_type="inline",
        entity_keys=["driver_id"],
        entity_values="1001",
        end_date="2024-05-01T12:00:00+00:00",
        storage_path="data/broken_ds.parquet",
    )
    for job in jobs.values():
        assert job.status == "failed" and job.error
    stub = servers["feast-rs"][0]
    listed = stub.ListDatasetJobs(pb.ListDatasetJobsRequest(project="compat"))
    names = [j.dataset_name for j in listed.jobs]
    assert "broken_ds" in names and "inline_ds" in names
    assert [j.created_at for j in listed.jobs] == sorted((j.created_at for j in listed.jobs), reverse=True)
    failed = stub.ListDatasetJobs(pb.ListDatasetJobsRequest(project="compat", status_filter="failed"))
    assert {j.dataset_name for j in failed.jobs} == {"broken_ds"}
    assert stub.ListDatasetJobs(pb.ListDatasetJobsRequest(project="other")).jobs == []
    with pytest.raises(grpc.RpcError) as e:
        stub.GetDatasetJobStatus(pb.GetDatasetJobStatusRequest(job_id="no-such-job"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Dataset job 'no-such-job' not found" in e.value.details()
    # Nothing was registered for the failed job, on either server.
    for who in ("feast", "feast-rs"):
        with pytest.raises(grpc.RpcError) as e:
            saved(servers[who][0], "broken_ds")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
