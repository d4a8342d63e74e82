"""Regenerate crates/core/tests/data/feast_registry.db with the real Feast SDK.

Runs `feast apply` on tests/compat/feast_repo in a scratch copy (with small Parquet files so
that schema checks pass) and copies the registry Feast wrote. Run with the venv's python:
    /var/tmp/feast-rs-venv/bin/python tests/compat/gen_registry_fixture.py
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from compat_data import write_repo_data

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "core" / "tests" / "data" / "feast_registry.db"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(Path(__file__).parent / "feast_repo", repo)
        write_repo_data(repo)
        feast = Path(sys.executable).parent / "feast"
        subprocess.run([str(feast), "apply"], cwd=repo, check=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / "data" / "registry.db", OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
