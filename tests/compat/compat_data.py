"""Small data files for tests/compat/feast_repo, shared by the fixture generator and the tests."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def write_repo_data(repo: Path) -> None:
    data = repo / "data"
    data.mkdir(parents=True, exist_ok=True)
    ts = datetime(2024, 5, 1, tzinfo=timezone.utc)
    pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "conv": np.array([0.5, 0.6], dtype="float32"),
            "acc_rate": [0.1, 0.2],
            "avg_daily_trips": [1, 2],
            "rating": np.array([3, 4], dtype="int32"),
            "active": [True, False],
            "name": ["a", "b"],
            "avatar": [b"x", b"y"],
            "last_seen": [datetime(2024, 1, 1, tzinfo=timezone.utc)] * 2,
            "recent_trips": [[1, 2], [3]],
            "scores": [[0.1], [0.2]],
            "event_timestamp": [ts] * 2,
            "created": [ts] * 2,
        }
    ).to_parquet(data / "driver_stats.parquet")
    pd.DataFrame(
        {"driver_id": [1001], "customer_id": ["c1"], "affinity": [0.3], "event_timestamp": [ts]}
    ).to_parquet(data / "customer_profile.parquet")
