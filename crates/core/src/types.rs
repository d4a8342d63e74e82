//! The Feast type system: [`ValueType`] (the proto enum every stored type is expressed in),
//! the dtype names users write in schemas (`Int64`, `Array(Float32)`, ...), and the mapping to
//! and from Arrow data types.
//!
//! Facts about Feast 0.67 that this module follows (from `feast/types.py`, `feast/type_map.py`):
//! - `str(dtype)` spells `DOUBLE` as `Float64` and `FLOAT` as `Float32`; lists are `Array(T)`,
//!   sets `Set(T)`. `STRUCT`, `STRUCT_LIST`, `VALUE_LIST` and `VALUE_SET` print the placeholder
//!   types Feast reconstructs from a bare `ValueType`: `Struct({_value: String})`,
//!   `Array(Struct({_value: String}))`, `Array(Array(String))` and `Set(Array(String))`.
//! - Python's `ValueType` also has `PDF_BYTES = 30` and `IMAGE_BYTES = 31` (dtypes `PdfBytes`,
//!   `ImageBytes`), which the proto enum lacks; they cannot be represented here.
//! - Arrow `large_string` maps to `JSON`, not `STRING`.

use std::fmt;

use arrow_schema::{DataType, Field, Fields, TimeUnit};

pub use feast_proto::types::value_type::Enum as ValueType;

/// Every variant of [`ValueType`], in enum-number order.
pub const ALL_VALUE_TYPES: [ValueType; 45] = [
    ValueType::Invalid,
    ValueType::Bytes,
    ValueType::String,
    ValueType::Int32,
    ValueType::Int64,
    ValueType::Double,
    ValueType::Float,
    ValueType::Bool,
    ValueType::UnixTimestamp,
    ValueType::BytesList,
    ValueType::StringList,
    ValueType::Int32List,
    ValueType::Int64List,
    ValueType::DoubleList,
    ValueType::FloatList,
    ValueType::BoolList,
    ValueType::UnixTimestampList,
    ValueType::Null,
    ValueType::Map,
    ValueType::MapList,
    ValueType::BytesSet,
    ValueType::StringSet,
    ValueType::Int32Set,
    ValueType::Int64Set,
    ValueType::DoubleSet,
    ValueType::FloatSet,
    ValueType::BoolSet,
    ValueType::UnixTimestampSet,
    ValueType::Json,
    ValueType::JsonList,
    ValueType::Struct,
    ValueType::StructList,
    ValueType::Uuid,
    ValueType::TimeUuid,
    ValueType::UuidList,
    ValueType::TimeUuidList,
    ValueType::UuidSet,
    ValueType::TimeUuidSet,
    ValueType::ValueList,
    ValueType::ValueSet,
    ValueType::Decimal,
    ValueType::DecimalList,
    ValueType::DecimalSet,
    ValueType::ScalarMap,
    ValueType::ZonedTimestamp,
];

/// Errors of the type system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// A dtype string that is not a Feast type.
    #[error("invalid dtype {input:?}: {reason}; valid dtypes are {VALID_DTYPES}")]
    InvalidDtype { input: String, reason: String },
    /// A value type with no Arrow representation.
    #[error("value type {} has no Arrow data type: {reason}", .value_type.as_str_name())]
    NoArrowType {
        value_type: ValueType,
        reason: &'static str,
    },
    /// An Arrow type with no Feast value type.
    #[error("Arrow data type {data_type} has no Feast value type")]
    UnsupportedArrowType { data_type: String },
}

/// What [`TypeError::InvalidDtype`] lists as valid.
pub const VALID_DTYPES: &str = "Invalid, Bytes, String, Int32, Int64, Float32, Float64, Bool, \
UnixTimestamp, Map, Json, Uuid, TimeUuid, Decimal, ScalarMap, ZonedTimestamp, Array(T), Set(T), \
Struct({name: T, ...}), or a ValueType name such as INT64 or FLOAT_LIST";

// ---------------------------------------------------------------------------------------------
// Classification helpers
// ---------------------------------------------------------------------------------------------

/// True for the `*_LIST` value types (including `MAP_LIST`, `JSON_LIST`, `STRUCT_LIST` and the
/// nested `VALUE_LIST`).
pub fn is_list(vt: ValueType) -> bool {
    vt.as_str_name().ends_with("_LIST")
}

/// True for the `*_SET` value types (including the nested `VALUE_SET`).
pub fn is_set(vt: ValueType) -> bool {
    vt.as_str_name().ends_with("_SET")
}

/// True for lists and sets.
pub fn is_collection(vt: ValueType) -> bool {
    is_list(vt) || is_set(vt)
}

/// The element type of a list or set (`INT64_LIST` → `INT64`, `MAP_LIST` → `MAP`,
/// `STRUCT_LIST` → `STRUCT`, `UUID_SET` → `UUID`). `None` for scalars and for `VALUE_LIST` /
/// `VALUE_SET`, whose elements are themselves collections of a type the `ValueType` does not
/// record.
pub fn element_type(vt: ValueType) -> Option<ValueType> {
    use ValueType as V;
    Some(match vt {
        V::BytesList | V::BytesSet => V::Bytes,
        V::StringList | V::StringSet => V::String,
        V::Int32List | V::Int32Set => V::Int32,
        V::Int64List | V::Int64Set => V::Int64,
        V::DoubleList | V::DoubleSet => V::Double,
        V::FloatList | V::FloatSet => V::Float,
        V::BoolList | V::BoolSet => V::Bool,
        V::UnixTimestampList | V::UnixTimestampSet => V::UnixTimestamp,
        V::MapList => V::Map,
        V::JsonList => V::Json,
        V::StructList => V::Struct,
        V::UuidList | V::UuidSet => V::Uuid,
        V::TimeUuidList | V::TimeUuidSet => V::TimeUuid,
        V::DecimalList | V::DecimalSet => V::Decimal,
        _ => return None,
    })
}

/// The list type whose elements are `scalar` (`INT64` → `INT64_LIST`), if Feast has one.
pub fn list_of(scalar: ValueType) -> Option<ValueType> {
    use ValueType as V;
    Some(match scalar {
        V::Bytes => V::BytesList,
        V::String => V::StringList,
        V::Int32 => V::Int32List,
        V::Int64 => V::Int64List,
        V::Double => V::DoubleList,
        V::Float => V::FloatList,
        V::Bool => V::BoolList,
        V::UnixTimestamp => V::UnixTimestampList,
        V::Map => V::MapList,
        V::Json => V::JsonList,
        V::Struct => V::StructList,
        V::Uuid => V::UuidList,
        V::TimeUuid => V::TimeUuidList,
        V::Decimal => V::DecimalList,
        _ => return None,
    })
}

/// The set type whose elements are `scalar` (`INT64` → `INT64_SET`), if Feast has one.
/// (There is no `MAP_SET`, `JSON_SET` or `STRUCT_SET`.)
pub fn set_of(scalar: ValueType) -> Option<ValueType> {
    use ValueType as V;
    Some(match scalar {
        V::Bytes => V::BytesSet,
        V::String => V::StringSet,
        V::Int32 => V::Int32Set,
        V::Int64 => V::Int64Set,
        V::Double => V::DoubleSet,
        V::Float => V::FloatSet,
        V::Bool => V::BoolSet,
        V::UnixTimestamp => V::UnixTimestampSet,
        V::Uuid => V::UuidSet,
        V::TimeUuid => V::TimeUuidSet,
        V::Decimal => V::DecimalSet,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Dtype names
// ---------------------------------------------------------------------------------------------

/// Feast's primitive dtypes (`feast.types.PrimitiveFeastType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    Invalid,
    Bytes,
    PdfBytes,
    ImageBytes,
    String,
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    UnixTimestamp,
    Map,
    Json,
    Uuid,
    TimeUuid,
    Decimal,
    ScalarMap,
    ZonedTimestamp,
}

const PRIMS: [(Prim, &str); 18] = [
    (Prim::Invalid, "Invalid"),
    (Prim::Bytes, "Bytes"),
    (Prim::PdfBytes, "PdfBytes"),
    (Prim::ImageBytes, "ImageBytes"),
    (Prim::String, "String"),
    (Prim::Bool, "Bool"),
    (Prim::Int32, "Int32"),
    (Prim::Int64, "Int64"),
    (Prim::Float32, "Float32"),
    (Prim::Float64, "Float64"),
    (Prim::UnixTimestamp, "UnixTimestamp"),
    (Prim::Map, "Map"),
    (Prim::Json, "Json"),
    (Prim::Uuid, "Uuid"),
    (Prim::TimeUuid, "TimeUuid"),
    (Prim::Decimal, "Decimal"),
    (Prim::ScalarMap, "ScalarMap"),
    (Prim::ZonedTimestamp, "ZonedTimestamp"),
];

impl Prim {
    fn name(self) -> &'static str {
        PRIMS
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or("Invalid")
    }

    /// The scalar value type (Feast's `PRIMITIVE_FEAST_TYPES_TO_VALUE_TYPES`).
    fn value_type(self) -> Option<ValueType> {
        use ValueType as V;
        Some(match self {
            Prim::Invalid => V::Invalid,
            Prim::Bytes => V::Bytes,
            Prim::PdfBytes | Prim::ImageBytes => return None,
            Prim::String => V::String,
            Prim::Bool => V::Bool,
            Prim::Int32 => V::Int32,
            Prim::Int64 => V::Int64,
            Prim::Float32 => V::Float,
            Prim::Float64 => V::Double,
            Prim::UnixTimestamp => V::UnixTimestamp,
            Prim::Map => V::Map,
            Prim::Json => V::Json,
            Prim::Uuid => V::Uuid,
            Prim::TimeUuid => V::TimeUuid,
            Prim::Decimal => V::Decimal,
            Prim::ScalarMap => V::ScalarMap,
            Prim::ZonedTimestamp => V::ZonedTimestamp,
        })
    }

    fn from_scalar(vt: ValueType) -> Option<Prim> {
        PRIMS
            .iter()
            .map(|(p, _)| *p)
            .find(|p| p.value_type() == Some(vt))
    }
}

/// A parsed dtype expression.
#[derive(Debug, Clone, PartialEq)]
enum Dtype {
    Prim(Prim),
    /// Only reachable through the enum name `NULL`; Feast has no dtype for it.
    Null,
    Array(Box<Dtype>),
    Set(Box<Dtype>),
    Struct(Vec<(String, Dtype)>),
}

impl Dtype {
    /// Feast's `from_value_type`, extended with `NULL`.
    fn from_value_type(vt: ValueType) -> Dtype {
        use ValueType as V;
        if let Some(p) = Prim::from_scalar(vt) {
            return Dtype::Prim(p);
        }
        let placeholder_struct =
            || Dtype::Struct(vec![("_value".into(), Dtype::Prim(Prim::String))]);
        let array_of_string = || Dtype::Array(Box::new(Dtype::Prim(Prim::String)));
        match vt {
            V::Null => Dtype::Null,
            V::Struct => placeholder_struct(),
            V::StructList => Dtype::Array(Box::new(placeholder_struct())),
            V::ValueList => Dtype::Array(Box::new(array_of_string())),
            V::ValueSet => Dtype::Set(Box::new(array_of_string())),
            _ => {
                let elem = element_type(vt)
                    .and_then(Prim::from_scalar)
                    .unwrap_or(Prim::Invalid);
                if is_set(vt) {
                    Dtype::Set(Box::new(Dtype::Prim(elem)))
                } else {
                    Dtype::Array(Box::new(Dtype::Prim(elem)))
                }
            }
        }
    }

    /// Feast's `to_value_type`, with the base-type checks of the `Array`/`Set` constructors.
    fn to_value_type(&self) -> Result<ValueType, String> {
        match self {
            Dtype::Null => Ok(ValueType::Null),
            Dtype::Prim(p) => p.value_type().ok_or_else(|| {
                format!(
                    "{} has no ValueType in the Feast proto enum (it travels as BYTES in Python)",
                    p.name()
                )
            }),
            Dtype::Struct(fields) => {
                if fields.is_empty() {
                    return Err("Struct must have at least one field".into());
                }
                for (_, t) in fields {
                    t.to_value_type()?;
                }
                Ok(ValueType::Struct)
            }
            Dtype::Array(base) => match base.as_ref() {
                Dtype::Struct(_) => base.to_value_type().map(|_| ValueType::StructList),
                Dtype::Array(_) | Dtype::Set(_) => {
                    base.to_value_type().map(|_| ValueType::ValueList)
                }
                Dtype::Prim(p) => match p {
                    Prim::Invalid
                    | Prim::PdfBytes
                    | Prim::ImageBytes
                    | Prim::ScalarMap
                    | Prim::ZonedTimestamp => Err(format!(
                        "{} is not supported as a base type for Array",
                        p.name()
                    )),
                    _ => Ok(p
                        .value_type()
                        .and_then(list_of)
                        .expect("supported Array base")),
                },
                Dtype::Null => Err("NULL is not supported as a base type for Array".into()),
            },
            Dtype::Set(base) => match base.as_ref() {
                Dtype::Array(_) | Dtype::Set(_) => {
                    base.to_value_type().map(|_| ValueType::ValueSet)
                }
                Dtype::Struct(_) => Err("Struct is not supported as a base type for Set".into()),
                Dtype::Prim(p) => p
                    .value_type()
                    .and_then(set_of)
                    .filter(|_| *p != Prim::Invalid)
                    .ok_or_else(|| format!("{} is not supported as a base type for Set", p.name())),
                Dtype::Null => Err("NULL is not supported as a base type for Set".into()),
            },
        }
    }
}

impl fmt::Display for Dtype {
    /// Feast's `str(dtype)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::Prim(p) => f.write_str(p.name()),
            Dtype::Null => f.write_str("Null"),
            Dtype::Array(b) => write!(f, "Array({b})"),
            Dtype::Set(b) => write!(f, "Set({b})"),
            Dtype::Struct(fields) => {
                f.write_str("Struct({")?;
                for (i, (name, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}: {t}")?;
                }
                f.write_str("})")
            }
        }
    }
}

/// What Feast's `str(from_value_type(vt))` prints, e.g. `Float32`, `Array(Int64)`,
/// `Set(String)`, `Struct({_value: String})`. This is the string the registry RPC puts in
/// `Feature.type`.
///
/// `NULL` has no Feast dtype (`from_value_type` raises); this returns `"Null"`, which
/// [`parse_dtype`] maps back to `NULL`.
pub fn dtype_name(vt: ValueType) -> String {
    Dtype::from_value_type(vt).to_string()
}

/// Parses a dtype as written in a schema or printed by Feast (`Int64`, `Array(Float32)`,
/// `Set(String)`, `Array(Array(Int64))`, `Struct({a: Int64, b: String})`, ...) or a
/// [`ValueType`] name (`INT64`, `FLOAT_LIST`, `UNKNOWN` for `INVALID`). Whitespace is ignored
/// around tokens and names are matched case-insensitively.
///
/// Nested collections give `VALUE_LIST` / `VALUE_SET` and arrays of structs `STRUCT_LIST`, as
/// in Feast. The base-type rules of Feast's `Array`/`Set` constructors apply: no
/// `Array(ZonedTimestamp)`, `Set(Map)`, `Set(Json)`, `Set(Struct(..))`, and so on.
pub fn parse_dtype(s: &str) -> Result<ValueType, TypeError> {
    let err = |reason: String| TypeError::InvalidDtype {
        input: s.to_string(),
        reason,
    };
    let mut p = Parser { s, pos: 0 };
    let dtype = p.dtype().map_err(err)?;
    p.skip_ws();
    if p.pos != s.len() {
        return Err(err(format!(
            "unexpected {:?} at offset {}",
            &s[p.pos..],
            p.pos
        )));
    }
    dtype.to_value_type().map_err(err)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else if self.pos >= self.s.len() {
            Err(format!("expected '{c}' but the input ended"))
        } else {
            Err(format!("expected '{c}' at offset {}", self.pos))
        }
    }

    fn ident(&mut self) -> &'a str {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn dtype(&mut self) -> Result<Dtype, String> {
        let name = self.ident();
        if name.is_empty() {
            return Err(if self.pos >= self.s.len() {
                "expected a type name".to_string()
            } else {
                format!("expected a type name at offset {}", self.pos)
            });
        }
        if self.eat('(') {
            let t = match name.to_ascii_lowercase().as_str() {
                "array" => Dtype::Array(Box::new(self.dtype()?)),
                "set" => Dtype::Set(Box::new(self.dtype()?)),
                "struct" => Dtype::Struct(self.struct_fields()?),
                _ => return Err(format!("unknown type constructor {name:?}")),
            };
            self.expect(')')?;
            return Ok(t);
        }
        if let Some((p, _)) = PRIMS.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
            return Ok(Dtype::Prim(*p));
        }
        let upper = name.to_ascii_uppercase();
        if upper == "UNKNOWN" {
            return Ok(Dtype::Prim(Prim::Invalid));
        }
        if let Some(vt) = ValueType::from_str_name(&upper) {
            return Ok(Dtype::from_value_type(vt));
        }
        Err(format!("unknown type {name:?}"))
    }

    fn struct_fields(&mut self) -> Result<Vec<(String, Dtype)>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        if self.eat('}') {
            return Ok(fields);
        }
        loop {
            self.skip_ws();
            let rest = &self.s[self.pos..];
            let name = if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
                let end = rest[1..]
                    .find(q)
                    .ok_or_else(|| "unterminated quoted Struct field name".to_string())?;
                self.pos += end + 2;
                rest[1..=end].to_string()
            } else {
                let end = rest
                    .find(':')
                    .ok_or_else(|| "expected 'name: type' in Struct".to_string())?;
                self.pos += end;
                rest[..end].trim().to_string()
            };
            if name.is_empty() {
                return Err("empty Struct field name".into());
            }
            self.expect(':')?;
            let t = self.dtype()?;
            fields.push((name, t));
            if self.eat('}') {
                return Ok(fields);
            }
            self.expect(',')?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arrow
// ---------------------------------------------------------------------------------------------

fn list_of_arrow(dt: DataType) -> DataType {
    DataType::new_list(dt, true)
}

/// `map<string, string>` as pyarrow builds it (`entries` struct, non-null `key`, nullable
/// `value`, unsorted keys).
fn string_map() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(entries.into(), false)
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type Feast uses for a column of `vt`.
///
/// Follows `feast_value_type_to_pa` (`type_map.py`) and `from_feast_to_pyarrow_type`
/// (`types.py`), which disagree in places; the choices:
/// - `UNIX_TIMESTAMP` → `timestamp[us, tz=UTC]` (the dtype mapping `UnixTimestamp`;
///   `feast_value_type_to_pa` gives a naive `timestamp[us]`). Its lists: `list<timestamp[us, UTC]>`.
/// - Sets → `list<T>` like lists (only the dtype mapping covers most sets).
/// - `STRUCT` → an empty `struct<>` and `STRUCT_LIST` → `list<struct<>>`; `VALUE_LIST` /
///   `VALUE_SET` → `list<list<string>>`: placeholders, the real shape lives in the field's dtype.
/// - `MAP` → `map<string, string>`; `JSON` → `large_string`; `UUID`, `TIME_UUID`, `DECIMAL`
///   → `string`; `NULL` → `null`.
/// - `ZONED_TIMESTAMP` → `timestamp[us, tz=UTC]` (dtype mapping; the per-value zone lives in the proto).
/// - No mapping in Feast, error here: `INVALID` and `SCALAR_MAP`.
pub fn value_type_to_arrow(vt: ValueType) -> Result<DataType, TypeError> {
    use ValueType as V;
    Ok(match vt {
        V::Invalid => {
            return Err(TypeError::NoArrowType {
                value_type: vt,
                reason: "INVALID is not a storable type",
            });
        }
        V::ScalarMap => {
            return Err(TypeError::NoArrowType {
                value_type: vt,
                reason: "Feast defines no Arrow type for maps with non-string keys",
            });
        }
        V::Bytes => DataType::Binary,
        V::String | V::Uuid | V::TimeUuid | V::Decimal => DataType::Utf8,
        V::Int32 => DataType::Int32,
        V::Int64 => DataType::Int64,
        V::Double => DataType::Float64,
        V::Float => DataType::Float32,
        V::Bool => DataType::Boolean,
        V::UnixTimestamp | V::ZonedTimestamp => utc_micros(),
        V::Null => DataType::Null,
        V::Map => string_map(),
        V::Json => DataType::LargeUtf8,
        V::Struct => DataType::Struct(Fields::empty()),
        V::ValueList | V::ValueSet => list_of_arrow(list_of_arrow(DataType::Utf8)),
        _ => {
            let elem = element_type(vt).expect("every remaining value type is a collection");
            list_of_arrow(value_type_to_arrow(elem)?)
        }
    })
}

/// The name pyarrow prints for an Arrow type (`str(pa.DataType)`), which is what Feast's
/// data sources report from `get_table_column_names_and_types` and feed to
/// `pa_to_feast_value_type`: `int64`, `double`, `float`, `string`, `large_string`, `bool`,
/// `binary`, `timestamp[us, tz=UTC]`, `date32[day]`, `list<item: int64>`, `map<string, int64>`,
/// `struct<a: int64>`, `decimal128(10, 2)`, ...
pub fn pyarrow_type_name(dt: &DataType) -> String {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    let field = |f: &Field| {
        let null = if f.is_nullable() { "" } else { " not null" };
        format!("{}: {}{null}", f.name(), pyarrow_type_name(f.data_type()))
    };
    match dt {
        DataType::Null => "null".into(),
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "halffloat".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 => "string".into(),
        DataType::LargeUtf8 => "large_string".into(),
        DataType::Utf8View => "string_view".into(),
        DataType::Binary => "binary".into(),
        DataType::LargeBinary => "large_binary".into(),
        DataType::BinaryView => "binary_view".into(),
        DataType::FixedSizeBinary(n) => format!("fixed_size_binary[{n}]"),
        DataType::Date32 => "date32[day]".into(),
        DataType::Date64 => "date64[ms]".into(),
        DataType::Timestamp(u, None) => format!("timestamp[{}]", unit(u)),
        DataType::Timestamp(u, Some(tz)) => format!("timestamp[{}, tz={tz}]", unit(u)),
        DataType::Time32(u) => format!("time32[{}]", unit(u)),
        DataType::Time64(u) => format!("time64[{}]", unit(u)),
        DataType::Duration(u) => format!("duration[{}]", unit(u)),
        DataType::Interval(_) => "month_day_nano_interval".into(),
        DataType::Decimal32(p, s) => format!("decimal32({p}, {s})"),
        DataType::Decimal64(p, s) => format!("decimal64({p}, {s})"),
        DataType::Decimal128(p, s) => format!("decimal128({p}, {s})"),
        DataType::Decimal256(p, s) => format!("decimal256({p}, {s})"),
        DataType::List(f) => format!("list<{}>", field(f)),
        DataType::LargeList(f) => format!("large_list<{}>", field(f)),
        DataType::ListView(f) => format!("list_view<{}>", field(f)),
        DataType::LargeListView(f) => format!("large_list_view<{}>", field(f)),
        DataType::FixedSizeList(f, n) => format!("fixed_size_list<{}>[{n}]", field(f)),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| field(f))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                let value = &kv[1];
                let null = if value.is_nullable() { "" } else { " not null" };
                format!(
                    "map<{}, {}{null}>",
                    pyarrow_type_name(kv[0].data_type()),
                    pyarrow_type_name(value.data_type())
                )
            }
            other => format!("map<{}>", pyarrow_type_name(other)),
        },
        DataType::Dictionary(k, v) => format!(
            "dictionary<values={}, indices={}, ordered=0>",
            pyarrow_type_name(v),
            pyarrow_type_name(k)
        ),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// The Feast value type of an Arrow column, following `pa_to_feast_value_type`.
///
/// As in Feast: signed ints up to 32 bits and `uint8`/`uint16` → `INT32`; `int64`, `uint32`,
/// `uint64` → `INT64`; `float` → `FLOAT`; `double` → `DOUBLE`; `string` → `STRING`;
/// **`large_string` → `JSON`**; `binary` → `BYTES`; `bool` → `BOOL`; `timestamp` (any unit or
/// zone) → `UNIX_TIMESTAMP`; `map` → `MAP`; `struct` → `STRUCT`; `null` → `NULL`; `list<T>` and
/// `fixed_size_list<T>` → `T_LIST` (`list<map>` → `MAP_LIST`, `list<struct>` → `STRUCT_LIST`,
/// `list<large_string>` → `JSON_LIST`, `list<list<..>>` → `VALUE_LIST`).
///
/// Feast has no mapping for the following (it raises `KeyError`); the choices made here are
/// extensions: `large_list`/`list_view` behave like `list`, whatever the item field's name
/// (Feast only recognises `item`); `large_binary`, `binary_view`, `fixed_size_binary` →
/// `BYTES`; `utf8_view` → `STRING`; `float16` → `FLOAT`; `date32`/`date64` → `UNIX_TIMESTAMP`
/// (Feast types Python `date` values that way); `decimal*` → `DECIMAL`; dictionary-encoded columns
/// → their value type. Still errors: `time*`, `duration`, `interval`, unions, run-end encoded,
/// and lists of types that have no list form (`list<null>`, `list<list>` inside sets, ...).
pub fn arrow_to_value_type(dt: &DataType) -> Result<ValueType, TypeError> {
    let unsupported = || TypeError::UnsupportedArrowType {
        data_type: dt.to_string(),
    };
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => {
            let inner = f.data_type();
            let inner = match inner {
                DataType::Dictionary(_, v) => v.as_ref(),
                other => other,
            };
            if is_arrow_list(inner) {
                return Ok(ValueType::ValueList);
            }
            let elem = arrow_scalar_to_value_type(inner).ok_or_else(unsupported)?;
            list_of(elem).ok_or_else(unsupported)
        }
        _ => arrow_scalar_to_value_type(dt).ok_or_else(unsupported),
    }
}

fn is_arrow_list(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(_, _)
    )
}

fn arrow_scalar_to_value_type(dt: &DataType) -> Option<ValueType> {
    use ValueType as V;
    Some(match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            V::Int32
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => V::Int64,
        DataType::Float16 | DataType::Float32 => V::Float,
        DataType::Float64 => V::Double,
        DataType::Utf8 | DataType::Utf8View => V::String,
        DataType::LargeUtf8 => V::Json,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => V::Bytes,
        DataType::Boolean => V::Bool,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => V::UnixTimestamp,
        DataType::Map(_, _) => V::Map,
        DataType::Struct(_) => V::Struct,
        DataType::Null => V::Null,
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => V::Decimal,
        DataType::Dictionary(_, v) => return arrow_scalar_to_value_type(v),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn pyarrow_names_match_pyarrow() {
        use std::sync::Arc;
        let cases = [
            (DataType::Int64, "int64"),
            (DataType::Float32, "float"),
            (DataType::Float64, "double"),
            (DataType::Boolean, "bool"),
            (DataType::LargeUtf8, "large_string"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp[us, tz=UTC]",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "timestamp[ns]",
            ),
            (
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                "list<item: int64>",
            ),
            (
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
                "list<element: string not null>",
            ),
            (string_map(), "map<string, string>"),
            (DataType::Decimal128(10, 2), "decimal128(10, 2)"),
        ];
        for (dt, name) in cases {
            assert_eq!(pyarrow_type_name(&dt), name, "{dt}");
        }
    }
    use super::*;

    /// (value type, `str(from_value_type(vt))` as printed by feast 0.67).
    const NAMES: [(ValueType, &str); 45] = [
        (ValueType::Invalid, "Invalid"),
        (ValueType::Bytes, "Bytes"),
        (ValueType::String, "String"),
        (ValueType::Int32, "Int32"),
        (ValueType::Int64, "Int64"),
        (ValueType::Double, "Float64"),
        (ValueType::Float, "Float32"),
        (ValueType::Bool, "Bool"),
        (ValueType::UnixTimestamp, "UnixTimestamp"),
        (ValueType::BytesList, "Array(Bytes)"),
        (ValueType::StringList, "Array(String)"),
        (ValueType::Int32List, "Array(Int32)"),
        (ValueType::Int64List, "Array(Int64)"),
        (ValueType::DoubleList, "Array(Float64)"),
        (ValueType::FloatList, "Array(Float32)"),
        (ValueType::BoolList, "Array(Bool)"),
        (ValueType::UnixTimestampList, "Array(UnixTimestamp)"),
        (ValueType::Null, "Null"),
        (ValueType::Map, "Map"),
        (ValueType::MapList, "Array(Map)"),
        (ValueType::BytesSet, "Set(Bytes)"),
        (ValueType::StringSet, "Set(String)"),
        (ValueType::Int32Set, "Set(Int32)"),
        (ValueType::Int64Set, "Set(Int64)"),
        (ValueType::DoubleSet, "Set(Float64)"),
        (ValueType::FloatSet, "Set(Float32)"),
        (ValueType::BoolSet, "Set(Bool)"),
        (ValueType::UnixTimestampSet, "Set(UnixTimestamp)"),
        (ValueType::Json, "Json"),
        (ValueType::JsonList, "Array(Json)"),
        (ValueType::Struct, "Struct({_value: String})"),
        (ValueType::StructList, "Array(Struct({_value: String}))"),
        (ValueType::Uuid, "Uuid"),
        (ValueType::TimeUuid, "TimeUuid"),
        (ValueType::UuidList, "Array(Uuid)"),
        (ValueType::TimeUuidList, "Array(TimeUuid)"),
        (ValueType::UuidSet, "Set(Uuid)"),
        (ValueType::TimeUuidSet, "Set(TimeUuid)"),
        (ValueType::ValueList, "Array(Array(String))"),
        (ValueType::ValueSet, "Set(Array(String))"),
        (ValueType::Decimal, "Decimal"),
        (ValueType::DecimalList, "Array(Decimal)"),
        (ValueType::DecimalSet, "Set(Decimal)"),
        (ValueType::ScalarMap, "ScalarMap"),
        (ValueType::ZonedTimestamp, "ZonedTimestamp"),
    ];

    #[test]
    fn all_value_types_is_complete() {
        let mut n = 0;
        for i in 0..64 {
            if let Ok(vt) = ValueType::try_from(i) {
                assert!(ALL_VALUE_TYPES.contains(&vt), "{vt:?} missing");
                n += 1;
            }
        }
        assert_eq!(n, ALL_VALUE_TYPES.len());
        for (vt, _) in NAMES {
            assert!(ALL_VALUE_TYPES.contains(&vt));
        }
    }

    #[test]
    fn dtype_names_match_feast() {
        for (vt, name) in NAMES {
            assert_eq!(dtype_name(vt), name, "{vt:?}");
        }
    }

    #[test]
    fn dtype_names_round_trip() {
        for vt in ALL_VALUE_TYPES {
            let name = dtype_name(vt);
            assert_eq!(parse_dtype(&name), Ok(vt), "{name}");
            assert_eq!(
                parse_dtype(vt.as_str_name()),
                Ok(vt),
                "{}",
                vt.as_str_name()
            );
        }
    }

    #[test]
    fn parse_dtype_forms() {
        let ok = [
            (" Int64 ", ValueType::Int64),
            ("int64", ValueType::Int64),
            ("FLOAT", ValueType::Float),
            ("float32", ValueType::Float),
            ("DOUBLE", ValueType::Double),
            ("UNKNOWN", ValueType::Invalid),
            ("Array( Float32 )", ValueType::FloatList),
            ("Array(INT64)", ValueType::Int64List),
            ("array(string)", ValueType::StringList),
            ("Set(Bool)", ValueType::BoolSet),
            ("Array(Map)", ValueType::MapList),
            ("Array(Json)", ValueType::JsonList),
            ("Array(Array(Int64))", ValueType::ValueList),
            ("Array(Set(String))", ValueType::ValueList),
            ("Set(Array(Int64))", ValueType::ValueSet),
            ("Set(Set(Int64))", ValueType::ValueSet),
            ("Array(INT64_LIST)", ValueType::ValueList),
            ("Array(Array(Array(Bytes)))", ValueType::ValueList),
            ("Struct({a: Int64, b: Array(String)})", ValueType::Struct),
            (
                "Struct({\"a b\": Int64, 'c': Struct({d: Bool})})",
                ValueType::Struct,
            ),
            ("Array(Struct({x: Float32}))", ValueType::StructList),
            ("Array(STRUCT)", ValueType::StructList),
            ("ZonedTimestamp", ValueType::ZonedTimestamp),
            ("ScalarMap", ValueType::ScalarMap),
            ("unix_timestamp_set", ValueType::UnixTimestampSet),
        ];
        for (s, vt) in ok {
            assert_eq!(parse_dtype(s), Ok(vt), "{s}");
        }
    }

    #[test]
    fn parse_dtype_rejects_what_feast_rejects() {
        let bad = [
            "",
            "Int128",
            "Float128",
            "Array(ZonedTimestamp)",
            "Array(ScalarMap)",
            "Array(Invalid)",
            "Array(Null)",
            "Set(Map)",
            "Set(Json)",
            "Set(Invalid)",
            "Set(Struct({a: Int64}))",
            "Struct({})",
            "Struct({a: Array(ZonedTimestamp)})",
            "Array(Int64",
            "Array(Int64))",
            "Array()",
            "List(Int64)",
            "PdfBytes",
            "ImageBytes",
            "Int64 Int64",
        ];
        for s in bad {
            assert!(parse_dtype(s).is_err(), "{s:?} should be rejected");
        }
        let msg = parse_dtype("Int128").unwrap_err().to_string();
        assert!(msg.contains("\"Int128\""), "{msg}");
        assert!(
            msg.contains("Float32") && msg.contains("Array(T)") && msg.contains("FLOAT_LIST"),
            "{msg}"
        );
    }

    #[test]
    fn helpers() {
        assert!(
            is_list(ValueType::Int64List)
                && is_list(ValueType::ValueList)
                && is_list(ValueType::MapList)
        );
        assert!(!is_list(ValueType::Int64Set) && !is_list(ValueType::Int64));
        assert!(
            is_set(ValueType::UuidSet)
                && is_set(ValueType::ValueSet)
                && !is_set(ValueType::StringList)
        );
        assert!(is_collection(ValueType::BoolSet) && !is_collection(ValueType::Map));
        assert_eq!(
            element_type(ValueType::UnixTimestampSet),
            Some(ValueType::UnixTimestamp)
        );
        assert_eq!(element_type(ValueType::StructList), Some(ValueType::Struct));
        assert_eq!(element_type(ValueType::ValueList), None);
        assert_eq!(element_type(ValueType::Int64), None);
        for vt in ALL_VALUE_TYPES {
            if let Some(e) = element_type(vt) {
                let back = if is_set(vt) { set_of(e) } else { list_of(e) };
                assert_eq!(back, Some(vt));
                assert!(is_collection(vt));
            } else {
                assert!(
                    !is_collection(vt) || matches!(vt, ValueType::ValueList | ValueType::ValueSet),
                    "{vt:?}"
                );
            }
        }
        assert_eq!(set_of(ValueType::Map), None);
        assert_eq!(list_of(ValueType::ZonedTimestamp), None);
    }

    fn list(dt: DataType) -> DataType {
        DataType::new_list(dt, true)
    }

    #[test]
    fn value_type_to_arrow_every_type() {
        use ValueType as V;
        let ts = utc_micros();
        let expected: Vec<(ValueType, Option<DataType>)> = vec![
            (V::Invalid, None),
            (V::Bytes, Some(DataType::Binary)),
            (V::String, Some(DataType::Utf8)),
            (V::Int32, Some(DataType::Int32)),
            (V::Int64, Some(DataType::Int64)),
            (V::Double, Some(DataType::Float64)),
            (V::Float, Some(DataType::Float32)),
            (V::Bool, Some(DataType::Boolean)),
            (V::UnixTimestamp, Some(ts.clone())),
            (V::BytesList, Some(list(DataType::Binary))),
            (V::StringList, Some(list(DataType::Utf8))),
            (V::Int32List, Some(list(DataType::Int32))),
            (V::Int64List, Some(list(DataType::Int64))),
            (V::DoubleList, Some(list(DataType::Float64))),
            (V::FloatList, Some(list(DataType::Float32))),
            (V::BoolList, Some(list(DataType::Boolean))),
            (V::UnixTimestampList, Some(list(ts.clone()))),
            (V::Null, Some(DataType::Null)),
            (V::Map, Some(string_map())),
            (V::MapList, Some(list(string_map()))),
            (V::BytesSet, Some(list(DataType::Binary))),
            (V::StringSet, Some(list(DataType::Utf8))),
            (V::Int32Set, Some(list(DataType::Int32))),
            (V::Int64Set, Some(list(DataType::Int64))),
            (V::DoubleSet, Some(list(DataType::Float64))),
            (V::FloatSet, Some(list(DataType::Float32))),
            (V::BoolSet, Some(list(DataType::Boolean))),
            (V::UnixTimestampSet, Some(list(ts.clone()))),
            (V::Json, Some(DataType::LargeUtf8)),
            (V::JsonList, Some(list(DataType::LargeUtf8))),
            (V::Struct, Some(DataType::Struct(Fields::empty()))),
            (V::StructList, Some(list(DataType::Struct(Fields::empty())))),
            (V::Uuid, Some(DataType::Utf8)),
            (V::TimeUuid, Some(DataType::Utf8)),
            (V::UuidList, Some(list(DataType::Utf8))),
            (V::TimeUuidList, Some(list(DataType::Utf8))),
            (V::UuidSet, Some(list(DataType::Utf8))),
            (V::TimeUuidSet, Some(list(DataType::Utf8))),
            (V::ValueList, Some(list(list(DataType::Utf8)))),
            (V::ValueSet, Some(list(list(DataType::Utf8)))),
            (V::Decimal, Some(DataType::Utf8)),
            (V::DecimalList, Some(list(DataType::Utf8))),
            (V::DecimalSet, Some(list(DataType::Utf8))),
            (V::ScalarMap, None),
            (V::ZonedTimestamp, Some(ts)),
        ];
        assert_eq!(expected.len(), ALL_VALUE_TYPES.len());
        for (vt, dt) in expected {
            match dt {
                Some(dt) => assert_eq!(value_type_to_arrow(vt), Ok(dt), "{vt:?}"),
                None => assert!(value_type_to_arrow(vt).is_err(), "{vt:?}"),
            }
        }
        assert_eq!(
            string_map().to_string(),
            DataType::Map(
                Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, true),
                    ])),
                    false
                )
                .into(),
                false
            )
            .to_string()
        );
    }

    /// Every value type's Arrow type maps back to the type Feast would infer from it: the
    /// identity, except where Arrow loses the distinction (sets, uuid/decimal strings, zones,
    /// nested collections).
    #[test]
    fn arrow_round_trip_every_type() {
        use ValueType as V;
        for vt in ALL_VALUE_TYPES {
            let Ok(dt) = value_type_to_arrow(vt) else {
                continue;
            };
            let expected = match vt {
                V::Uuid | V::TimeUuid | V::Decimal => V::String,
                V::UuidList | V::TimeUuidList | V::DecimalList => V::StringList,
                V::UuidSet | V::TimeUuidSet | V::DecimalSet => V::StringList,
                V::ZonedTimestamp => V::UnixTimestamp,
                V::ValueSet => V::ValueList,
                _ if is_set(vt) => list_of(element_type(vt).unwrap()).unwrap(),
                _ => vt,
            };
            assert_eq!(arrow_to_value_type(&dt), Ok(expected), "{vt:?} via {dt}");
        }
    }

    #[test]
    fn arrow_to_value_type_follows_feast() {
        use ValueType as V;
        let cases: Vec<(DataType, V)> = vec![
            (DataType::Int8, V::Int32),
            (DataType::Int16, V::Int32),
            (DataType::UInt8, V::Int32),
            (DataType::UInt16, V::Int32),
            (DataType::UInt32, V::Int64),
            (DataType::UInt64, V::Int64),
            (DataType::LargeUtf8, V::Json),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                V::UnixTimestamp,
            ),
            (
                DataType::Timestamp(TimeUnit::Second, Some("America/New_York".into())),
                V::UnixTimestamp,
            ),
            (
                DataType::Map(
                    Field::new(
                        "entries",
                        DataType::Struct(Fields::from(vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("value", DataType::Int64, true),
                        ])),
                        false,
                    )
                    .into(),
                    false,
                ),
                V::Map,
            ),
            (
                DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int64, true)])),
                V::Struct,
            ),
            (
                list(DataType::Struct(Fields::from(vec![Field::new(
                    "a",
                    DataType::Int64,
                    true,
                )]))),
                V::StructList,
            ),
            (list(DataType::LargeUtf8), V::JsonList),
            (
                list(DataType::Timestamp(
                    TimeUnit::Nanosecond,
                    Some("UTC".into()),
                )),
                V::UnixTimestampList,
            ),
            (
                DataType::FixedSizeList(Field::new("item", DataType::Float32, true).into(), 4),
                V::FloatList,
            ),
            (DataType::new_list(DataType::Int64, true), V::Int64List),
            (
                DataType::List(Field::new("element", DataType::Utf8, true).into()),
                V::StringList,
            ),
            (
                list(DataType::FixedSizeList(
                    Field::new("item", DataType::Int64, true).into(),
                    3,
                )),
                V::ValueList,
            ),
            // extensions (Feast raises KeyError)
            (
                DataType::LargeList(Field::new("item", DataType::Int64, true).into()),
                V::Int64List,
            ),
            (DataType::LargeBinary, V::Bytes),
            (DataType::Utf8View, V::String),
            (DataType::Float16, V::Float),
            (DataType::Date32, V::UnixTimestamp),
            (DataType::Decimal128(10, 2), V::Decimal),
            (list(DataType::Decimal128(10, 2)), V::DecimalList),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                V::String,
            ),
        ];
        for (dt, vt) in cases {
            assert_eq!(arrow_to_value_type(&dt), Ok(vt), "{dt}");
        }
        for dt in [
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Duration(TimeUnit::Second),
            list(DataType::Null),
            list(DataType::Duration(TimeUnit::Second)),
        ] {
            let err = arrow_to_value_type(&dt).unwrap_err();
            assert!(err.to_string().contains("has no Feast value type"), "{err}");
        }
    }
}
