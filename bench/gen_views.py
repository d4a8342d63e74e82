"""Generate a feature repository with N feature views, declared twice: in feast-rs YAML
(yaml_repo/) and as Feast Python definitions (feast_repo/), over one small Parquet file.

    python bench/gen_views.py OUT_DIR N
"""

import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

STORE = """project: bench
provider: local
registry: data/registry.db
online_store: {type: sqlite, path: data/online.db}
offline_store: {type: file}
entity_key_serialization_version: 3
"""


def main(out: Path, n: int) -> None:
    for name in ("yaml_repo", "feast_repo"):
        (out / name / "data").mkdir(parents=True, exist_ok=True)
        (out / name / "feature_store.yaml").write_text(STORE)
        pd.DataFrame(
            {
                "driver_id": [1],
                **{f"f{i}": [0.5] for i in range(10)},
                "event_timestamp": [datetime(2024, 5, 1, tzinfo=timezone.utc)],
            }
        ).to_parquet(out / name / "data" / "stats.parquet")

    features = "".join(f"      - {{name: f{i}, dtype: Float64}}\n" for i in range(10))
    yaml = [
        "entities:\n  - {name: driver, join_keys: [driver_id], value_type: INT64}\n",
        "data_sources:\n  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}\n",
        "feature_views:\n",
    ]
    for v in range(n):
        yaml.append(f"  - name: view_{v}\n    entities: [driver]\n    ttl: 1d\n    source: stats\n    schema:\n{features}")
    (out / "yaml_repo" / "features.yaml").write_text("".join(yaml))

    fields = ", ".join(f'Field(name="f{i}", dtype=Float64)' for i in range(10))
    py = [
        "from datetime import timedelta\n",
        "from feast import Entity, FeatureView, Field, FileSource, ValueType\n",
        "from feast.types import Float64\n",
        'driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)\n',
        'stats = FileSource(name="stats", path="data/stats.parquet", timestamp_field="event_timestamp")\n',
        f"SCHEMA = [{fields}]\n",
        f'views = [FeatureView(name=f"view_{{v}}", entities=[driver], ttl=timedelta(days=1), source=stats, schema=list(SCHEMA)) for v in range({n})]\n',
        "for _v in views:\n    globals()[_v.name] = _v\n",
    ]
    (out / "feast_repo" / "definitions.py").write_text("".join(py))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
