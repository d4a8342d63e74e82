//! Protobuf JSON for Feast messages, as Python's `MessageToDict`/`MessageToJson` write it
//! (camelCase names, enums by name, 64-bit integers as strings, defaults omitted): used by
//! `registry-dump`, `describe` and anything that must print a registry object like Feast.

use prost_reflect::{DynamicMessage, SerializeOptions};

/// Serializes any Feast message to protobuf JSON.
pub fn message_to_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    let Some(descriptor) = feast_proto::descriptor_pool().get_message_by_name(&M::full_name())
    else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) else {
        return serde_json::Value::Null;
    };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut buf);
    if dynamic
        .serialize_with_options(&mut ser, &SerializeOptions::new())
        .is_err()
    {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
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

#[cfg(test)]
mod tests {
    use super::*;
    use feast_proto::core;

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
