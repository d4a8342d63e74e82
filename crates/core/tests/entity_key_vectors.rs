//! feast-core's entity-key encoding against vectors produced by the real Feast SDK
//! (`tests/compat/gen_entity_key_vectors.py` → `tests/data/entity_key_vectors.json`).

use feast_core::entity_key::{
    EntityKeyError, deserialize_entity_key, serialize_entity_key, serialize_entity_key_into,
    serialize_entity_key_prefix,
};
use feast_proto::types::{EntityKey, StringList, Value, value::Val};
use serde_json::Value as Json;

fn vectors() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/entity_key_vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("entity_key_vectors.json is committed");
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `{"int64_val": 1001}` → Value (see the generator's docstring).
fn value(j: &Json) -> Value {
    let obj = j.as_object().expect("value object");
    let Some((field, x)) = obj.iter().next() else {
        return Value::default();
    };
    let val = match field.as_str() {
        "string_val" => Val::StringVal(x.as_str().unwrap().into()),
        "bytes_val" => Val::BytesVal(unhex(x.as_str().unwrap())),
        "int32_val" => Val::Int32Val(x.as_i64().unwrap().try_into().unwrap()),
        "int64_val" => Val::Int64Val(x.as_i64().unwrap()),
        "unix_timestamp_val" => Val::UnixTimestampVal(x.as_i64().unwrap()),
        "double_val" => Val::DoubleVal(x.as_f64().unwrap()),
        "float_val" => Val::FloatVal(x.as_f64().unwrap() as f32),
        "bool_val" => Val::BoolVal(x.as_bool().unwrap()),
        "string_list_val" => Val::StringListVal(StringList {
            val: x
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
        }),
        other => panic!("unknown value field {other}"),
    };
    Value { val: Some(val) }
}

fn entity_key(j: &Json) -> EntityKey {
    EntityKey {
        join_keys: j["join_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect(),
        entity_values: j["values"].as_array().unwrap().iter().map(value).collect(),
    }
}

#[test]
fn vectors_are_from_feast_0_67() {
    let v = vectors();
    assert_eq!(v["feast_version"], "0.67.0");
    assert!(v["serialize"].as_array().unwrap().len() > 50);
}

#[test]
fn serialize_matches_feast() {
    let v = vectors();
    let mut checked = 0;
    let mut errors = 0;
    let mut buf = Vec::new();
    for vec in v["serialize"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let version = vec["version"].as_u64().unwrap() as u32;
        let key = entity_key(vec);
        let got = serialize_entity_key(&key, version);
        if let Some(err) = vec.get("error") {
            assert!(
                got.is_err(),
                "{name} v{version}: Feast raised {err}, we produced {:?}",
                got.map(|b| hex(&b))
            );
            errors += 1;
            continue;
        }
        let expected = vec["hex"].as_str().unwrap();
        let got = got.unwrap_or_else(|e| panic!("{name} v{version}: {e}"));
        assert_eq!(hex(&got), expected, "{name} v{version}");

        // The appending form gives the same bytes after whatever is in the buffer.
        buf.clear();
        buf.extend_from_slice(b"prefix");
        serialize_entity_key_into(&key, version, &mut buf).unwrap();
        assert_eq!(&buf[6..], got.as_slice(), "{name} v{version} (into)");

        if version >= 3 {
            let back = deserialize_entity_key(&got).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                back,
                entity_key(&vec["deserialized"]),
                "{name}: deserialize"
            );
            // Deserializing inverts serializing (keys come back sorted, so re-serializing is stable).
            assert_eq!(
                serialize_entity_key(&back, 3).unwrap(),
                got,
                "{name}: re-serialize"
            );
        }
        checked += 1;
    }
    assert!(
        checked > 60 && errors >= 8,
        "checked {checked}, errors {errors}"
    );
}

#[test]
fn prefix_matches_feast() {
    let v = vectors();
    for vec in v["prefix"].as_array().unwrap() {
        let keys: Vec<&str> = vec["join_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let version = vec["version"].as_u64().unwrap() as u32;
        assert_eq!(
            hex(&serialize_entity_key_prefix(&keys, version)),
            vec["hex"].as_str().unwrap(),
            "{keys:?} v{version}"
        );
    }
}

#[test]
fn deserialize_matches_feast() {
    let v = vectors();
    let cases = v["deserialize"].as_array().unwrap();
    assert!(cases.len() > 20);
    for vec in cases {
        let name = vec["name"].as_str().unwrap();
        let got = deserialize_entity_key(&unhex(vec["hex"].as_str().unwrap()));
        match vec.get("key") {
            Some(key) => assert_eq!(
                got.unwrap_or_else(|e| panic!("{name}: {e}")),
                entity_key(key),
                "{name}"
            ),
            None => assert!(
                matches!(got, Err(EntityKeyError::Malformed(_))),
                "{name}: Feast raised {}, we returned {got:?}",
                vec["error"]
            ),
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random, truncated and mutated byte strings never make `deserialize_entity_key` panic, and
/// whatever it accepts re-serializes without panicking either.
#[test]
fn deserialize_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let v = vectors();
    let seeds: Vec<Vec<u8>> = v["serialize"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vec| vec["version"] == 3 && vec.get("hex").is_some())
        .map(|vec| unhex(vec["hex"].as_str().unwrap()))
        .collect();
    let mut accepted = 0;
    let mut check = |bytes: &[u8]| {
        if let Ok(key) = deserialize_entity_key(bytes) {
            accepted += 1;
            let _ = serialize_entity_key(&key, 3);
        }
    };
    for _ in 0..20_000 {
        // Pure noise, biased toward small numbers so lengths and types are sometimes plausible.
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.below(4) {
                0 => rng.next() as u8,
                _ => rng.below(10) as u8,
            })
            .collect();
        check(&bytes);
    }
    for seed in &seeds {
        for cut in 0..=seed.len() {
            check(&seed[..cut]);
        }
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(m.len());
                m[i] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => m[i].wrapping_add(1),
                    _ => 0xff,
                };
            }
            if rng.below(4) == 0 {
                let cut = rng.below(m.len() + 1);
                m.truncate(cut);
            }
            check(&m);
        }
    }
    // The seeds themselves are accepted, so `check` really ran the success path too.
    assert!(accepted >= seeds.len(), "accepted {accepted}");
}
