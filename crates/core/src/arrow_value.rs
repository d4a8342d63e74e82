//! Arrow columns → `feast.types.Value`s, as Feast's materialization converts offline rows
//! (`_convert_arrow_to_proto` → `python_values_to_proto_values` with the declared type).
//!
//! The column is first cast to the Arrow type of the declared value type
//! ([`value_type_to_arrow`]), so a source column of another width or a string timestamp is
//! accepted exactly when Arrow's cast accepts it. Nulls become an empty `Value` (Feast's
//! `ProtoValue()`); a null element inside a list is an error, as Feast cannot store it.
//! Timestamps become whole seconds since the epoch (Feast's `unix_timestamp_val`), rounded
//! down.
//!
//! Supported: the scalar types, their lists and sets, JSON, UUID / TIME_UUID, DECIMAL (as
//! strings) and NULL. Maps, structs and nested lists answer an error naming the type.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use feast_proto::types::value::Val;
use feast_proto::types::{
    BoolList, BoolSet, BytesList, BytesSet, DoubleList, DoubleSet, FloatList, FloatSet, Int32List,
    Int32Set, Int64List, Int64Set, Null, StringList, StringSet, Value,
};

use crate::types::{ValueType, element_type, value_type_to_arrow};

/// Converts every row of `array` to a Value of type `vt`.
pub fn array_to_values(array: &ArrayRef, vt: ValueType) -> Result<Vec<Value>, String> {
    use ValueType as V;
    let target = match vt {
        V::Json => DataType::LargeUtf8,
        V::JsonList => DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "item",
            DataType::LargeUtf8,
            true,
        ))),
        V::Map
        | V::MapList
        | V::Struct
        | V::StructList
        | V::ScalarMap
        | V::ValueList
        | V::ValueSet
        | V::ZonedTimestamp
        | V::Invalid => {
            return Err(format!(
                "materializing {} values is not supported yet",
                vt.as_str_name()
            ));
        }
        other => value_type_to_arrow(other).map_err(|e| e.to_string())?,
    };
    let target = keep_zone(target, array.data_type());
    let cast = if array.data_type() == &target {
        array.clone()
    } else {
        let options = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow_cast::cast_with_options(array, &target, &options).map_err(|e| {
            format!(
                "a {} column cannot be read as {}: {e}",
                array.data_type(),
                vt.as_str_name()
            )
        })?
    };
    let n = cast.len();
    let mut out = Vec::with_capacity(n);
    if vt == V::Null {
        out.resize(
            n,
            Value {
                val: Some(Val::NullVal(Null::Null as i32)),
            },
        );
        return Ok(out);
    }
    if let Some(elem) = element_type(vt) {
        let lists = cast.as_list::<i32>();
        for i in 0..n {
            if lists.is_null(i) {
                out.push(Value::default());
                continue;
            }
            let items = lists.value(i);
            if items.null_count() > 0 {
                return Err(format!(
                    "row {i}: a {} value has a null element, which Feast cannot store",
                    vt.as_str_name()
                ));
            }
            out.push(Value {
                val: Some(collection(&items, vt, elem)?),
            });
        }
        return Ok(out);
    }
    for i in 0..n {
        if cast.is_null(i) {
            out.push(Value::default());
            continue;
        }
        let val = match vt {
            V::Int32 => Val::Int32Val(cast.as_primitive::<Int32Type>().value(i)),
            V::Int64 => Val::Int64Val(cast.as_primitive::<Int64Type>().value(i)),
            V::Float => Val::FloatVal(cast.as_primitive::<Float32Type>().value(i)),
            V::Double => Val::DoubleVal(cast.as_primitive::<Float64Type>().value(i)),
            V::Bool => Val::BoolVal(cast.as_boolean().value(i)),
            V::String => Val::StringVal(cast.as_string::<i32>().value(i).to_string()),
            V::Uuid => Val::UuidVal(cast.as_string::<i32>().value(i).to_string()),
            V::TimeUuid => Val::TimeUuidVal(cast.as_string::<i32>().value(i).to_string()),
            V::Decimal => Val::DecimalVal(cast.as_string::<i32>().value(i).to_string()),
            V::Json => Val::JsonVal(cast.as_string::<i64>().value(i).to_string()),
            V::Bytes => Val::BytesVal(cast.as_binary::<i32>().value(i).to_vec()),
            V::UnixTimestamp => Val::UnixTimestampVal(seconds(
                cast.as_primitive::<TimestampMicrosecondType>().value(i),
            )),
            other => {
                return Err(format!(
                    "materializing {} values is not supported yet",
                    other.as_str_name()
                ));
            }
        };
        out.push(Value { val: Some(val) });
    }
    Ok(out)
}

/// A timestamp target keeps the source's zone (instants are stored as UTC whatever the
/// zone, so only the unit changes; no zone database needed), also inside lists.
fn keep_zone(target: DataType, source: &DataType) -> DataType {
    match (&target, source) {
        (DataType::Timestamp(unit, _), DataType::Timestamp(_, zone)) => {
            DataType::Timestamp(*unit, zone.clone())
        }
        (DataType::List(t), DataType::List(s) | DataType::LargeList(s)) => {
            let item = keep_zone(t.data_type().clone(), s.data_type());
            DataType::List(std::sync::Arc::new(t.as_ref().clone().with_data_type(item)))
        }
        _ => target,
    }
}

fn seconds(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// One list or set value from its (non-null) items.
fn collection(items: &ArrayRef, vt: ValueType, elem: ValueType) -> Result<Val, String> {
    use ValueType as V;
    let is_set = crate::types::is_set(vt);
    let strings = || -> Vec<String> {
        let a = items.as_string::<i32>();
        (0..a.len()).map(|j| a.value(j).to_string()).collect()
    };
    Ok(match elem {
        V::Int32 => {
            let val = items.as_primitive::<Int32Type>().values().to_vec();
            if is_set {
                Val::Int32SetVal(Int32Set { val })
            } else {
                Val::Int32ListVal(Int32List { val })
            }
        }
        V::Int64 => {
            let val = items.as_primitive::<Int64Type>().values().to_vec();
            if is_set {
                Val::Int64SetVal(Int64Set { val })
            } else {
                Val::Int64ListVal(Int64List { val })
            }
        }
        V::Float => {
            let val = items.as_primitive::<Float32Type>().values().to_vec();
            if is_set {
                Val::FloatSetVal(FloatSet { val })
            } else {
                Val::FloatListVal(FloatList { val })
            }
        }
        V::Double => {
            let val = items.as_primitive::<Float64Type>().values().to_vec();
            if is_set {
                Val::DoubleSetVal(DoubleSet { val })
            } else {
                Val::DoubleListVal(DoubleList { val })
            }
        }
        V::Bool => {
            let a = items.as_boolean();
            let val = (0..a.len()).map(|j| a.value(j)).collect();
            if is_set {
                Val::BoolSetVal(BoolSet { val })
            } else {
                Val::BoolListVal(BoolList { val })
            }
        }
        V::Bytes => {
            let a = items.as_binary::<i32>();
            let val = (0..a.len()).map(|j| a.value(j).to_vec()).collect();
            if is_set {
                Val::BytesSetVal(BytesSet { val })
            } else {
                Val::BytesListVal(BytesList { val })
            }
        }
        V::UnixTimestamp => {
            let val = items
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .iter()
                .map(|&m| seconds(m))
                .collect();
            if is_set {
                Val::UnixTimestampSetVal(Int64Set { val })
            } else {
                Val::UnixTimestampListVal(Int64List { val })
            }
        }
        V::String => {
            let val = strings();
            if is_set {
                Val::StringSetVal(StringSet { val })
            } else {
                Val::StringListVal(StringList { val })
            }
        }
        V::Uuid if is_set => Val::UuidSetVal(StringSet { val: strings() }),
        V::Uuid => Val::UuidListVal(StringList { val: strings() }),
        V::TimeUuid if is_set => Val::TimeUuidSetVal(StringSet { val: strings() }),
        V::TimeUuid => Val::TimeUuidListVal(StringList { val: strings() }),
        V::Decimal if is_set => Val::DecimalSetVal(StringSet { val: strings() }),
        V::Decimal => Val::DecimalListVal(StringList { val: strings() }),
        V::Json => {
            let a = items.as_string::<i64>();
            Val::JsonListVal(StringList {
                val: (0..a.len()).map(|j| a.value(j).to_string()).collect(),
            })
        }
        other => {
            return Err(format!(
                "materializing lists of {} is not supported yet",
                other.as_str_name()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{
        Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
        TimestampNanosecondArray,
    };
    use std::sync::Arc;

    fn vals(array: ArrayRef, vt: ValueType) -> Vec<Option<Val>> {
        array_to_values(&array, vt)
            .unwrap()
            .into_iter()
            .map(|v| v.val)
            .collect()
    }

    #[test]
    fn scalars_follow_the_declared_type_and_nulls_are_empty_values() {
        // An int32 source column for an INT64 feature, and the other way round.
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(3)]));
        assert_eq!(
            vals(ints, ValueType::Int64),
            vec![Some(Val::Int64Val(1)), None, Some(Val::Int64Val(3))]
        );
        let longs: ArrayRef = Arc::new(Int64Array::from(vec![7]));
        assert_eq!(vals(longs, ValueType::Int32), vec![Some(Val::Int32Val(7))]);
        let doubles: ArrayRef = Arc::new(Float64Array::from(vec![0.5]));
        assert_eq!(
            vals(doubles, ValueType::Float),
            vec![Some(Val::FloatVal(0.5))]
        );
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        assert_eq!(
            vals(strings, ValueType::String),
            vec![Some(Val::StringVal("a".into())), None]
        );
    }

    #[test]
    fn timestamps_are_whole_seconds_rounded_down() {
        let ts: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![1_714_521_600_999_999_999, -1_500_000_000])
                .with_timezone("UTC"),
        );
        assert_eq!(
            vals(ts, ValueType::UnixTimestamp),
            vec![
                Some(Val::UnixTimestampVal(1_714_521_600)),
                Some(Val::UnixTimestampVal(-2))
            ]
        );
        let naive: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![2_000_000]));
        assert_eq!(
            vals(naive, ValueType::UnixTimestamp),
            vec![Some(Val::UnixTimestampVal(2))]
        );
    }

    #[test]
    fn lists_and_sets() {
        let mut b = ListBuilder::new(Int64Builder::new());
        b.append_value([Some(1), Some(2)]);
        b.append_null();
        b.append_value([]);
        let lists: ArrayRef = Arc::new(b.finish());
        assert_eq!(
            vals(lists.clone(), ValueType::Int64List),
            vec![
                Some(Val::Int64ListVal(Int64List { val: vec![1, 2] })),
                None,
                Some(Val::Int64ListVal(Int64List { val: vec![] })),
            ]
        );
        assert_eq!(
            vals(lists, ValueType::Int32Set)[0],
            Some(Val::Int32SetVal(Int32Set { val: vec![1, 2] }))
        );
        let mut b = ListBuilder::new(Int64Builder::new());
        b.append_value([Some(1), None]);
        let with_null: ArrayRef = Arc::new(b.finish());
        assert!(array_to_values(&with_null, ValueType::Int64List).is_err());
    }

    #[test]
    fn unsupported_types_and_impossible_casts_are_errors() {
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert!(
            array_to_values(&strings, ValueType::Map)
                .unwrap_err()
                .contains("MAP")
        );
        let err = array_to_values(&strings, ValueType::Int64).unwrap_err();
        assert!(err.contains("cannot be read as INT64"), "{err}");
    }
}
