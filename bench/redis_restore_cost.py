"""What Redis spends to create one entity hash of a materialization (an `_ts:view` field and
10 features, values shaped like serialized Values) by `HSET`, and by `RESTORE` of the same
hash laid out in advance, plus the `HMGET key _ts:view` that Feast's write sends first: the
figures behind the Redis store's new-hash writes (BENCHMARKS.md,
services/online/src/store/hash_dump.rs).

    python bench/redis_restore_cost.py [--db 14] [--keys 1000000] [--port 6379]

Creates KEYS hashes in DB (flushed before and after) each way, in pipelines of 1,000, and
prints Redis's CPU time (INFO cpu, user + system: parsing, the command, replies) and its own
usec_per_call (INFO commandstats, the command alone). The RESTORE payload is Redis's own
DUMP of one such hash taken with rdbcompression off, as the store sends them; the setting
is put back afterwards."""
import argparse
import os
import struct
import time

import redis

p = argparse.ArgumentParser()
p.add_argument("--db", type=int, default=14)
p.add_argument("--keys", type=int, default=1_000_000)
p.add_argument("--port", type=int, default=6379)
args = p.parse_args()
r = redis.Redis(port=args.port, db=args.db)
r.flushdb()

TS_FIELD = b"_ts:driver_hourly_stats"
TS = b"\x08\x80\xb4\xc9\xb1\x06"  # a serialized Timestamp
PAIRS = []
for i in range(10):
    PAIRS += [os.urandom(4), b"\x29" + struct.pack("<d", 1.5 + i)]  # double_val


def key(i):
    # A serialized entity key (driver_id, int64) followed by the project, as Feast's.
    return (b"\x02\x00\x00\x00\x09\x00\x00\x00driver_id\x04\x00\x00\x00\x08\x00\x00\x00"
            + struct.pack("<q", i) + b"bench_offline")


def cpu():
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def stats(command):
    s = r.info("commandstats").get(f"cmdstat_{command}", {})
    return s.get("usec", 0), s.get("calls", 0)


def run(name, command, add):
    c0, (u0, n0), t0 = cpu(), stats(command), time.perf_counter()
    for start in range(0, args.keys, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(args.keys, start + 1000)):
            add(pipe, i)
        for reply in pipe.execute(raise_on_error=True):
            assert reply not in (None, False), reply
    wall = time.perf_counter() - t0
    (u1, n1) = stats(command)
    print(f"{name:>8}: Redis CPU {(cpu() - c0) / args.keys * 1e6:.2f} us/key "
          f"(command alone {(u1 - u0) / max(1, n1 - n0):.2f} us), wall {wall:.1f} s", flush=True)


run("HSET", "hset", lambda pipe, i: pipe.execute_command("HSET", key(i), TS_FIELD, TS, *PAIRS))
run("HMGET", "hmget", lambda pipe, i: pipe.execute_command("HMGET", key(i + args.keys), TS_FIELD))
compression = r.config_get("rdbcompression")["rdbcompression"]
try:
    r.config_set("rdbcompression", "no")
    payload = r.dump(key(0))
finally:
    r.config_set("rdbcompression", compression)
r.flushdb()
run("RESTORE", "restore", lambda pipe, i: pipe.execute_command("RESTORE", key(i), 0, payload))
r.flushdb()
