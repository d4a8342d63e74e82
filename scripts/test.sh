#!/usr/bin/env bash
# Runs every test of feast-rs on a fresh machine: the Rust workspace tests and the Feast-SDK
# compatibility tests (tests/compat), after making sure the Python venv with feast==0.67.0
# exists. Needs the Rust toolchain and Python 3; the PostgreSQL tests use the server on
# 127.0.0.1:5432 (FEAST_RS_TEST_POSTGRES overrides the URL) and must find it when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
VENV="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}"
PY="$VENV/bin/python"

if ! "$PY" - <<'PYCHECK' 2>/dev/null; then
import feast, grpc, psycopg, psycopg_pool, pytest, redis, duckdb, ibis, cryptography
import check_jsonschema, kubernetes_validate
assert feast.__version__ == "0.67.0", feast.__version__
PYCHECK
  echo "==> creating or completing the compatibility-test venv at $VENV (feast==0.67.0)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
fi

echo "==> cargo test"
cargo build --workspace --locked
cargo test --workspace --locked

echo "==> Feast SDK compatibility tests"
FEAST_RS_BIN="$CARGO_TARGET_DIR/debug/feast-rs" "$PY" -m pytest -q -p no:cacheprovider tests/compat
