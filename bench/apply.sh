#!/usr/bin/env bash
# Times `apply` of N feature views (default 1,000): feast-rs, then `feast apply`
# (feast==0.67.0) on the same definitions, on this machine. The registry is a file, or with
# REGISTRY=postgres a SQL registry in a fresh database per tool on 127.0.0.1:5432.
#   bench/apply.sh [N]
#   REGISTRY=postgres bench/apply.sh 1000
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
PY="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}/bin/python"
cargo build --release -q -p feast-rs
BIN="$CARGO_TARGET_DIR/release/feast-rs"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$PY" bench/gen_views.py "$OUT" "$N"
REGISTRY="${REGISTRY:-file}"
if [ "$REGISTRY" = postgres ]; then
  for repo in yaml_repo feast_repo; do
    db="feast_rs_bench_apply_${repo%_repo}"
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    sed -i "s|^registry: data/registry.db|registry:\n  registry_type: sql\n  path: postgresql://postgres@127.0.0.1:5432/$db\n  cache_ttl_seconds: 60|" \
      "$OUT/$repo/feature_store.yaml"
  done
fi

# Wall time of a command in seconds (millisecond resolution); its output is discarded.
secs() {
  local s e
  s=$(date +%s%N)
  "$@" >/dev/null 2>&1
  e=$(date +%s%N)
  printf '%d.%03d' $(((e - s) / 1000000000)) $(((e - s) / 1000000 % 1000))
}

echo "apply of $N feature views (10 features each), $REGISTRY registry"
echo "feast-rs apply (create):    $(secs "$BIN" -c "$OUT/yaml_repo" apply) s"
echo "feast-rs plan (no changes): $(secs "$BIN" -c "$OUT/yaml_repo" plan) s"
echo "feast-rs apply (no-op):     $(secs "$BIN" -c "$OUT/yaml_repo" apply) s"
[ "$REGISTRY" = file ] && echo "registry.db size:           $(stat -c %s "$OUT/yaml_repo/data/registry.db") bytes"
FEAST="$(dirname "$PY")/feast"
echo "feast apply (create):       $(cd "$OUT/feast_repo" && secs "$FEAST" apply) s"
echo "feast apply (no-op):        $(cd "$OUT/feast_repo" && secs "$FEAST" apply) s"
