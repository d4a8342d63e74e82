#!/usr/bin/env bash
# Online serving under closed-loop load: `feast-rs serve` against Feast 0.67's `feast serve`
# (at its defaults and at its best flags) and its gRPC server (`feast listen`), on the same
# data, on loopback. Prints a markdown table and the raw-store reference (redis-benchmark).
#
#   bench/online.sh
#
# Dataset (bench/gen_online.py): 10,000 drivers; driver_hourly_stats (10 features: 2 Float32,
# 4 Float64, 3 Int64, 1 Int32), driver_stats_wide (50 features), driver_group_0..9 (5 each);
# materialized by Feast into Redis (127.0.0.1:6379, db 5, flushed first) and into SQLite.
#
# Environment:
#   FEAST_RS_ONLINE_STORE=redis|sqlite  the store feast-rs serves from (default redis)
#   DURATION=10 WARMUP=2                seconds per cell (measured / not counted)
#   CONNECTIONS="1 32"                  closed-loop connections per cell
#   WORKLOADS="e1_f10 e100_f10 e1_f50 e100_f50 e100_v10x5"
#   SERVERS="feast-rs feast-default feast-best feast-best-sqlite feast-grpc"
#                                       (also: feast-rs-auth, feast-rs with `auth: oidc` against
#                                       a loopback IdP, one permission in the project, and a
#                                       bearer token on every request: the auth layer's cost)
#   DRIVERS=10000 ROWS_PER_DRIVER=1 REDIS_PORT=6379 REDIS_DB=5
#   KEEP=1                              keep the work directory (printed at the end)
#   NO_BUILD=1                          use the release binaries as they are
#   SERVER_ENV="LD_PRELOAD=..."         environment of the feast-rs server only
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feast-rs-target}"
VENV="${FEAST_RS_VENV:-/var/tmp/feast-rs-venv}"
RS_STORE="${FEAST_RS_ONLINE_STORE:-redis}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-1 32}"
WORKLOADS="${WORKLOADS:-e1_f10 e100_f10 e1_f50 e100_f50 e100_v10x5}"
SERVERS="${SERVERS:-feast-rs feast-default feast-best feast-best-sqlite feast-grpc}"
DRIVERS="${DRIVERS:-10000}"
ROWS_PER_DRIVER="${ROWS_PER_DRIVER:-1}"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DB="${REDIS_DB:-5}"
case "$RS_STORE" in redis | sqlite) ;; *)
  echo "FEAST_RS_ONLINE_STORE must be redis or sqlite, not $RS_STORE" >&2
  exit 1
  ;;
esac

if ! "$VENV/bin/python" -c 'import feast, redis, grpc_health; assert feast.__version__ == "0.67.0"' 2>/dev/null; then
  echo "==> adding feast[grpcio,redis]==0.67.0 to $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'feast[grpcio,redis]==0.67.0'
fi
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q -p feast-rs -p feast-bench
BIN="$CARGO_TARGET_DIR/release/feast-rs"
LOAD="$CARGO_TARGET_DIR/release/online-load"
FEAST="$VENV/bin/feast"
PY="$VENV/bin/python"

OUT="$(mktemp -d /tmp/feast-online-bench.XXXXXX)"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    # The server runs in its own process group (setsid): gunicorn's workers go with it.
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
ISSUER_PID=""
cleanup() {
  stop_server
  [ -z "$ISSUER_PID" ] || kill "$ISSUER_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $OUT" >&2; else rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited before opening port $1" >&2; return 1; }
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

echo "==> data: $DRIVERS drivers x $ROWS_PER_DRIVER rows ($OUT)"
read -r MAT_START MAT_END < <("$PY" bench/gen_online.py "$OUT" "$DRIVERS" "$ROWS_PER_DRIVER")
if [ "$REDIS_DB" != 5 ]; then
  sed -i "s/,db=5\"/,db=$REDIS_DB\"/; s/127.0.0.1:6379/127.0.0.1:$REDIS_PORT/" "$OUT/repo_redis/feature_store.yaml"
fi
redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" FLUSHDB > /dev/null
for store in redis sqlite; do
  echo "==> feast apply + materialize ($store)"
  s=$(date +%s%N)
  (cd "$OUT/repo_$store" && "$FEAST" apply > apply.log 2>&1 && "$FEAST" materialize "$MAT_START" "$MAT_END" > materialize.log 2>&1) ||
    { tail -20 "$OUT/repo_$store"/*.log >&2; exit 1; }
  echo "    $((($(date +%s%N) - s) / 1000000)) ms"
done
echo "    redis db $REDIS_DB: $(redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" DBSIZE) keys"

# start_server NAME PORT: starts one of SERVERS on PORT; prints its store and protocols.
start_server() {
  local name="$1" port="$2" log="$OUT/$1.log"
  case "$name" in
    feast-rs)
      setsid env ${SERVER_ENV:-} "$BIN" -c "$OUT/repo_$RS_STORE" serve --host 127.0.0.1 --port "$port" > "$log" 2>&1 &
      STORE="$RS_STORE" PROTOCOLS="http grpc" GRPC_SERVICE=serving ;;
    feast-default)
      (cd "$OUT/repo_redis" && exec setsid "$FEAST" serve --host 127.0.0.1 --port "$port" > "$log" 2>&1) &
      STORE=redis PROTOCOLS=http GRPC_SERVICE=serving ;;
    feast-best)
      (cd "$OUT/repo_redis" && exec setsid "$FEAST" serve --host 127.0.0.1 --port "$port" \
        --workers 2 --max-requests 0 --no-access-log > "$log" 2>&1) &
      STORE=redis PROTOCOLS=http GRPC_SERVICE=serving ;;
    feast-best-sqlite)
      (cd "$OUT/repo_sqlite" && exec setsid "$FEAST" serve --host 127.0.0.1 --port "$port" \
        --workers 2 --max-requests 0 --no-access-log > "$log" 2>&1) &
      STORE=sqlite PROTOCOLS=http GRPC_SERVICE=serving ;;
    feast-grpc)
      (cd "$OUT/repo_redis" && exec setsid "$FEAST" listen --address "127.0.0.1:$port" > "$log" 2>&1) &
      STORE=redis PROTOCOLS=grpc GRPC_SERVICE=feature-server ;;
    feast-rs-auth)
      prepare_auth_repo
      setsid "$BIN" -c "$OUT/repo_auth" serve --host 127.0.0.1 --port "$port" > "$log" 2>&1 &
      STORE="$RS_STORE" PROTOCOLS="http grpc" GRPC_SERVICE=serving TOKEN_ARGS=(--token "$TOKEN") ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  SERVER_PID=$!
}

# prepare_auth_repo: a copy of the feast-rs repository with `auth: oidc` against a loopback
# IdP (tests/compat/oidc_issuer.py) and a `readers` permission applied by Feast; sets TOKEN.
prepare_auth_repo() {
  [ -z "$ISSUER_PID" ] || return 0
  local info="$OUT/issuer.out"
  "$PY" tests/compat/oidc_issuer.py > "$info" &
  ISSUER_PID=$!
  for _ in $(seq 1 100); do [ "$(wc -l < "$info")" -ge 2 ] && break; sleep 0.1; done
  DISCOVERY=$(sed -n 1p "$info")
  TOKEN=$(sed -n 2p "$info")
  rm -rf "$OUT/repo_auth"
  cp -r "$OUT/repo_$RS_STORE" "$OUT/repo_auth"
  cat > "$OUT/repo_auth/permissions.py" <<'PYPERM'
from feast.feast_object import ALL_RESOURCE_TYPES
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy

readers = Permission(
    name="readers",
    types=ALL_RESOURCE_TYPES,
    policy=RoleBasedPolicy(roles=["reader"]),
    actions=[AuthzedAction.DESCRIBE, AuthzedAction.READ_ONLINE],
)
PYPERM
  (cd "$OUT/repo_auth" && "$FEAST" apply > apply.log 2>&1) || { tail -20 "$OUT/repo_auth/apply.log" >&2; exit 1; }
  printf 'auth:\n  type: oidc\n  client_id: feast\n  auth_discovery_url: %s\n' "$DISCOVERY" >> "$OUT/repo_auth/feature_store.yaml"
}

RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
# skip_row SERVER STORE PROTOCOL WORKLOAD REASON
skip_row() {
  "$PY" -c 'import json,sys; print(json.dumps(dict(zip(["server","store","protocol","workload","skipped"], sys.argv[1:]))))' "$@" >> "$RESULTS"
}

for server in $SERVERS; do
  port=$(free_port)
  TOKEN_ARGS=()
  start_server "$server" "$port"
  echo "==> $server ($STORE) on port $port"
  if ! wait_port "$port"; then
    tail -5 "$OUT/$server.log" >&2
    for protocol in $PROTOCOLS; do skip_row "$server" "$STORE" "$protocol" "*" "the server did not start"; done
    stop_server
    continue
  fi
  for protocol in $PROTOCOLS; do
    for workload in $WORKLOADS; do
      for conns in $CONNECTIONS; do
        err="$OUT/load.err"
        if line=$("$LOAD" --url "http://127.0.0.1:$port" --protocol "$protocol" --grpc-service "$GRPC_SERVICE" \
          --connections "$conns" --duration "$DURATION" --warmup "$WARMUP" \
          --body "$OUT/bodies/$workload.json" --label "$server" "${TOKEN_ARGS[@]}" 2> "$err"); then
          "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(server=sys.argv[2], store=sys.argv[3], workload=sys.argv[4]); print(json.dumps(d))' \
            "$line" "$server" "$STORE" "$workload" >> "$RESULTS"
          printf '    %-5s %-11s %2s conns: %s\n' "$protocol" "$workload" "$conns" "$line"
          if [ -s "$err" ]; then sed 's/^/      /' "$err" | head -c 600; echo; fi
        else
          reason=$(grep -v '^$' "$err" | tail -1 | sed 's/^online-load: //' | cut -c1-200)
          echo "    $protocol $workload: skipped: $reason"
          skip_row "$server" "$STORE" "$protocol" "$workload" "$reason"
          break # the other connection counts would fail the same way
        fi
      done
    done
  done
  stop_server
done

echo "==> raw store reference: redis-benchmark HMGET of 11 fields (10 features + timestamp)"
# A copy of one materialized driver_hourly_stats row under a readable key: Feast's keys and
# field names are binary, which redis-benchmark's arguments cannot carry.
REF_FIELDS=$("$PY" - "$REDIS_PORT" "$REDIS_DB" <<'PYREF'
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), db=int(sys.argv[2]))
key = next(iter(r.scan_iter(count=10)))
row = r.hgetall(key)
# Ten feature values (4-byte field names: hashes of feature references) and the view's
# event timestamp, as Feast's own read of driver_hourly_stats fetches.
values = [v for k, v in row.items() if len(k) == 4][:10] + [row[b"_ts:driver_hourly_stats"]]
names = [f"f{i}" for i in range(len(values))]
r.delete("bench:hmget")
r.hset("bench:hmget", mapping=dict(zip(names, values)))
print(" ".join(names))
PYREF
)
REDIS_BENCH=()
for conns in $CONNECTIONS; do
  # shellcheck disable=SC2086 # REF_FIELDS is a list of field names
  csv=$(redis-benchmark -p "$REDIS_PORT" --dbnum "$REDIS_DB" -n 200000 -c "$conns" --csv HMGET bench:hmget $REF_FIELDS | tail -1)
  REDIS_BENCH+=("$conns,$csv")
  echo "    $conns conns: $csv"
done
redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" DEL bench:hmget > /dev/null

echo
echo "Online serving, $DURATION s per cell after $WARMUP s warm-up; feast-rs on $RS_STORE; $(date -u +%F)"
echo
"$PY" - "$RESULTS" "${REDIS_BENCH[@]}" <<'PYTABLE'
import csv, json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
NAMES = {
    "e1_f10": "1 entity × 10 features",
    "e100_f10": "100 entities × 10 features",
    "e1_f50": "1 entity × 50 features",
    "e100_f50": "100 entities × 50 features",
    "e100_v10x5": "100 entities × 10 views × 5 features",
}
ours = {(r["workload"], r["protocol"], r.get("connections")): r for r in rows
        if r["server"] == "feast-rs" and "rps" in r}
print("| workload | server | store | protocol | conns | req/s | p50 ms | p99 ms | errors | feast-rs req/s ÷ this |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    head = f"| {NAMES.get(r['workload'], r['workload'])} | {r['server']} | {r['store']} | {r['protocol']} |"
    if "skipped" in r:
        print(f"{head} | skipped: {r['skipped']} | | | | |")
        continue
    ratio = ""
    if r["server"] != "feast-rs":
        mine = ours.get((r["workload"], r["protocol"], r["connections"]))
        note = ""
        if mine is None:  # no feast-rs row on this protocol: compare with its HTTP row
            mine, note = ours.get((r["workload"], "http", r["connections"])), " (vs HTTP)"
        if mine and r["rps"]:
            ratio = f"{mine['rps'] / r['rps']:.1f}×{note}"
    print(f"{head} {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {ratio} |")
for ref in sys.argv[2:]:
    conns, rest = ref.split(",", 1)
    f = next(csv.reader([rest]))  # "test","rps","avg","min","p50","p95","p99","max"
    print(f"| HMGET 11 fields | redis-benchmark | redis | RESP | {conns} | {float(f[1]):,.0f} | {float(f[4]):.3f} | {float(f[6]):.3f} | | |")
PYTABLE
