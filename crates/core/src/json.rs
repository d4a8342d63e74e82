//! JSON as Feast's Python writes it. Protobuf JSON for Feast messages, as Python's `MessageToDict`/`MessageToJson` write it
//! (camelCase names, enums by name, 64-bit integers as strings, defaults omitted): used by
//! `registry-dump`, `describe` and anything that must print a registry object like Feast;
//! and [`python_dumps`], byte-identical to Python's `json.dumps` defaults (error envelopes,
//! stored source options).

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::Value as Json;

/// Serializes any Feast message to protobuf JSON.
pub fn message_to_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    to_json(message, &SerializeOptions::new())
}

/// Like [`message_to_json`] with the proto field names (`created_timestamp`), which are the
/// attribute names of Feast's Python objects.
pub fn message_to_proto_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    to_json(message, &SerializeOptions::new().use_proto_field_name(true))
}

fn to_json<M: prost::Message + prost::Name>(
    message: &M,
    options: &SerializeOptions,
) -> serde_json::Value {
    let Some(descriptor) = feast_proto::descriptor_pool().get_message_by_name(&M::full_name())
    else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) else {
        return serde_json::Value::Null;
    };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut buf);
    if dynamic.serialize_with_options(&mut ser, options).is_err() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
}

/// Parses protobuf JSON (what Python's `MessageToJson` writes, or proto field names, as
/// `json_format.Parse` accepts) into a Feast message.
pub fn message_from_json<M: prost::Message + prost::Name + Default>(
    json: &str,
) -> Result<M, String> {
    let descriptor = feast_proto::descriptor_pool()
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| format!("{} is not in the descriptor pool", M::full_name()))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut de)
        .map_err(|e| format!("invalid {} JSON: {e}", M::full_name()))?;
    dynamic
        .transcode_to::<M>()
        .map_err(|e| format!("invalid {}: {e}", M::full_name()))
}

/// Sorts object keys recursively (Python's `json.dumps(..., sort_keys=True)`).
pub fn sort_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> =
                std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut v) in entries {
                sort_keys(&mut v);
                map.insert(k, v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// Python's `json.dumps(value)` with its defaults: `", "` and `": "` separators,
/// `ensure_ascii` (`\uXXXX` escapes, surrogate pairs beyond the BMP), floats as `repr`.
pub fn python_dumps(j: &Json) -> String {
    let mut out = String::new();
    write_python_json(j, &mut out);
    out
}

fn write_python_json(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => out.push_str(&crate::value::python_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Json::String(s) => write_python_json_str(s, out),
        Json::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(v, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json_str(k, out);
                out.push_str(": ");
                write_python_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_python_json_str(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use feast_proto::core;

    #[test]
    fn data_source_json_round_trips() {
        let source = core::DataSource {
            name: "driver_stats".into(),
            r#type: core::data_source::SourceType::BatchFile as i32,
            timestamp_field: "event_timestamp".into(),
            field_mapping: [("conv".to_string(), "conv_rate".to_string())].into(),
            options: Some(core::data_source::Options::FileOptions(
                core::data_source::FileOptions {
                    uri: "data/driver_stats.parquet".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let json = message_to_json(&source).to_string();
        assert!(json.contains("\"timestampField\""), "{json}");
        let back: core::DataSource = message_from_json(&json).unwrap();
        assert_eq!(back, source);
        assert!(message_from_json::<core::DataSource>("{\"nope\": 1}").is_err());
    }

    #[test]
    fn dumps_like_python() {
        assert_eq!(
            python_dumps(
                &serde_json::json!({"k": "a\"\\\n\t\u{1}\u{7f}😀", "n": [1, -2], "f": 1.0})
            ),
            r#"{"k": "a\"\\\n\t\u0001\u007f\ud83d\ude00", "n": [1, -2], "f": 1.0}"#
        );
    }

    #[test]
    fn uses_message_to_dict_conventions() {
        let e = core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: "driver".into(),
                value_type: feast_proto::types::value_type::Enum::Int64 as i32,
                join_key: "driver_id".into(),
                ..Default::default()
            }),
            meta: Some(core::EntityMeta {
                created_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_714_557_600,
                    nanos: 0,
                }),
                last_updated_timestamp: None,
            }),
        };
        let json = message_to_json(&e);
        assert_eq!(
            json,
            serde_json::json!({
                "spec": {"name": "driver", "valueType": "INT64", "joinKey": "driver_id"},
                "meta": {"createdTimestamp": "2024-05-01T10:00:00Z"}
            })
        );
    }
}
