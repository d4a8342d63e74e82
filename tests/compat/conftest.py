"""Shared fixtures for the Feast-SDK compatibility tests.

The tests drive the `feast-rs` binary (FEAST_RS_BIN, built by scripts/test.sh) and the
real Feast SDK (feast==0.67.0 in the same venv as pytest) on the same repositories.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))


def _default_bin() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/feast-rs-target"))
    return target / "debug" / "feast-rs"


@pytest.fixture(scope="session")
def feast_rs_bin() -> Path:
    path = Path(os.environ.get("FEAST_RS_BIN", str(_default_bin())))
    if not path.exists():
        pytest.fail(f"feast-rs binary not found at {path}; run `cargo build -p feast-rs` or scripts/test.sh")
    return path


@pytest.fixture(scope="session")
def feast_cli() -> Path:
    return Path(sys.executable).parent / "feast"


def run(cmd, cwd=None, check=True):
    """Runs a command, returning (stdout, stderr); raises with both on failure."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def copy_repo(name: str, dest: Path) -> Path:
    from compat_data import write_repo_data

    repo = dest / name
    shutil.copytree(HERE / name, repo)
    write_repo_data(repo)
    return repo
