//! feast-core's Value ↔ JSON conversions against vectors produced by the real Feast SDK
//! (`tests/compat/gen_value_vectors.py` → `tests/data/value_vectors.json`).

use feast_core::types::ValueType;
use feast_core::value::{ValueJson, json_to_value, value_to_json};
use feast_proto::types::Value;
use prost::Message;
use serde_json::Value as Json;

fn vectors() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/value_vectors.json");
    let text = std::fs::read_to_string(path).expect("value_vectors.json is committed");
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn decode(hex: &str) -> Value {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Value::decode(bytes.as_slice()).expect("a serialized feast.types.Value")
}

fn value_type(name: &str) -> ValueType {
    if name == "UNKNOWN" {
        return ValueType::Invalid;
    }
    ValueType::from_str_name(name).unwrap_or_else(|| panic!("unknown ValueType {name}"))
}

#[test]
fn value_to_json_matches_feature_server() {
    let v = vectors();
    assert_eq!(v["feast_version"], "0.67.0");
    let cases = v["to_json"].as_array().unwrap();
    assert!(cases.len() > 60);
    for vec in cases {
        let name = vec["name"].as_str().unwrap();
        let got = value_to_json(&decode(vec["proto"].as_str().unwrap()));
        // serde_json keeps integers and floats apart, so `1` vs `1.0` is a mismatch here.
        assert_eq!(got, vec["json"], "{name}");
    }
}

#[test]
fn streaming_serializer_writes_the_same_text() {
    let v = vectors();
    let mut protos: Vec<Value> = v["to_json"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| decode(c["proto"].as_str().unwrap()))
        .collect();
    // The vectors' inputs typed as Feast types them cover maps, nested lists and sets too.
    for c in v["from_json"].as_array().unwrap() {
        if let Some(hex) = c.get("proto") {
            protos.push(decode(hex.as_str().unwrap()));
        }
    }
    assert!(protos.len() > 100);
    for p in &protos {
        let tree = serde_json::to_string(&value_to_json(p)).unwrap();
        let streamed = serde_json::to_string(&ValueJson(p)).unwrap();
        assert_eq!(streamed, tree, "{p:?}");
    }
}

#[test]
fn json_to_value_matches_python_values_to_proto_values() {
    let v = vectors();
    let cases = v["from_json"].as_array().unwrap();
    assert!(cases.len() > 50);
    for vec in cases {
        let name = vec["name"].as_str().unwrap();
        let vt = value_type(vec["type"].as_str().unwrap());
        let got = json_to_value(&vec["input"], vt);
        match vec.get("proto") {
            Some(hex) => {
                let expected = decode(hex.as_str().unwrap());
                let got = got.unwrap_or_else(|e| panic!("{name}: Feast accepts it, we say {e}"));
                assert_eq!(got, expected, "{name}");
            }
            None => assert!(
                got.is_err(),
                "{name}: Feast raised {}, we produced {got:?}",
                vec["error"]
            ),
        }
    }
}
