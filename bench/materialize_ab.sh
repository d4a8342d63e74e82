#!/usr/bin/env bash
# One timed `feast-rs materialize` of a bench/offline_bench.py dataset, for A/B runs of two
# binaries in the same time window (numbers in BENCHMARKS.md, "Materialization").
#
#   bench/materialize_ab.sh BIN redis|pg VIEW [OUT]
#
# OUT (default /var/tmp/feast-rs-bench-mat) is a `gen` output whose repo/feature_store.yaml
# names the Redis db to use (flushed first) and whose repo/feature_store_pg.yaml names the
# Postgres online store (database $PGBENCH_DB, default feast_rs_bench_mat; the view's table
# is truncated first). Prints wall seconds, peak RSS, the client's user+sys CPU seconds and
# the Redis server's CPU seconds spent during the run, and the keys (Redis) or rows
# (Postgres) stored.
set -euo pipefail
BIN=$1 ONLINE=$2 VIEW=$3 OUT=${4:-/var/tmp/feast-rs-bench-mat}
PGDB=${PGBENCH_DB:-feast_rs_bench_mat}
db=$(sed -n 's/.*db=\([0-9]*\).*/\1/p' "$OUT/repo/feature_store.yaml")
rcpu() { redis-cli info cpu | awk -F: '/used_cpu_user:|used_cpu_sys:/ {s+=$2} END {printf "%.2f", s}'; }
if [ "$ONLINE" = pg ]; then
  psql -h 127.0.0.1 -U postgres -d "$PGDB" -qc "TRUNCATE bench_offline_$VIEW"
  yaml=$OUT/repo/feature_store_pg.yaml
else
  redis-cli -n "$db" flushdb >/dev/null
  yaml=$OUT/repo/feature_store.yaml
fi
r0=$(rcpu)
/usr/bin/time -f '%e %M %U %S' -o "$OUT/ab-time.txt" "$BIN" -c "$OUT/repo" --feature-store-yaml "$yaml" \
  materialize 2024-05-02T00:00:00 2024-06-01T00:00:00 -v "$VIEW" --force >/dev/null
r1=$(rcpu)
read -r secs kb u s < "$OUT/ab-time.txt"
if [ "$ONLINE" = pg ]; then
  stored=$(psql -h 127.0.0.1 -U postgres -d "$PGDB" -tAc "SELECT count(*) FROM bench_offline_$VIEW")
else
  stored=$(redis-cli -n "$db" dbsize)
fi
echo "$ONLINE $VIEW secs=$secs rss_mb=$((kb / 1024)) client_cpu=$(echo "$u+$s" | bc) redis_cpu=$(echo "$r1-$r0" | bc) stored=$stored load=$(cut -d' ' -f1 /proc/loadavg)"
