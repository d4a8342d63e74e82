#!/usr/bin/env bash
# Registry over gRPC on loopback with N feature views (default 1,000): apply through the
# service, then GetFeatureView / ListFeatureViews latency against `feast-rs serve-registry`
# and Feast 0.67's `feast serve_registry` serving copies of the same registry.db.
#   bench/registry.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
VENV="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}"
cargo build --release -q -p feast-rs -p feast-bench
BIN="$CARGO_TARGET_DIR/release/feast-rs"
LOAD="$CARGO_TARGET_DIR/release/registry-latency"
OUT="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT
"$VENV/bin/python" bench/gen_views.py "$OUT" "$N"

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# feast-rs registry server on an empty file registry; feast-rs apply through it.
mkdir -p "$OUT/rs_server/data"
printf 'project: bench\nregistry: data/registry.db\n' > "$OUT/rs_server/feature_store.yaml"
RS_PORT=$(free_port)
"$BIN" -c "$OUT/rs_server" serve-registry --host 127.0.0.1 --port "$RS_PORT" > /dev/null &
PIDS+=($!)
wait_port "$RS_PORT"
sed -i "s|^registry: .*|registry: {registry_type: remote, path: 127.0.0.1:$RS_PORT}|" "$OUT/yaml_repo/feature_store.yaml"
s=$(date +%s%N); "$BIN" -c "$OUT/yaml_repo" apply > /dev/null; e=$(date +%s%N)
echo "feast-rs apply of $N views through feast-rs serve-registry: $(((e - s) / 1000000)) ms"

# Feast's registry server on a copy of the same registry.db.
mkdir -p "$OUT/py_server/data"
cp "$OUT/rs_server/data/registry.db" "$OUT/py_server/data/registry.db"
printf 'project: bench\nregistry: data/registry.db\nprovider: local\nonline_store: {type: sqlite}\nentity_key_serialization_version: 3\n' > "$OUT/py_server/feature_store.yaml"
PY_PORT=$(free_port)
(cd "$OUT/py_server" && exec "$VENV/bin/feast" serve_registry --port "$PY_PORT" > /dev/null 2>&1) &
PIDS+=($!)
wait_port "$PY_PORT"

echo "registry reads, $N views, one connection, sequential (allow_cache=false, as the Feast SDK sends):"
"$LOAD" --target "127.0.0.1:$RS_PORT" --project bench --views "$N" --calls 5000 --label feast-rs
"$LOAD" --target "127.0.0.1:$PY_PORT" --project bench --views "$N" --calls 500 --label feast
echo "with allow_cache=true:"
"$LOAD" --target "127.0.0.1:$RS_PORT" --project bench --views "$N" --calls 5000 --allow-cache --label feast-rs
"$LOAD" --target "127.0.0.1:$PY_PORT" --project bench --views "$N" --calls 500 --allow-cache --label feast
