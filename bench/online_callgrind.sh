#!/usr/bin/env bash
# CPU cost per request of `feast-rs serve` on Redis, in instructions (valgrind's callgrind):
# repeatable whatever else runs on the machine, unlike wall-clock figures on a shared box.
#
#   bench/online_callgrind.sh
#
# The release server runs under `valgrind --tool=callgrind`; for each protocol × workload,
# `online-load --requests WARM` warms it up, `callgrind_control -z` zeroes the counters,
# `online-load --requests N` sends N requests on one connection, and `callgrind_control -d`
# dumps the profile of exactly those N requests. Prints a table of instructions per request
# (Ir / N) and keeps each dump for `callgrind_annotate` (OUT, printed at the end; names are
# not compressed, so each dump reads on its own).
#
# Build first, with line tables so the annotations name source lines:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p feast-rs -p feast-bench
#
# Environment:
#   DATA=DIR        a directory bench/gen_online.py wrote and Feast materialized (repo_redis/,
#                   bodies/); without it one is made here (10,000 drivers into REDIS_DB)
#   REDIS_DB=11     the Redis db of the data made here (flushed first)
#   WORKLOADS="e100_f10 e100_v10x5 e100_f50 e1_f10"  PROTOCOLS="http grpc"
#   REQUESTS=100 WARM=5
#   OUT=DIR         where dumps go (default: a new /tmp/feast-callgrind.XXXXXX)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
VENV="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}"
PY="$VENV/bin/python"
FEAST="$VENV/bin/feast"
BIN="$CARGO_TARGET_DIR/release/feast-rs"
LOAD="$CARGO_TARGET_DIR/release/online-load"
WORKLOADS="${WORKLOADS:-e100_f10 e100_v10x5 e100_f50 e1_f10}"
PROTOCOLS="${PROTOCOLS:-http grpc}"
REQUESTS="${REQUESTS:-100}"
WARM="${WARM:-5}"
REDIS_DB="${REDIS_DB:-11}"
OUT="${OUT:-$(mktemp -d /tmp/feast-callgrind.XXXXXX)}"
mkdir -p "$OUT"
for f in "$BIN" "$LOAD"; do
  [ -x "$f" ] || { echo "$f is missing: build the release binaries first" >&2; exit 1; }
done

if [ -z "${DATA:-}" ]; then
  DATA="$OUT/data"
  echo "==> data: 10,000 drivers into Redis db $REDIS_DB ($DATA)"
  read -r MAT_START MAT_END < <("$PY" bench/gen_online.py "$DATA" 10000 1)
  sed -i "s/,db=5\"/,db=$REDIS_DB\"/" "$DATA/repo_redis/feature_store.yaml"
  redis-cli -n "$REDIS_DB" FLUSHDB > /dev/null
  (cd "$DATA/repo_redis" && "$FEAST" apply > apply.log 2>&1 &&
    "$FEAST" materialize "$MAT_START" "$MAT_END" > materialize.log 2>&1) ||
    { tail -20 "$DATA/repo_redis"/*.log >&2; exit 1; }
fi

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER_CMD=("$BIN" -c "$DATA/repo_redis" serve --host 127.0.0.1 --port "$PORT")
valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$OUT/callgrind.out" \
  "${SERVER_CMD[@]}" > "$OUT/server.log" 2>&1 &
VG_PID=$!
trap 'kill "$VG_PID" 2>/dev/null || true; wait "$VG_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 1200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$VG_PID" 2>/dev/null || { tail "$OUT/server.log" >&2; exit 1; }
  sleep 0.1
done

# How many dumps callgrind has written so far.
dumps() { shopt -s nullglob; local f=("$OUT"/callgrind.out.*); echo "${#f[@]}"; }

echo "| workload | protocol | requests | instructions / request |"
echo "|---|---|---|---|"
for protocol in $PROTOCOLS; do
  for workload in $WORKLOADS; do
    load() {
      "$LOAD" --url "http://127.0.0.1:$PORT" --protocol "$protocol" --connections 1 \
        --requests "$1" --body "$DATA/bodies/$workload.json" > "$OUT/load.json"
    }
    load "$WARM"
    callgrind_control -z "$VG_PID" > /dev/null 2>&1
    load "$REQUESTS"
    done_requests=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["errors"] == 0, d; print(d["requests"])' "$OUT/load.json")
    before=$(dumps)
    callgrind_control -d "$protocol-$workload" "$VG_PID" > /dev/null 2>&1
    # The dump is written asynchronously: wait for the new file.
    for _ in $(seq 1 600); do
      [ "$(dumps)" -gt "$before" ] && break
      sleep 0.1
    done
    dump=$(ls -t "$OUT"/callgrind.out.* | head -1 || true)
    sleep 0.5
    mv "$dump" "$OUT/$protocol-$workload.callgrind"
    ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$OUT/$protocol-$workload.callgrind")
    echo "| $workload | $protocol | $done_requests | $((ir / done_requests)) |"
  done
done
echo
echo "dumps: $OUT/<protocol>-<workload>.callgrind (callgrind_annotate --inclusive=yes FILE)"
