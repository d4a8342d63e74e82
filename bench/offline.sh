#!/usr/bin/env bash
# Offline benchmark (numbers in BENCHMARKS.md): get_historical_features through
# `feast-rs serve-offline` into the Feast SDK (remote offline store, Arrow Flight), through
# `feast-rs get-historical-features`, and through Feast 0.67's own duckdb and file (dask)
# stores, on the same Parquet files; then materialization into Redis (db 6) by
# `feast-rs materialize` and by Feast. Build first: cargo build --release -p feast-rs.
#
#   bench/offline.sh                    # everything, TARGETS.md's dataset
#   SYSTEMS="feast-rs duckdb" ENTITIES=100000 bench/offline.sh
#   HOURS=1000 OUT=/var/tmp/feast-rs-bench-offline-10m bench/offline.sh   # a 10M-row view
#   DRIVERS=100000 HISTORICAL=0 MVIEWS=driver_hourly_stats MSYSTEMS="feast-rs dask" \
#     MONLINE="redis postgres" OUT=/var/tmp/feast-rs-bench-mat-10m bench/offline.sh
#                                       # 10M rows -> 100k keys, into Redis and Postgres
#
# Environment: OUT (data dir), DRIVERS (10000), HOURS (100), SYSTEMS ("feast-rs
# feast-rs-cli duckdb dask"), ENTITIES ("100000 1000000"; dask runs only at 100000 unless
# DASK_1M=1: Feast measured 159 s and 21 GB there), MATERIALIZE (1: also materialize;
# MVIEWS / MSYSTEMS pick views and systems, MONLINE the online stores: "redis postgres"),
# HISTORICAL (1: the retrieval part),
# FEAST_RS_BIN (release binary), FEAST_RS_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
BIN="${FEAST_RS_BIN:-$TARGET/release/feast-rs}"
PY="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}/bin/python"
FEAST="$(dirname "$PY")/feast"
OUT="${OUT:-/var/tmp/feast-rs-bench-offline}"
DRIVERS="${DRIVERS:-10000}"
HOURS="${HOURS:-100}"
SYSTEMS="${SYSTEMS:-feast-rs feast-rs-cli duckdb dask}"
ENTITIES="${ENTITIES:-100000 1000000}"
MATERIALIZE="${MATERIALIZE:-1}"
PORT="${PORT:-18815}"
FEATURES="conv_rate acc_rate avg_speed rating earnings distance avg_daily_trips completed_trips cancelled_trips vehicle_age"

[ -x "$BIN" ] || { echo "no release binary at $BIN: cargo build --release -p feast-rs" >&2; exit 1; }
if [ ! -f "$OUT/data/driver_stats.parquet" ]; then
  "$PY" bench/offline_bench.py gen "$OUT" --drivers "$DRIVERS" --hours "$HOURS"
fi
(cd "$OUT/repo" && "$FEAST" apply >/dev/null)
sed 's/type: file/type: duckdb/' "$OUT/repo/feature_store.yaml" > "$OUT/repo/feature_store_duckdb.yaml"
mkdir -p "$OUT/client"
sed -e "s|registry: data/registry.db|registry: $OUT/repo/data/registry.db|" \
    -e "s|  type: file|  type: remote\n  host: 127.0.0.1\n  port: $PORT|" \
    "$OUT/repo/feature_store.yaml" > "$OUT/client/feature_store.yaml"

refs=()
for f in $FEATURES; do refs+=("driver_hourly_stats:$f"); done

server_pid=""
start_server() {
  "$BIN" -c "$OUT/repo" serve-offline --port "$PORT" > "$OUT/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "listening" "$OUT/server.log" 2>/dev/null && return
    sleep 0.1
  done
  echo "serve-offline did not start:" >&2; cat "$OUT/server.log" >&2; exit 1
}
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap stop_server EXIT

echo "## get_historical_features ($(( DRIVERS * HOURS )) feature rows)"
[ "${HISTORICAL:-1}" = 1 ] || ENTITIES=""
for n in $ENTITIES; do
  for system in $SYSTEMS; do
    if [ "$system" = dask ] && [ "$n" != 100000 ] && [ "${DASK_1M:-0}" != 1 ]; then continue; fi
    case "$system" in
      feast-rs)
        start_server
        line=$("$PY" bench/offline_bench.py historical "$OUT" feast-rs "$n")
        rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$server_pid/status")
        stop_server
        echo "${line%\}}, \"server_peak_rss_mb\": $rss}"
        ;;
      feast-rs-cli)
        /usr/bin/time -f '%e %M' -o "$OUT/time.txt" "$BIN" -c "$OUT/repo" get-historical-features \
          --entities "$OUT/entities_$n.parquet" --features "${refs[@]}" -o "$OUT/out.parquet" >/dev/null
        read -r secs kb < "$OUT/time.txt"
        echo "{\"system\": \"feast-rs-cli\", \"entities\": $n, \"seconds\": $secs, \"peak_rss_mb\": $(( kb / 1024 ))}"
        ;;
      *)
        /usr/bin/time -f '%M' -o "$OUT/time.txt" "$PY" bench/offline_bench.py historical "$OUT" "$system" "$n"
        echo "  (process peak RSS $(( $(cat "$OUT/time.txt") / 1024 )) MB)"
        ;;
    esac
  done
done

if [ "$MATERIALIZE" = 1 ]; then
  # Online stores to materialize into: Redis db 6, and/or Postgres (database $PGBENCH_DB on
  # 127.0.0.1:5432, created if missing; tables created by `feast apply`, emptied between runs).
  PGBENCH_DB="${PGBENCH_DB:-feast_rs_bench}"
  for online in ${MONLINE:-redis}; do
    yaml=feature_store.yaml
    if [ "$online" = postgres ]; then
      yaml=feature_store_pg.yaml
      psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$PGBENCH_DB'" | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $PGBENCH_DB"
      sed -e "s|  type: redis|  type: postgres\n  host: 127.0.0.1\n  port: 5432\n  database: $PGBENCH_DB\n  user: postgres\n  password: ''\n  db_schema: public|" \
          -e "/connection_string/d" "$OUT/repo/feature_store.yaml" > "$OUT/repo/$yaml"
      (cd "$OUT/repo" && "$FEAST" -f "$yaml" apply >/dev/null)
    fi
    echo "## materialize into $online"
    for view in ${MVIEWS:-driver_latest driver_hourly_stats}; do
      for system in ${MSYSTEMS:-feast-rs dask duckdb}; do
        if [ "$online" = postgres ]; then
          psql -h 127.0.0.1 -U postgres -d "$PGBENCH_DB" -qc "TRUNCATE bench_offline_$view" 2>/dev/null || true
          count() { psql -h 127.0.0.1 -U postgres -d "$PGBENCH_DB" -tAc "SELECT count(DISTINCT entity_key) FROM bench_offline_$view"; }
        else
          redis-cli -n 6 flushdb >/dev/null
          count() { redis-cli -n 6 dbsize; }
        fi
        if [ "$system" = feast-rs ]; then
          /usr/bin/time -f '%e %M' -o "$OUT/time.txt" "$BIN" -c "$OUT/repo" --feature-store-yaml "$OUT/repo/$yaml" \
            materialize 2024-05-02T00:00:00 2024-06-01T00:00:00 -v "$view" --force >/dev/null
          read -r secs kb < "$OUT/time.txt"
          echo "{\"system\": \"feast-rs\", \"online\": \"$online\", \"view\": \"$view\", \"seconds\": $secs, \"peak_rss_mb\": $(( kb / 1024 )), \"keys\": $(count)}"
        else
          # Feast 0.67's duckdb materialization fails on tz-aware nanosecond timestamps
          # ("Unimplemented type for cast (TIMESTAMPTZ_NS -> TIMESTAMP)"): report and go on.
          if /usr/bin/time -f '%M' -o "$OUT/time.txt" "$PY" bench/offline_bench.py materialize "$OUT" "$system" "$view" "$yaml" 2> "$OUT/err.txt"; then
            echo "  (process peak RSS $(( $(tail -1 "$OUT/time.txt") / 1024 )) MB, keys $(count))"
          else
            echo "{\"system\": \"$system\", \"online\": \"$online\", \"view\": \"$view\", \"failed\": \"$(tail -1 "$OUT/err.txt" | cut -c1-160)\"}"
          fi
        fi
      done
    done
  done
fi
