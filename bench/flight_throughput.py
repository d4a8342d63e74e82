"""Flight read throughput (BENCHMARKS.md): the Feast SDK's remote offline store pulls every
row of a view from `feast-rs serve-offline` (pull_all_from_table_or_query: one do_exchange
stream) into a pyarrow table; prints bytes/s of the Arrow data received, best of three.

    feast-rs -c REPO serve-offline --port 18815 &
    python bench/flight_throughput.py CLIENT_REPO driver_hourly_stats

CLIENT_REPO has `offline_store: {type: remote, port: 18815}` (bench/offline.sh writes one
as OUT/client)."""
import sys, time
from datetime import datetime, timezone
from feast import FeatureStore
from feast.infra.offline_stores.remote import RemoteOfflineStore

store = FeatureStore(repo_path=sys.argv[1])
fv = store.get_feature_view(sys.argv[2])
names = [f.name for f in fv.features]
best = None
for _ in range(3):
    t = time.perf_counter()
    job = RemoteOfflineStore.pull_all_from_table_or_query(
        config=store.config, data_source=fv.batch_source, join_key_columns=["driver_id"],
        feature_name_columns=names, timestamp_field="event_timestamp",
        created_timestamp_column="created",
        start_date=datetime(2000, 1, 1, tzinfo=timezone.utc),
        end_date=datetime(2100, 1, 1, tzinfo=timezone.utc))
    table = job.to_arrow()
    s = time.perf_counter() - t
    best = s if best is None else min(best, s)
    print(f"{table.num_rows} rows, {table.nbytes/1e6:.0f} MB in {s:.3f} s = {table.nbytes/1e9/s:.2f} GB/s", flush=True)
print(f"best {table.nbytes/1e9/best:.2f} GB/s")
