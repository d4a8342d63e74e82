#!/usr/bin/env bash
# Interleaved A/B of two `feast-rs serve-offline` binaries: in each round, each binary in turn
# serves (a fresh process per measurement, so its peak RSS is that measurement's) and the
# Feast SDK's remote offline store measures get_historical_features of 100k and 1M entity
# rows (bench/offline_bench.py) and the Flight read throughput of a whole view
# (bench/flight_throughput.py). Prints one line per measurement: binary, what, the client's
# figure and the server's peak RSS (VmHWM) and CPU seconds (user+sys).
#
#   bench/offline_ab.sh BIN_A BIN_B
#
# Environment: ROUNDS=2, HIST=/var/tmp/feast-rs-bench-1m (a `bench/offline_bench.py gen
#   --drivers 10000` output: the 1M-row view), FLIGHT=/var/tmp/feast-rs-bench-mat (a `gen
#   --drivers 100000` output: 10M rows); each needs `feast apply` in repo/ and a client/ repo
#   as bench/offline.sh writes them. ENTITIES="100000 1000000", PORT=18815.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2
ROUNDS="${ROUNDS:-2}"
HIST="${HIST:-/var/tmp/feast-rs-bench-1m}"
FLIGHT="${FLIGHT:-/var/tmp/feast-rs-bench-mat}"
ENTITIES="${ENTITIES:-100000 1000000}"
PORT="${PORT:-18815}"
PY="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}/bin/python"
LOG=$(mktemp)
SERVER_PID=""
stop() {
  [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  SERVER_PID=""
}
trap 'stop; rm -f "$LOG"' EXIT
start() { # BIN REPO
  "$1" -c "$2" serve-offline --host 127.0.0.1 --port "$PORT" > "$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 200); do
    grep -q listening "$LOG" && return
    sleep 0.05
  done
  echo "serve-offline did not start:" >&2; cat "$LOG" >&2; exit 1
}
server() { # peak RSS (MB) and CPU seconds of the running server
  local ticks
  ticks=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  echo "server_rss_mb=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$SERVER_PID/status") server_cpu_s=$(echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc)"
}
for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    name=$(basename "$bin")
    for n in $ENTITIES; do
      start "$bin" "$HIST/repo"
      line=$("$PY" bench/offline_bench.py historical "$HIST" feast-rs "$n")
      echo "$round $name historical_$n $line $(server)"
      stop
    done
    start "$bin" "$FLIGHT/repo"
    line=$("$PY" bench/flight_throughput.py "$FLIGHT/client" driver_hourly_stats | tail -4 | tr '\n' ' ')
    echo "$round $name flight $line $(server)"
    stop
  done
done
