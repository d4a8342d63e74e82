"""Regenerate crates/core/tests/data/entity_key_vectors.json with the real Feast SDK.

Every vector is produced by feast's own key_encoding_utils (serialize_entity_key,
serialize_entity_key_prefix, deserialize_entity_key); the Rust test
crates/core/tests/entity_key_vectors.rs checks feast-core against them byte for byte, and
tests/compat/test_entity_key_vectors.py checks that the committed file still matches the SDK.
Run with the venv's python:
    /var/tmp/feast-rs-venv/bin/python tests/compat/gen_entity_key_vectors.py

Values are written as one-entry objects named after the Value oneof field:
{"int64_val": 1001}, {"string_val": "x"}, {"bytes_val": "<hex>"}, ...; {} is an unset Value.
"""

import json
import warnings
from importlib.metadata import version as package_version
from pathlib import Path

from feast.infra.key_encoding_utils import (
    deserialize_entity_key,
    serialize_entity_key,
    serialize_entity_key_prefix,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import StringList, Value

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "core" / "tests" / "data" / "entity_key_vectors.json"

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def to_proto(v: dict) -> Value:
    if not v:
        return Value()
    ((field, x),) = v.items()
    if field == "bytes_val":
        return Value(bytes_val=bytes.fromhex(x))
    if field == "string_list_val":
        return Value(string_list_val=StringList(val=x))
    return Value(**{field: x})


def from_proto(v: Value) -> dict:
    field = v.WhichOneof("val")
    if field is None:
        return {}
    x = getattr(v, field)
    if field == "bytes_val":
        return {field: x.hex()}
    return {field: x}


def key_to_json(k: EntityKey) -> dict:
    return {
        "join_keys": list(k.join_keys),
        "values": [from_proto(v) for v in k.entity_values],
    }


def error_name(e: Exception) -> str:
    # Only the exception type: messages embed protobuf's text format, which is not Feast's.
    return type(e).__name__


# (name, [(join key, value)], versions)
V23 = (3, 2)
V321 = (3, 2, 1, 0)
KEYS = [
    ("int64 1001", [("driver_id", {"int64_val": 1001})], V321),
    ("int64 zero", [("id", {"int64_val": 0})], V321),
    ("int64 negative", [("id", {"int64_val": -1})], V321),
    ("int64 min", [("id", {"int64_val": I64_MIN})], V23),
    ("int64 max", [("id", {"int64_val": I64_MAX})], V23),
    ("int64 beyond int32", [("id", {"int64_val": 2**40})], V321),
    ("int32 zero", [("id", {"int32_val": 0})], V321),
    ("int32 negative", [("id", {"int32_val": -7})], V23),
    ("int32 min", [("id", {"int32_val": I32_MIN})], V23),
    ("int32 max", [("id", {"int32_val": I32_MAX})], V23),
    ("string", [("customer_id", {"string_val": "c1"})], V321),
    ("empty string", [("customer_id", {"string_val": ""})], V23),
    ("unicode string", [("name", {"string_val": "café ☕ 😀 ключ"})], V23),
    ("long string", [("name", {"string_val": "x" * 300})], V23),
    ("string with NUL", [("name", {"string_val": "a\x00b\x00"})], V23),
    ("bytes", [("blob", {"bytes_val": "00ff10"})], V321),
    ("empty bytes", [("blob", {"bytes_val": ""})], V23),
    ("unix timestamp", [("ts", {"unix_timestamp_val": 1714557600})], V321),
    ("negative unix timestamp", [("ts", {"unix_timestamp_val": -1})], V23),
    ("NaT unix timestamp", [("ts", {"unix_timestamp_val": I64_MIN})], V23),
    ("unicode join key", [("ключ_é", {"int64_val": 5})], V23),
    ("empty join key", [("", {"int64_val": 5})], V23),
    ("entity-less dummy", [("__dummy_id", {"string_val": ""})], V23),
    (
        "two keys unsorted",
        [("driver_id", {"int64_val": 1001}), ("customer_id", {"string_val": "c1"})],
        V321,
    ),
    (
        "two keys sorted",
        [("customer_id", {"string_val": "c1"}), ("driver_id", {"int64_val": 1001})],
        V23,
    ),
    (
        "three keys mixed types",
        [
            ("zone", {"int32_val": -3}),
            ("account", {"bytes_val": "cafe"}),
            ("merchant", {"unix_timestamp_val": 42}),
        ],
        V23,
    ),
    (
        "case sorts by code point",
        [("b", {"int64_val": 1}), ("B", {"int64_val": 2}), ("a", {"int64_val": 3})],
        V23,
    ),
    (
        "prefix keys",
        [("ab", {"string_val": "long"}), ("a", {"string_val": "short"})],
        V23,
    ),
    (
        "non-ASCII keys sort after ASCII",
        [("é", {"int64_val": 1}), ("z", {"int64_val": 2}), ("Z", {"int64_val": 3})],
        V23,
    ),
    ("no keys", [], V23),
    # Errors in Feast: unsupported kinds, unset values, duplicate keys (and, above, int64
    # beyond int32 at v<=1).
    ("double value", [("d", {"double_val": 1.5})], V23),
    ("float value", [("f", {"float_val": 1.5})], (3,)),
    ("bool value", [("b", {"bool_val": True})], (3,)),
    ("unset value", [("u", {})], (3,)),
    ("string list value", [("l", {"string_list_val": ["a"]})], (3,)),
    ("bad value among good", [("a", {"int64_val": 1}), ("b", {"double_val": 2.0})], (3,)),
    ("duplicate join keys", [("a", {"int64_val": 1}), ("a", {"int64_val": 2})], (3,)),
]

PREFIXES = [
    ["driver_id"],
    ["driver_id", "customer_id"],
    ["b", "B", "a"],
    ["é", "z"],
    [],
    [""],
    ["__dummy_id"],
]


def deserialize_cases(serialized: list) -> list:
    """Byte strings for deserialize_entity_key: mutations and truncations of good keys."""
    out = []

    def add(name: str, data: bytes) -> None:
        out.append((name, data))

    def v3(pairs):
        return serialize_entity_key(
            EntityKey(
                join_keys=[k for k, _ in pairs],
                entity_values=[to_proto(v) for _, v in pairs],
            ),
            entity_key_serialization_version=3,
        )

    add("trailing NULs stripped from key", v3([("abc\x00\x00", {"string_val": "v"})]))
    add("NUL inside key kept", v3([("a\x00b", {"int64_val": 1})]))
    two = v3([("driver_id", {"int64_val": 1001}), ("customer_id", {"string_val": "c1"})])
    for cut in range(len(two)):
        add(f"two keys truncated to {cut} bytes", two[:cut])
    add("extra value after the keys", two + bytes.fromhex("0300000004000000ffffffff"))
    add("keys without values", v3([("k", {"int64_val": 1})])[: 4 + 8 + 1])
    bad = bytearray(v3([("id", {"int64_val": 7})]))
    bad[4] = 4
    add("key type not STRING", bytes(bad))
    bad = bytearray(v3([("id", {"int64_val": 7})]))
    bad[14] = 5
    add("value type DOUBLE", bytes(bad))
    bad = bytearray(v3([("id", {"int64_val": 7})]))
    bad[18] = 4
    add("INT64 of 4 bytes", bytes(bad[:-4]))
    bad = bytearray(v3([("id", {"int32_val": 7})]))
    bad[18] = 8
    add("INT32 of 8 bytes", bytes(bad) + b"\x00" * 4)
    add("key not UTF-8", bytes.fromhex("010000000200000002000000ffc3"))
    add(
        "string value not UTF-8",
        bytes.fromhex("010000000200000001000000610200000001000000ff"),
    )
    add("huge key count", bytes.fromhex("ffffffff"))
    add("huge key length", bytes.fromhex("0100000002000000ffffffff61"))
    add("huge value length", bytes.fromhex("00000000" + "02000000ffffffff61"))
    add("empty input", b"")
    return out


def build_vectors() -> dict:
    serialize = []
    for name, pairs, versions in KEYS:
        for version in versions:
            key = EntityKey(
                join_keys=[k for k, _ in pairs],
                entity_values=[to_proto(v) for _, v in pairs],
            )
            vec = {
                "name": name,
                "version": version,
                "join_keys": [k for k, _ in pairs],
                "values": [v for _, v in pairs],
            }
            try:
                data = serialize_entity_key(key, entity_key_serialization_version=version)
            except Exception as e:  # Feast rejects the key
                vec["error"] = error_name(e)
            else:
                vec["hex"] = data.hex()
                if version >= 3:
                    vec["deserialized"] = key_to_json(deserialize_entity_key(data))
            serialize.append(vec)

    prefix = []
    for keys in PREFIXES:
        for version in (3, 2):
            data = serialize_entity_key_prefix(keys, entity_key_serialization_version=version)
            prefix.append({"join_keys": keys, "version": version, "hex": data.hex()})

    deserialize = []
    for name, data in deserialize_cases(serialize):
        vec = {"name": name, "hex": data.hex()}
        try:
            vec["key"] = key_to_json(deserialize_entity_key(data))
        except Exception as e:
            vec["error"] = error_name(e)
        deserialize.append(vec)

    return {
        "generator": "tests/compat/gen_entity_key_vectors.py",
        "feast_version": package_version("feast"),
        "serialize": serialize,
        "prefix": prefix,
        "deserialize": deserialize,
    }


def render(vectors: dict) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = render(build_vectors())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
