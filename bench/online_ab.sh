#!/usr/bin/env bash
# Interleaved wall-clock A/B of two `feast-rs serve` binaries on the same Redis data: in each
# round, each binary in turn serves and `online-load` measures every workload × protocol ×
# connections cell, so slow spells of a shared machine hit both alike. Prints one line per
# cell and round: binary, protocol, workload, connections, req/s, p50 and p99 (ms).
#
#   bench/online_ab.sh DATA BIN_A BIN_B
#
# DATA is a directory bench/gen_online.py wrote and Feast materialized into Redis (repo_redis/,
# bodies/); bench/online_callgrind.sh makes one (OUT/data).
#
# Environment: ROUNDS=3 DURATION=5 WARMUP=1 WORKLOADS="e100_v10x5 e1_f10"
#   PROTOCOLS="http grpc" CONNECTIONS="1 32" LOAD=<online-load binary>
set -euo pipefail
DATA=$1 A=$2 B=$3
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
WORKLOADS="${WORKLOADS:-e100_v10x5 e1_f10}"
PROTOCOLS="${PROTOCOLS:-http grpc}"
CONNECTIONS="${CONNECTIONS:-1 32}"
LOAD="${LOAD:-${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}/release/online-load}"
PORT=$((20000 + RANDOM % 20000))
LOG=$(mktemp)
SERVER_PID=""
stop() {
  [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  SERVER_PID=""
}
trap 'stop; rm -f "$LOG"' EXIT

for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    "$bin" -c "$DATA/repo_redis" serve --host 127.0.0.1 --port "$PORT" > "$LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
      sleep 0.1
    done
    for protocol in $PROTOCOLS; do
      for workload in $WORKLOADS; do
        for c in $CONNECTIONS; do
          line=$("$LOAD" --url "http://127.0.0.1:$PORT" --protocol "$protocol" --connections "$c" \
            --duration "$DURATION" --warmup "$WARMUP" --body "$DATA/bodies/$workload.json")
          echo "round=$round bin=$(basename "$bin") $protocol $workload conns=$c $(echo "$line" |
            sed -E 's/.*"rps":([0-9.]+).*"p50_ms":([0-9.]+).*"p99_ms":([0-9.]+).*/rps=\1 p50=\2 p99=\3/')"
        done
      done
    done
    stop
  done
done
