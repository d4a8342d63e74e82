#!/usr/bin/env bash
# Times `apply` of N feature views (default 1,000) to a file registry: feast-rs, then
# `feast apply` (feast==0.67.0) on the same definitions, on this machine.
#   bench/apply.sh [N]
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

# Wall time of a command in seconds (millisecond resolution); its output is discarded.
secs() {
  local s e
  s=$(date +%s%N)
  "$@" >/dev/null 2>&1
  e=$(date +%s%N)
  printf '%d.%03d' $(((e - s) / 1000000000)) $(((e - s) / 1000000 % 1000))
}

echo "apply of $N feature views (10 features each), file registry"
echo "feast-rs apply (create):    $(secs "$BIN" -c "$OUT/yaml_repo" apply) s"
echo "feast-rs plan (no changes): $(secs "$BIN" -c "$OUT/yaml_repo" plan) s"
echo "feast-rs apply (no-op):     $(secs "$BIN" -c "$OUT/yaml_repo" apply) s"
echo "registry.db size:           $(stat -c %s "$OUT/yaml_repo/data/registry.db") bytes"
FEAST="$(dirname "$PY")/feast"
echo "feast apply (create):       $(cd "$OUT/feast_repo" && secs "$FEAST" apply) s"
echo "feast apply (no-op):        $(cd "$OUT/feast_repo" && secs "$FEAST" apply) s"
