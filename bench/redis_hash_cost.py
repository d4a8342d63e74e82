"""What Redis itself spends per HMGET and per HGETALL on one entity hash, by the hash's encoding
(listpack vs hash table) and the number of fields picked: the figures behind the Redis store's
choice of HGETALL for wide reads (BENCHMARKS.md, services/online/src/store/redis.rs).

    python bench/redis_hash_cost.py [--db 12] [--fields 122] [--port 6379]

Writes 100 hashes of FIELDS fields (9-byte values, like a serialized Value) in each encoding
into DB (flushed before and after), then for each number of picked fields sends 30 pipelines
of 100 HMGETs and of 100 HGETALLs, and prints Redis's own usec_per_call (INFO commandstats),
which does not count the network or the client."""
import argparse
import random

import redis

p = argparse.ArgumentParser()
p.add_argument("--db", type=int, default=12)
p.add_argument("--fields", type=int, default=122)
p.add_argument("--port", type=int, default=6379)
args = p.parse_args()
r = redis.Redis(port=args.port, db=args.db)
r.flushdb()
limit = r.config_get("hash-max-listpack-entries")["hash-max-listpack-entries"]
names = [f"f{j:03d}".encode() for j in range(args.fields)]


def make(prefix, listpack_entries):
    r.config_set("hash-max-listpack-entries", listpack_entries)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.hset(f"{prefix}{i}", mapping={n: b"\x10" + bytes([j % 256]) * 8 for j, n in enumerate(names)})
    pipe.execute()


try:
    make("listpack", max(args.fields, 128))
    make("hashtable", 1)
finally:
    r.config_set("hash-max-listpack-entries", limit)
print("| encoding | fields picked | HMGET µs | HGETALL µs |")
print("|---|---|---|---|")
for encoding in ["listpack", "hashtable"]:
    assert r.object("encoding", f"{encoding}0").decode() == encoding
    for picked in sorted({6, 11, 16, 30, 60, args.fields} & set(range(1, args.fields + 1))):
        want = random.sample(names, picked)
        cost = {}
        for command in ["hmget", "hgetall"]:
            r.config_resetstat()
            for _ in range(30):
                pipe = r.pipeline(transaction=False)
                for i in range(100):
                    if command == "hmget":
                        pipe.hmget(f"{encoding}{i}", want)
                    else:
                        pipe.hgetall(f"{encoding}{i}")
                pipe.execute()
            cost[command] = r.info("commandstats")[f"cmdstat_{command}"]["usec_per_call"]
        print(f"| {encoding} | {picked} of {args.fields} | {cost['hmget']} | {cost['hgetall']} |")
r.flushdb()
