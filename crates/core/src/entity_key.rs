//! Entity-key serialization, byte-identical to Feast's `infra/key_encoding_utils.py`
//! (`serialize_entity_key`, `serialize_entity_key_prefix`, `deserialize_entity_key`).
//! These bytes are the online-store keys (Redis hash keys, SQLite/Postgres `entity_key`), so
//! any difference means a missed row.
//!
//! Layout (all integers little-endian u32 unless noted), with keys sorted when there are several:
//! - version ≥ 3: `num_keys` ‖ per key `2 (STRING)` ‖ `len` ‖ utf8 ‖ per value `type` ‖ `len` ‖ bytes
//! - version 2: like 3 without `num_keys` and without the key lengths
//! - versions 0 and 1: like 2, but an `INT64` value is 4 bytes (`<l`)
//!
//! Value bytes: `STRING` utf8 (type 2), `BYTES` raw (1), `INT32` i32 (3), `INT64` i64 (4),
//! `UNIX_TIMESTAMP` i64 (8). Every other value kind is an error, as in Feast.

use feast_proto::types::{EntityKey, Value, value::Val};

use crate::types::ValueType;
use crate::value::value_type_of;

/// Feast's default `entity_key_serialization_version`.
pub const DEFAULT_ENTITY_KEY_SERIALIZATION_VERSION: u32 = 3;

/// Why an entity key cannot be serialized or deserialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityKeyError {
    /// `join_keys` and `entity_values` differ in length (Feast silently truncates).
    #[error("entity key has {keys} join keys but {values} entity values")]
    LengthMismatch { keys: usize, values: usize },
    /// A join key appears twice (Feast's sort raises a `TypeError`).
    #[error("join key {0:?} appears more than once in the entity key")]
    DuplicateJoinKey(String),
    /// A value kind Feast does not serialize.
    #[error(
        "entity value for join key {join_key:?} has type {value_type}; entity keys support \
         STRING, BYTES, INT32, INT64 and UNIX_TIMESTAMP values"
    )]
    UnsupportedValueType {
        join_key: String,
        /// The `ValueType` name, or `unset` for an empty value.
        value_type: String,
    },
    /// An INT64 outside i32 range with serialization version 0 or 1 (4-byte int64).
    #[error(
        "INT64 entity value {value} for join key {join_key:?} does not fit the 4-byte encoding of \
         entity_key_serialization_version {version}"
    )]
    Int64OutOfRange {
        join_key: String,
        value: i64,
        version: u32,
    },
    /// A key or value longer than a u32 length can describe.
    #[error("entity key component of {0} bytes is too long to serialize")]
    TooLong(usize),
    /// Bytes that are not a v3 serialized entity key.
    #[error("invalid serialized entity key: {0}")]
    Malformed(String),
}

const STRING_TYPE: u32 = ValueType::String as u32;

/// The encoded length and type of one value; errors for unsupported kinds.
fn value_len_and_type(
    join_key: &str,
    v: &Value,
    version: u32,
) -> Result<(usize, u32), EntityKeyError> {
    Ok(match &v.val {
        Some(Val::StringVal(s)) => (s.len(), ValueType::String as u32),
        Some(Val::BytesVal(b)) => (b.len(), ValueType::Bytes as u32),
        Some(Val::Int32Val(_)) => (4, ValueType::Int32 as u32),
        Some(Val::Int64Val(i)) if version <= 1 => {
            if i32::try_from(*i).is_err() {
                return Err(EntityKeyError::Int64OutOfRange {
                    join_key: join_key.to_string(),
                    value: *i,
                    version,
                });
            }
            (4, ValueType::Int64 as u32)
        }
        Some(Val::Int64Val(_)) => (8, ValueType::Int64 as u32),
        Some(Val::UnixTimestampVal(_)) => (8, ValueType::UnixTimestamp as u32),
        None => {
            return Err(EntityKeyError::UnsupportedValueType {
                join_key: join_key.to_string(),
                value_type: "unset".into(),
            });
        }
        Some(_) => {
            return Err(EntityKeyError::UnsupportedValueType {
                join_key: join_key.to_string(),
                value_type: value_type_of(v).as_str_name().to_string(),
            });
        }
    })
}

fn u32_len(len: usize) -> Result<u32, EntityKeyError> {
    u32::try_from(len).map_err(|_| EntityKeyError::TooLong(len))
}

/// Serializes an entity key as Feast's `serialize_entity_key(key, version)` does.
pub fn serialize_entity_key(key: &EntityKey, version: u32) -> Result<Vec<u8>, EntityKeyError> {
    let mut out = Vec::new();
    serialize_entity_key_into(key, version, &mut out)?;
    Ok(out)
}

/// Appends the serialized entity key to `out` (for building `key ‖ project` Redis keys or
/// reusing one buffer across rows). Reserves the exact size up front. On error `out` is left
/// as it was.
pub fn serialize_entity_key_into(
    key: &EntityKey,
    version: u32,
    out: &mut Vec<u8>,
) -> Result<(), EntityKeyError> {
    let n = key.join_keys.len();
    if n != key.entity_values.len() {
        return Err(EntityKeyError::LengthMismatch {
            keys: n,
            values: key.entity_values.len(),
        });
    }
    let v3 = version > 2;

    // Sort indices, not strings. Few keys is the norm, so a small inline buffer covers it.
    let mut inline = [0usize; 8];
    let mut heap = Vec::new();
    let order: &mut [usize] = if n <= inline.len() {
        let o = &mut inline[..n];
        o.iter_mut().enumerate().for_each(|(i, x)| *x = i);
        o
    } else {
        heap.extend(0..n);
        &mut heap
    };
    if n > 1 {
        order.sort_unstable_by(|&a, &b| key.join_keys[a].cmp(&key.join_keys[b]));
        if let Some(w) = order
            .windows(2)
            .find(|w| key.join_keys[w[0]] == key.join_keys[w[1]])
        {
            return Err(EntityKeyError::DuplicateJoinKey(
                key.join_keys[w[0]].clone(),
            ));
        }
    }

    // Validate everything and size the output before writing a byte.
    let mut size = if v3 { 4 } else { 0 };
    for &i in order.iter() {
        let k = &key.join_keys[i];
        u32_len(k.len())?;
        size += 4 + if v3 { 4 } else { 0 } + k.len();
        let (len, _) = value_len_and_type(k, &key.entity_values[i], version)?;
        u32_len(len)?;
        size += 8 + len;
    }
    out.reserve(size);

    if v3 {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for &i in order.iter() {
        let k = key.join_keys[i].as_bytes();
        out.extend_from_slice(&STRING_TYPE.to_le_bytes());
        if v3 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(k);
    }
    for &i in order.iter() {
        let v = &key.entity_values[i];
        let (len, ty) = value_len_and_type(&key.join_keys[i], v, version)?;
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        match &v.val {
            Some(Val::StringVal(s)) => out.extend_from_slice(s.as_bytes()),
            Some(Val::BytesVal(b)) => out.extend_from_slice(b),
            Some(Val::Int32Val(x)) => out.extend_from_slice(&x.to_le_bytes()),
            // Range-checked by `value_len_and_type`.
            Some(Val::Int64Val(x)) if version <= 1 => {
                out.extend_from_slice(&(*x as i32).to_le_bytes())
            }
            Some(Val::Int64Val(x)) | Some(Val::UnixTimestampVal(x)) => {
                out.extend_from_slice(&x.to_le_bytes())
            }
            _ => unreachable!("value kinds were validated above"),
        }
    }
    Ok(())
}

/// The bytes every serialized key with exactly these join keys starts with (Feast's
/// `serialize_entity_key_prefix`), for prefix scans. Keys are sorted like
/// [`serialize_entity_key`] sorts them.
pub fn serialize_entity_key_prefix(join_keys: &[&str], version: u32) -> Vec<u8> {
    let v3 = version > 2;
    let mut sorted: Vec<&str> = join_keys.to_vec();
    sorted.sort_unstable();
    let size = if v3 { 4 } else { 0 }
        + sorted
            .iter()
            .map(|k| 4 + if v3 { 4 } else { 0 } + k.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    if v3 {
        out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    }
    for k in sorted {
        out.extend_from_slice(&STRING_TYPE.to_le_bytes());
        if v3 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(k.as_bytes());
    }
    out
}

/// Reads a version-3 serialized entity key (Feast's `deserialize_entity_key`; earlier versions
/// cannot be read back, as in Feast). Trailing NUL characters are stripped from join keys, as
/// Feast does. The keys come back in serialized (sorted) order. Like Feast, the number of values
/// is whatever follows the keys, so it is not checked against the number of keys.
///
/// Never panics: truncated or garbage input gives [`EntityKeyError::Malformed`].
pub fn deserialize_entity_key(bytes: &[u8]) -> Result<EntityKey, EntityKeyError> {
    let malformed = |what: &str| EntityKeyError::Malformed(what.to_string());
    let mut r = Reader { bytes, pos: 0 };
    let num_keys = r
        .u32()
        .ok_or_else(|| malformed("insufficient data for key count"))? as usize;
    // Each key takes at least 8 bytes; never trust the count for the allocation.
    let mut join_keys = Vec::with_capacity(num_keys.min(bytes.len() / 8));
    for _ in 0..num_keys {
        let (ty, len) = r
            .u32()
            .zip(r.u32())
            .ok_or_else(|| malformed("insufficient data for key metadata"))?;
        if ty != STRING_TYPE {
            return Err(EntityKeyError::Malformed(format!(
                "unsupported key type {ty}"
            )));
        }
        let raw = r
            .take(len as usize)
            .ok_or_else(|| malformed("insufficient data for key"))?;
        let s = std::str::from_utf8(raw)
            .map_err(|e| EntityKeyError::Malformed(format!("join key is not UTF-8: {e}")))?;
        join_keys.push(s.trim_end_matches('\0').to_string());
    }
    let mut entity_values = Vec::with_capacity(join_keys.len());
    while r.pos < bytes.len() {
        let (ty, len) = r
            .u32()
            .zip(r.u32())
            .ok_or_else(|| malformed("insufficient data for value metadata"))?;
        let raw = r
            .take(len as usize)
            .ok_or_else(|| malformed("insufficient data for value"))?;
        entity_values.push(decode_value(ty, raw)?);
    }
    Ok(EntityKey {
        join_keys,
        entity_values,
    })
}

fn decode_value(ty: u32, raw: &[u8]) -> Result<Value, EntityKeyError> {
    let wrong_len = |name: &str, want: usize| {
        EntityKeyError::Malformed(format!(
            "{name} value has {} bytes, expected {want}",
            raw.len()
        ))
    };
    let val = match ValueType::try_from(ty as i32) {
        Ok(ValueType::Int64) => Val::Int64Val(i64::from_le_bytes(
            raw.try_into().map_err(|_| wrong_len("INT64", 8))?,
        )),
        Ok(ValueType::Int32) => Val::Int32Val(i32::from_le_bytes(
            raw.try_into().map_err(|_| wrong_len("INT32", 4))?,
        )),
        Ok(ValueType::UnixTimestamp) => Val::UnixTimestampVal(i64::from_le_bytes(
            raw.try_into().map_err(|_| wrong_len("UNIX_TIMESTAMP", 8))?,
        )),
        Ok(ValueType::String) => Val::StringVal(
            std::str::from_utf8(raw)
                .map_err(|e| EntityKeyError::Malformed(format!("STRING value is not UTF-8: {e}")))?
                .to_string(),
        ),
        Ok(ValueType::Bytes) => Val::BytesVal(raw.to_vec()),
        _ => {
            return Err(EntityKeyError::Malformed(format!(
                "unsupported value type {ty}"
            )));
        }
    };
    Ok(Value { val: Some(val) })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&str, Val)]) -> EntityKey {
        EntityKey {
            join_keys: pairs.iter().map(|(k, _)| k.to_string()).collect(),
            entity_values: pairs
                .iter()
                .map(|(_, v)| Value {
                    val: Some(v.clone()),
                })
                .collect(),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The examples of PROTOCOLS.md §6.1.
    #[test]
    fn protocol_examples() {
        let k = key(&[("driver_id", Val::Int64Val(1001))]);
        assert_eq!(
            hex(&serialize_entity_key(&k, 3).unwrap()),
            "0100000002000000090000006472697665725f69640400000008000000e903000000000000"
        );
        assert_eq!(
            hex(&serialize_entity_key(&k, 2).unwrap()),
            "020000006472697665725f69640400000008000000e903000000000000"
        );
        let mut redis_key = serialize_entity_key(&k, 3).unwrap();
        redis_key.extend_from_slice(b"my_project");
        assert!(hex(&redis_key).ends_with("e9030000000000006d795f70726f6a656374"));
    }

    #[test]
    fn multi_key_sorted_and_round_trips() {
        let k = key(&[
            ("zeta", Val::StringVal("z".into())),
            ("alpha", Val::Int32Val(-1)),
            ("mid", Val::BytesVal(vec![0, 1])),
        ]);
        let bytes = serialize_entity_key(&k, 3).unwrap();
        let back = deserialize_entity_key(&bytes).unwrap();
        assert_eq!(back.join_keys, ["alpha", "mid", "zeta"]);
        assert_eq!(
            back.entity_values,
            key(&[
                ("alpha", Val::Int32Val(-1)),
                ("mid", Val::BytesVal(vec![0, 1])),
                ("zeta", Val::StringVal("z".into())),
            ])
            .entity_values
        );
        // Same key, any input order, same bytes.
        let mut shuffled = k.clone();
        shuffled.join_keys.rotate_left(1);
        shuffled.entity_values.rotate_left(1);
        assert_eq!(serialize_entity_key(&shuffled, 3).unwrap(), bytes);
        // The prefix is a prefix.
        assert!(bytes.starts_with(&serialize_entity_key_prefix(&["zeta", "mid", "alpha"], 3)));
        let v2 = serialize_entity_key(&k, 2).unwrap();
        assert!(v2.starts_with(&serialize_entity_key_prefix(&["mid", "zeta", "alpha"], 2)));
    }

    #[test]
    fn many_keys_use_the_heap_path() {
        let pairs: Vec<(String, Val)> = (0..20)
            .rev()
            .map(|i| (format!("k{i:02}"), Val::Int64Val(i)))
            .collect();
        let k = EntityKey {
            join_keys: pairs.iter().map(|(k, _)| k.clone()).collect(),
            entity_values: pairs
                .iter()
                .map(|(_, v)| Value {
                    val: Some(v.clone()),
                })
                .collect(),
        };
        let back = deserialize_entity_key(&serialize_entity_key(&k, 3).unwrap()).unwrap();
        let expected: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        assert_eq!(back.join_keys, expected);
        assert_eq!(back.entity_values[7].val, Some(Val::Int64Val(7)));
    }

    #[test]
    fn old_versions() {
        let k = key(&[("id", Val::Int64Val(-2))]);
        assert_eq!(
            hex(&serialize_entity_key(&k, 1).unwrap()),
            "0200000069640400000004000000feffffff"
        );
        assert_eq!(
            serialize_entity_key(&k, 0).unwrap(),
            serialize_entity_key(&k, 1).unwrap()
        );
        let big = key(&[("id", Val::Int64Val(1 << 40))]);
        assert!(matches!(
            serialize_entity_key(&big, 1),
            Err(EntityKeyError::Int64OutOfRange { version: 1, .. })
        ));
        // Versions above 3 use the v3 layout, as Feast's `> 2` checks do.
        assert_eq!(
            serialize_entity_key(&k, 4).unwrap(),
            serialize_entity_key(&k, 3).unwrap()
        );
    }

    #[test]
    fn errors() {
        let double = key(&[("d", Val::DoubleVal(1.0))]);
        let e = serialize_entity_key(&double, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entity value for join key \"d\" has type DOUBLE; entity keys support STRING, BYTES, \
             INT32, INT64 and UNIX_TIMESTAMP values"
        );
        let unset = EntityKey {
            join_keys: vec!["u".into()],
            entity_values: vec![Value::default()],
        };
        assert!(matches!(
            serialize_entity_key(&unset, 3),
            Err(EntityKeyError::UnsupportedValueType { value_type, .. }) if value_type == "unset"
        ));
        let dup = key(&[("a", Val::Int64Val(1)), ("a", Val::Int64Val(2))]);
        assert_eq!(
            serialize_entity_key(&dup, 3),
            Err(EntityKeyError::DuplicateJoinKey("a".into()))
        );
        let mismatch = EntityKey {
            join_keys: vec!["a".into(), "b".into()],
            entity_values: vec![],
        };
        assert!(matches!(
            serialize_entity_key(&mismatch, 3),
            Err(EntityKeyError::LengthMismatch { keys: 2, values: 0 })
        ));
        // A failed append leaves the buffer untouched.
        let mut buf = b"keep".to_vec();
        let bad = key(&[("a", Val::Int64Val(1)), ("b", Val::BoolVal(true))]);
        assert!(serialize_entity_key_into(&bad, 3, &mut buf).is_err());
        assert_eq!(buf, b"keep");
    }

    #[test]
    fn into_appends() {
        let k = key(&[("driver_id", Val::Int64Val(1001))]);
        let mut buf = b"pre".to_vec();
        serialize_entity_key_into(&k, 3, &mut buf).unwrap();
        assert_eq!(&buf[..3], b"pre");
        assert_eq!(&buf[3..], serialize_entity_key(&k, 3).unwrap().as_slice());
    }

    #[test]
    fn empty_key() {
        let k = EntityKey::default();
        assert_eq!(serialize_entity_key(&k, 3).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(serialize_entity_key(&k, 2).unwrap(), Vec::<u8>::new());
        assert_eq!(deserialize_entity_key(&[0, 0, 0, 0]).unwrap(), k);
        assert_eq!(serialize_entity_key_prefix(&[], 3), vec![0, 0, 0, 0]);
    }

    #[test]
    fn deserialize_strips_trailing_nuls_and_rejects_garbage() {
        let k = key(&[("abc\0\0", Val::StringVal("v".into()))]);
        let back = deserialize_entity_key(&serialize_entity_key(&k, 3).unwrap()).unwrap();
        assert_eq!(back.join_keys, ["abc"]);

        let good = serialize_entity_key(&key(&[("id", Val::Int64Val(7))]), 3).unwrap();
        for cut in 0..good.len() {
            if cut == 4 + 8 + 2 {
                // Exactly the keys and no values: valid, like Feast.
                assert!(deserialize_entity_key(&good[..cut]).is_ok());
                continue;
            }
            assert!(
                deserialize_entity_key(&good[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        // A key type other than STRING.
        let mut bad = good.clone();
        bad[4] = 4;
        assert!(
            deserialize_entity_key(&bad)
                .unwrap_err()
                .to_string()
                .contains("key type 4")
        );
        // An INT64 with the wrong width.
        let mut bad = good.clone();
        bad[18] = 4;
        bad.truncate(bad.len() - 4);
        assert!(deserialize_entity_key(&bad).is_err());
        // An unsupported value type.
        let mut bad = good;
        bad[14] = 5;
        assert!(
            deserialize_entity_key(&bad)
                .unwrap_err()
                .to_string()
                .contains("value type 5")
        );
        // A huge key count does not allocate or panic.
        assert!(deserialize_entity_key(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
