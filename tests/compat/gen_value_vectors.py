"""Regenerate crates/core/tests/data/value_vectors.json with the real Feast SDK.

- "to_json": a serialized feast.types.Value and what the feature server returns for it
  (feast.feature_server_utils._value_to_native, checked to be valid JSON with allow_nan=False).
- "from_json": a JSON value, a declared ValueType and the Value Feast builds from it
  (feast.type_map.python_values_to_proto_values), or the exception type when Feast rejects it.
  Only cases where feast-rs means to agree with Feast are listed; the deliberate differences
  are documented on feast_core::value::json_to_value.

crates/core/tests/value_vectors.rs checks feast-core against this file and
tests/compat/test_value_vectors.py checks the file against the installed SDK. Run with:
    /var/tmp/feast-rs-venv/bin/python tests/compat/gen_value_vectors.py
"""

import json
import logging
import math
import warnings
from importlib.metadata import version as package_version
from pathlib import Path

from feast.feature_server_utils import _value_to_native
from feast.protos.feast.types.Value_pb2 import (
    BoolList,
    BoolSet,
    BytesList,
    BytesSet,
    DoubleList,
    DoubleSet,
    FloatList,
    FloatSet,
    Int32List,
    Int32Set,
    Int64List,
    Int64Set,
    Map,
    MapList,
    RepeatedValue,
    StringList,
    StringSet,
    Value,
    ZonedTimestamp,
)
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "core" / "tests" / "data" / "value_vectors.json"

NAN, INF = float("nan"), float("inf")


def _map(**kv) -> Map:
    m = Map()
    for k, v in kv.items():
        m.val[k].CopyFrom(v)
    return m


INNER = _map(
    z=Value(int64_val=1),
    a=Value(double_list_val=DoubleList(val=[1.5, 2.0])),
    n=Value(),
    b=Value(bytes_val=b"hi"),
    s=Value(string_val="é"),
)

TO_JSON = [
    ("unset", Value()),
    ("null_val", Value(null_val=0)),
    ("int32", Value(int32_val=-2147483648)),
    ("int64", Value(int64_val=9223372036854775807)),
    ("int64 small", Value(int64_val=1001)),
    ("double", Value(double_val=0.52)),
    ("double integral", Value(double_val=1.0)),
    ("double large", Value(double_val=1e16)),
    ("double tiny", Value(double_val=-2.5e-300)),
    ("double NaN", Value(double_val=NAN)),
    ("double inf", Value(double_val=INF)),
    ("double -inf", Value(double_val=-INF)),
    ("float", Value(float_val=0.1)),
    ("float integral", Value(float_val=2.0)),
    ("float NaN", Value(float_val=NAN)),
    ("float -inf", Value(float_val=-INF)),
    ("bool", Value(bool_val=True)),
    ("string", Value(string_val='é"x')),
    ("bytes", Value(bytes_val=b"\x00\x01\x02\xff")),
    ("empty bytes", Value(bytes_val=b"")),
    ("unix timestamp", Value(unix_timestamp_val=1714557600)),
    ("json", Value(json_val='{"a": [1, 2.5]}')),
    ("uuid", Value(uuid_val="123e4567-e89b-12d3-a456-426614174000")),
    ("time uuid", Value(time_uuid_val="a8098c1a-f86e-11da-bd1a-00112444be1e")),
    ("decimal", Value(decimal_val="-12.3400")),
    ("bytes list", Value(bytes_list_val=BytesList(val=[b"a", b""]))),
    ("bytes set", Value(bytes_set_val=BytesSet(val=[b"ab"]))),
    ("string list", Value(string_list_val=StringList(val=["x", ""]))),
    ("string set", Value(string_set_val=StringSet(val=["x"]))),
    ("int32 list", Value(int32_list_val=Int32List(val=[1, -2]))),
    ("int32 set", Value(int32_set_val=Int32Set(val=[3]))),
    ("int64 list", Value(int64_list_val=Int64List(val=[-9223372036854775808, 0]))),
    ("int64 set", Value(int64_set_val=Int64Set(val=[]))),
    ("double list", Value(double_list_val=DoubleList(val=[1.0, 0.5]))),
    ("double list non-finite", Value(double_list_val=DoubleList(val=[1.0, NAN, INF, -INF]))),
    ("double set non-finite", Value(double_set_val=DoubleSet(val=[NAN, 2.5]))),
    ("float list", Value(float_list_val=FloatList(val=[0.1, 3.0]))),
    ("float list non-finite", Value(float_list_val=FloatList(val=[0.1, INF]))),
    ("float set", Value(float_set_val=FloatSet(val=[NAN]))),
    ("bool list", Value(bool_list_val=BoolList(val=[True, False]))),
    ("bool set", Value(bool_set_val=BoolSet(val=[True]))),
    ("unix timestamp list", Value(unix_timestamp_list_val=Int64List(val=[0, 1714557600]))),
    ("unix timestamp set", Value(unix_timestamp_set_val=Int64Set(val=[5]))),
    ("json list", Value(json_list_val=StringList(val=["[1]", "null"]))),
    ("uuid list", Value(uuid_list_val=StringList(val=["u"]))),
    ("time uuid list", Value(time_uuid_list_val=StringList(val=["t"]))),
    ("uuid set", Value(uuid_set_val=StringSet(val=["u"]))),
    ("time uuid set", Value(time_uuid_set_val=StringSet(val=["t"]))),
    ("decimal list", Value(decimal_list_val=StringList(val=["1.0"]))),
    ("decimal set", Value(decimal_set_val=StringSet(val=["2"]))),
    ("map", Value(map_val=INNER)),
    ("nested map", Value(map_val=_map(inner=Value(map_val=INNER), s=Value(string_val="x")))),
    ("struct", Value(struct_val=INNER)),
    ("map list", Value(map_list_val=MapList(val=[INNER, Map()]))),
    ("struct list", Value(struct_list_val=MapList(val=[INNER]))),
    (
        "list_val",
        Value(
            list_val=RepeatedValue(
                val=[
                    Value(int64_list_val=Int64List(val=[1, 2])),
                    Value(),
                    Value(list_val=RepeatedValue(val=[Value(string_list_val=StringList(val=["a"]))])),
                ]
            )
        ),
    ),
    ("set_val", Value(set_val=RepeatedValue(val=[Value(bool_list_val=BoolList(val=[True]))]))),
    ("zoned empty zone", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone=""))),
    ("zoned UTC", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="UTC"))),
    (
        "zoned New York",
        Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="America/New_York")),
    ),
    (
        "zoned New York winter",
        Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1704067200, zone="America/New_York")),
    ),
    ("zoned Kathmandu", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="Asia/Kathmandu"))),
    ("zoned offset", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="+05:30"))),
    ("zoned UTC offset", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="UTC-07:00"))),
    ("zoned GMT offset", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="GMT-0330"))),
    ("zoned unknown zone", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=1714557600, zone="Mars/Olympus"))),
    ("zoned LMT", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=-3155673600, zone="America/New_York"))),
    ("zoned NaT", Value(zoned_timestamp_val=ZonedTimestamp(unix_timestamp=-(2**63), zone="UTC"))),
]

# (name, declared type, JSON input)
FROM_JSON = [
    ("int64", "INT64", 1001),
    ("int64 from string", "INT64", " 12 "),
    ("int64 integral float", "INT64", 3.0),
    ("int64 not a number", "INT64", "abc"),
    ("int32", "INT32", -5),
    ("int32 out of range", "INT32", 2**40),
    ("double", "DOUBLE", 1.5),
    ("double from int", "DOUBLE", 2),
    ("float", "FLOAT", 0.1),
    ("float from string", "FLOAT", "2.5"),
    ("float overflow", "FLOAT", 1e40),
    ("string", "STRING", "x"),
    ("string from int", "STRING", 1001),
    ("string from float", "STRING", 1.5),
    ("string from large float", "STRING", 1e16),
    ("string from small float", "STRING", 1.5e-7),
    ("string from bool", "STRING", True),
    ("bool", "BOOL", False),
    ("bool from 1", "BOOL", 1),
    ("unix timestamp", "UNIX_TIMESTAMP", 1714557600),
    ("unix timestamp from string", "UNIX_TIMESTAMP", "1714557600"),
    ("uuid", "UUID", "123e4567-e89b-12d3-a456-426614174000"),
    ("time uuid", "TIME_UUID", "a8098c1a-f86e-11da-bd1a-00112444be1e"),
    ("decimal", "DECIMAL", "1.50"),
    ("json object", "JSON", {"a": "é", "b": [1.0, 1e16, None, True], "c": {}}),
    ("json number", "JSON", 5),
    ("json text", "JSON", '{"a":1}'),
    ("json invalid text", "JSON", "not json"),
    ("json list", "JSON_LIST", [{"a": 1}, '{"b": 2}', None]),
    ("map", "MAP", {"i": 1, "f": 0.5, "s": "x", "b": False, "l": [1, 2], "m": {"deep": ["a"]}, "ml": [{"k": True}], "n": None}),
    ("map from string", "MAP", '{"a": 1, "b": {"c": [1.5]}}'),
    ("map not an object", "MAP", [1]),
    ("map with mixed list", "MAP", {"a": [1, "x"]}),
    ("map with nested list", "MAP", {"a": [1, [2]]}),
    ("struct", "STRUCT", {"a": 1, "b": "x"}),
    ("struct from scalar", "STRUCT", 5),
    ("struct from string", "STRUCT", '{"a": [true]}'),
    ("map list", "MAP_LIST", [{"a": 1}, {}]),
    ("map list from string", "MAP_LIST", '[{"a": 1}]'),
    ("struct list", "STRUCT_LIST", [{"a": {"b": 2}}]),
    ("string list with null", "STRING_LIST", ["a", None]),
    ("int64 list with null", "INT64_LIST", [1, None]),
    ("int32 list", "INT32_LIST", [1, -2]),
    ("double list", "DOUBLE_LIST", [1.0, 2.5]),
    ("float list", "FLOAT_LIST", [0.1, 2.5]),
    ("bool list", "BOOL_LIST", [True, False]),
    ("empty int64 list", "INT64_LIST", []),
    ("unix timestamp list", "UNIX_TIMESTAMP_LIST", [1, 2]),
    ("uuid list", "UUID_LIST", ["123e4567-e89b-12d3-a456-426614174000"]),
    ("decimal list", "DECIMAL_LIST", ["1", "2.5"]),
    ("int64 set", "INT64_SET", [1, 1, 2]),
    ("int32 set", "INT32_SET", [3]),
    ("string set", "STRING_SET", ["a", "a"]),
    ("bool set", "BOOL_SET", [True, True]),
    ("double set", "DOUBLE_SET", [2.5]),
    ("unix timestamp set", "UNIX_TIMESTAMP_SET", [7, 7]),
    ("value list", "VALUE_LIST", [[1, 2], [], None, ["a"], [[0.5]], [{"k": 1}]]),
    ("value set", "VALUE_SET", [[True], ["x"]]),
    ("scalar map empty", "SCALAR_MAP", {}),
    ("infer int", "UNKNOWN", 5),
    ("infer float", "UNKNOWN", 5.0),
    ("infer string", "UNKNOWN", "s"),
    ("infer bool", "UNKNOWN", True),
    ("infer list", "UNKNOWN", [1, 2]),
    ("infer string list", "UNKNOWN", ["a", "b"]),
    ("infer map", "UNKNOWN", {"a": 1}),
    ("infer map list", "UNKNOWN", [{"a": 1}]),
] + [(f"null as {t}", t, None) for t in ("INT64", "STRING", "DOUBLE_LIST", "MAP", "JSON", "VALUE_LIST", "UUID_SET")]


def _native_json(v: Value):
    return json.loads(json.dumps(_value_to_native(v), allow_nan=False))


def build_vectors() -> dict:
    to_json = [
        {"name": name, "proto": v.SerializeToString(deterministic=True).hex(), "json": _native_json(v)}
        for name, v in TO_JSON
    ]
    from_json = []
    for name, type_name, j in FROM_JSON:
        vec = {"name": name, "type": type_name, "input": j}
        try:
            (proto,) = python_values_to_proto_values([j], ValueType[type_name])
        except Exception as e:
            vec["error"] = type(e).__name__
        else:
            vec["proto"] = proto.SerializeToString(deterministic=True).hex()
        from_json.append(vec)
    return {
        "generator": "tests/compat/gen_value_vectors.py",
        "feast_version": package_version("feast"),
        "to_json": to_json,
        "from_json": from_json,
    }


def render(vectors: dict) -> str:
    # Sorted keys: Python's protobuf map iteration order changes from run to run.
    return json.dumps(vectors, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def quiet_build() -> dict:
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_vectors()
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    text = render(quiet_build())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
