//! `feast.types.Value` ↔ JSON, as the Feast 0.67 feature server does it.
//!
//! - [`value_to_json`] follows `feature_server_utils._value_to_native` (the `/get-online-features`
//!   response body).
//! - [`json_to_value`] types a JSON value by a declared [`ValueType`], following
//!   `type_map.python_values_to_proto_values` for the JSON-native inputs a server receives
//!   (entity values of `/get-online-features`, feature columns of `/write-to-online-store`
//!   and `/push`). Where Feast's behaviour is accidental (it crashes, silently nulls, or
//!   accepts garbage) this module is stricter or more useful; each case is documented on
//!   [`json_to_value`].

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use feast_proto::types::{
    BoolList, BoolSet, BytesList, BytesSet, DoubleList, DoubleSet, FloatList, FloatSet, Int32List,
    Int32Set, Int64List, Int64Set, Map, MapList, RepeatedValue, ScalarMap, StringList, StringSet,
    Value, ZonedTimestamp, value::Val,
};
use serde_json::{Number, Value as Json};

use crate::types::ValueType;

/// The int64 that Feast stores for a null timestamp (numpy's `NaT`): `i64::MIN`.
pub const NULL_TIMESTAMP_INT_VALUE: i64 = i64::MIN;

/// The f64 values that convert to i64 without overflow: `[-2^63, 2^63)` (`i64::MAX as f64`
/// rounds up to 2^63).
const I64_AS_F64_RANGE: std::ops::Range<f64> = (i64::MIN as f64)..(i64::MAX as f64);

const B64: GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Standard alphabet, padding optional (for input).
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Value → JSON
// ---------------------------------------------------------------------------------------------

/// Converts a `Value` to the JSON the feature server returns for it (PROTOCOLS.md §2.2).
///
/// - unset and `null_val` → `null`
/// - ints → JSON integers (int64 never as a string); `unix_timestamp_val` → epoch seconds
/// - `double_val`, `float_val` → JSON floats; a float is widened to f64 first, so
///   `float_val` 0.1 prints as `0.10000000149011612`, exactly as Python does. serde_json prints
///   integral floats with a fraction (`1.0`), so clients keep typing them as floats.
/// - NaN/±inf → `"NaN"`, `"Infinity"`, `"-Infinity"` (also as elements of double/float
///   lists and sets). Feast does not convert them when nested in `list_val`/`map_val`/... (its
///   response then fails); here they become the same strings at any depth.
/// - bytes → standard base64 with padding (also list/set elements)
/// - string, json, uuid, time_uuid, decimal → the string as stored (`json_val` is *not* parsed)
/// - lists and sets → arrays; `list_val`/`set_val` → nested arrays
/// - `map_val`/`struct_val` → object (keys sorted); `map_list_val`/`struct_list_val` → array of objects
/// - `zoned_timestamp_val` → ISO-8601 in its zone (see [`zoned_timestamp_to_iso`]); `null` for
///   the NaT sentinel
/// - `scalar_map_val` → `null` (Feast logs a warning and does the same)
pub fn value_to_json(v: &Value) -> Json {
    let Some(val) = &v.val else { return Json::Null };
    match val {
        Val::NullVal(_) | Val::ScalarMapVal(_) => Json::Null,
        Val::BytesVal(b) => Json::String(B64.encode(b)),
        Val::StringVal(s)
        | Val::JsonVal(s)
        | Val::UuidVal(s)
        | Val::TimeUuidVal(s)
        | Val::DecimalVal(s) => Json::String(s.clone()),
        Val::Int32Val(i) => Json::from(*i),
        Val::Int64Val(i) | Val::UnixTimestampVal(i) => Json::from(*i),
        Val::DoubleVal(f) => float_to_json(*f),
        Val::FloatVal(f) => float_to_json(f64::from(*f)),
        Val::BoolVal(b) => Json::Bool(*b),
        Val::BytesListVal(BytesList { val }) | Val::BytesSetVal(BytesSet { val }) => {
            val.iter().map(|b| Json::String(B64.encode(b))).collect()
        }
        Val::StringListVal(StringList { val })
        | Val::JsonListVal(StringList { val })
        | Val::UuidListVal(StringList { val })
        | Val::TimeUuidListVal(StringList { val })
        | Val::DecimalListVal(StringList { val })
        | Val::StringSetVal(StringSet { val })
        | Val::UuidSetVal(StringSet { val })
        | Val::TimeUuidSetVal(StringSet { val })
        | Val::DecimalSetVal(StringSet { val }) => {
            val.iter().map(|s| Json::String(s.clone())).collect()
        }
        Val::Int32ListVal(Int32List { val }) | Val::Int32SetVal(Int32Set { val }) => {
            val.iter().map(|i| Json::from(*i)).collect()
        }
        Val::Int64ListVal(Int64List { val })
        | Val::UnixTimestampListVal(Int64List { val })
        | Val::Int64SetVal(Int64Set { val })
        | Val::UnixTimestampSetVal(Int64Set { val }) => {
            val.iter().map(|i| Json::from(*i)).collect()
        }
        Val::DoubleListVal(DoubleList { val }) | Val::DoubleSetVal(DoubleSet { val }) => {
            val.iter().map(|f| float_to_json(*f)).collect()
        }
        Val::FloatListVal(FloatList { val }) | Val::FloatSetVal(FloatSet { val }) => {
            val.iter().map(|f| float_to_json(f64::from(*f))).collect()
        }
        Val::BoolListVal(BoolList { val }) | Val::BoolSetVal(BoolSet { val }) => {
            val.iter().map(|b| Json::Bool(*b)).collect()
        }
        Val::MapVal(m) | Val::StructVal(m) => map_to_json(m),
        Val::MapListVal(l) | Val::StructListVal(l) => l.val.iter().map(map_to_json).collect(),
        Val::ListVal(r) | Val::SetVal(r) => r.val.iter().map(value_to_json).collect(),
        Val::ZonedTimestampVal(z) => zoned_timestamp_to_iso(z).map_or(Json::Null, Json::String),
    }
}

/// Serializes a [`Value`] as [`value_to_json`] renders it, without building a
/// `serde_json::Value` first: the same JSON text, with no allocation per scalar. Servers
/// use it for large responses (`serde_json::to_vec(&ValueJson(&v))`).
#[derive(Debug, Clone, Copy)]
pub struct ValueJson<'a>(pub &'a Value);

/// A float as [`float_to_json`] renders it.
struct FloatJson(f64);

impl serde::Serialize for FloatJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        if f.is_finite() {
            s.serialize_f64(f)
        } else if f.is_nan() {
            s.serialize_str("NaN")
        } else if f > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

struct Base64Json<'a>(&'a [u8]);

impl serde::Serialize for Base64Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(self.0))
    }
}

struct MapJson<'a>(&'a Map);

impl serde::Serialize for MapJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.val.iter().map(|(k, v)| (k, ValueJson(v))))
    }
}

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(val) = &self.0.val else {
            return s.serialize_unit();
        };
        match val {
            Val::NullVal(_) | Val::ScalarMapVal(_) => s.serialize_unit(),
            Val::BytesVal(b) => Base64Json(b).serialize(s),
            Val::StringVal(v)
            | Val::JsonVal(v)
            | Val::UuidVal(v)
            | Val::TimeUuidVal(v)
            | Val::DecimalVal(v) => s.serialize_str(v),
            Val::Int32Val(i) => s.serialize_i32(*i),
            Val::Int64Val(i) | Val::UnixTimestampVal(i) => s.serialize_i64(*i),
            Val::DoubleVal(f) => FloatJson(*f).serialize(s),
            Val::FloatVal(f) => FloatJson(f64::from(*f)).serialize(s),
            Val::BoolVal(b) => s.serialize_bool(*b),
            Val::BytesListVal(BytesList { val }) | Val::BytesSetVal(BytesSet { val }) => {
                s.collect_seq(val.iter().map(|b| Base64Json(b)))
            }
            Val::StringListVal(StringList { val })
            | Val::JsonListVal(StringList { val })
            | Val::UuidListVal(StringList { val })
            | Val::TimeUuidListVal(StringList { val })
            | Val::DecimalListVal(StringList { val })
            | Val::StringSetVal(StringSet { val })
            | Val::UuidSetVal(StringSet { val })
            | Val::TimeUuidSetVal(StringSet { val })
            | Val::DecimalSetVal(StringSet { val }) => s.collect_seq(val),
            Val::Int32ListVal(Int32List { val }) | Val::Int32SetVal(Int32Set { val }) => {
                s.collect_seq(val)
            }
            Val::Int64ListVal(Int64List { val })
            | Val::UnixTimestampListVal(Int64List { val })
            | Val::Int64SetVal(Int64Set { val })
            | Val::UnixTimestampSetVal(Int64Set { val }) => s.collect_seq(val),
            Val::DoubleListVal(DoubleList { val }) | Val::DoubleSetVal(DoubleSet { val }) => {
                s.collect_seq(val.iter().map(|f| FloatJson(*f)))
            }
            Val::FloatListVal(FloatList { val }) | Val::FloatSetVal(FloatSet { val }) => {
                s.collect_seq(val.iter().map(|f| FloatJson(f64::from(*f))))
            }
            Val::BoolListVal(BoolList { val }) | Val::BoolSetVal(BoolSet { val }) => {
                s.collect_seq(val)
            }
            Val::MapVal(m) | Val::StructVal(m) => MapJson(m).serialize(s),
            Val::MapListVal(l) | Val::StructListVal(l) => s.collect_seq(l.val.iter().map(MapJson)),
            Val::ListVal(r) | Val::SetVal(r) => s.collect_seq(r.val.iter().map(ValueJson)),
            Val::ZonedTimestampVal(z) => match zoned_timestamp_to_iso(z) {
                Some(text) => s.serialize_str(&text),
                None => s.serialize_unit(),
            },
        }
    }
}

fn map_to_json(m: &Map) -> Json {
    Json::Object(
        m.val
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// A finite float as a JSON number, a non-finite one as its protobuf-JSON string.
pub fn float_to_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// A resolved `ZonedTimestamp.zone`.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Fixed(FixedOffset),
    Iana(chrono_tz::Tz),
}

/// Resolves a stored zone string the way Feast's `_zone_from_name` does: `""` → UTC; an IANA
/// name → that zone; `UTC`/`GMT` or a fixed offset (`+05:30`, `-0700`, `UTC-07:00`,
/// `GMT+01:00`) → that offset; anything else → UTC (Feast logs a warning).
fn resolve_zone(zone: &str) -> Zone {
    let utc = Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"));
    if zone.is_empty() {
        return utc;
    }
    if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        return Zone::Iana(tz);
    }
    fixed_offset_from_name(zone).map_or(utc, Zone::Fixed)
}

fn fixed_offset_from_name(zone: &str) -> Option<FixedOffset> {
    let text = zone.trim();
    if text == "UTC" || text == "GMT" {
        return FixedOffset::east_opt(0);
    }
    let rest = text
        .strip_prefix("UTC")
        .or_else(|| text.strip_prefix("GMT"))
        .unwrap_or(text);
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    let colons = rest.len() - digits.len();
    let valid_shape = digits.len() == 4
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (colons == 0 || (colons == 1 && rest.as_bytes().get(2) == Some(&b':')));
    if !valid_shape {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    // Python's `timezone()` rejects offsets of 24h or more (Feast then fails the request);
    // they fall back to UTC here.
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// Formats a `ZonedTimestamp` as Python's `datetime.fromtimestamp(ts, zone).isoformat()`:
/// `2024-05-01T06:00:00-04:00`, with `+HH:MM:SS` for offsets with seconds (old local mean
/// times). `None` for the NaT sentinel and for instants outside chrono's range (Python raises
/// for years beyond 9999).
pub fn zoned_timestamp_to_iso(z: &ZonedTimestamp) -> Option<String> {
    if z.unix_timestamp == NULL_TIMESTAMP_INT_VALUE {
        return None;
    }
    let utc = DateTime::<Utc>::from_timestamp(z.unix_timestamp, 0)?;
    let (naive, offset_secs) = match resolve_zone(&z.zone) {
        Zone::Fixed(off) => {
            let local = utc.with_timezone(&off);
            (local.naive_local(), off.local_minus_utc())
        }
        Zone::Iana(tz) => {
            let local = utc.with_timezone(&tz);
            (local.naive_local(), local.offset().fix().local_minus_utc())
        }
    };
    let mut out = naive.format("%Y-%m-%dT%H:%M:%S").to_string();
    push_python_offset(&mut out, offset_secs);
    Some(out)
}

/// Appends an offset as Python's `isoformat` writes it: `+HH:MM`, or `+HH:MM:SS`.
fn push_python_offset(out: &mut String, offset_secs: i32) {
    use std::fmt::Write as _;
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let abs = offset_secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    let _ = write!(out, "{sign}{h:02}:{m:02}");
    if s != 0 {
        let _ = write!(out, ":{s:02}");
    }
}

// ---------------------------------------------------------------------------------------------
// value_type_of
// ---------------------------------------------------------------------------------------------

/// The [`ValueType`] of a value's oneof case (`int64_val` → `INT64`, `list_val` →
/// `VALUE_LIST`, `struct_val` → `STRUCT`). An unset value gives `INVALID` (Feast's
/// `_proto_value_to_value_type` returns `UNKNOWN`, the same number); `null_val` gives `NULL`
/// and `zoned_timestamp_val` `ZONED_TIMESTAMP` (Feast's table lacks both and raises).
pub fn value_type_of(v: &Value) -> ValueType {
    use ValueType as V;
    let Some(val) = &v.val else { return V::Invalid };
    match val {
        Val::BytesVal(_) => V::Bytes,
        Val::StringVal(_) => V::String,
        Val::Int32Val(_) => V::Int32,
        Val::Int64Val(_) => V::Int64,
        Val::DoubleVal(_) => V::Double,
        Val::FloatVal(_) => V::Float,
        Val::BoolVal(_) => V::Bool,
        Val::UnixTimestampVal(_) => V::UnixTimestamp,
        Val::BytesListVal(_) => V::BytesList,
        Val::StringListVal(_) => V::StringList,
        Val::Int32ListVal(_) => V::Int32List,
        Val::Int64ListVal(_) => V::Int64List,
        Val::DoubleListVal(_) => V::DoubleList,
        Val::FloatListVal(_) => V::FloatList,
        Val::BoolListVal(_) => V::BoolList,
        Val::UnixTimestampListVal(_) => V::UnixTimestampList,
        Val::NullVal(_) => V::Null,
        Val::MapVal(_) => V::Map,
        Val::MapListVal(_) => V::MapList,
        Val::BytesSetVal(_) => V::BytesSet,
        Val::StringSetVal(_) => V::StringSet,
        Val::Int32SetVal(_) => V::Int32Set,
        Val::Int64SetVal(_) => V::Int64Set,
        Val::DoubleSetVal(_) => V::DoubleSet,
        Val::FloatSetVal(_) => V::FloatSet,
        Val::BoolSetVal(_) => V::BoolSet,
        Val::UnixTimestampSetVal(_) => V::UnixTimestampSet,
        Val::JsonVal(_) => V::Json,
        Val::JsonListVal(_) => V::JsonList,
        Val::StructVal(_) => V::Struct,
        Val::StructListVal(_) => V::StructList,
        Val::UuidVal(_) => V::Uuid,
        Val::TimeUuidVal(_) => V::TimeUuid,
        Val::UuidListVal(_) => V::UuidList,
        Val::TimeUuidListVal(_) => V::TimeUuidList,
        Val::UuidSetVal(_) => V::UuidSet,
        Val::TimeUuidSetVal(_) => V::TimeUuidSet,
        Val::ListVal(_) => V::ValueList,
        Val::SetVal(_) => V::ValueSet,
        Val::DecimalVal(_) => V::Decimal,
        Val::DecimalListVal(_) => V::DecimalList,
        Val::DecimalSetVal(_) => V::DecimalSet,
        Val::ScalarMapVal(_) => V::ScalarMap,
        Val::ZonedTimestampVal(_) => V::ZonedTimestamp,
    }
}

/// True if the value is unset or `null_val`.
pub fn is_null(v: &Value) -> bool {
    matches!(v.val, None | Some(Val::NullVal(_)))
}

// ---------------------------------------------------------------------------------------------
// JSON → Value
// ---------------------------------------------------------------------------------------------

/// A JSON value that does not fit its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// What was expected, e.g. `INT64`.
    pub expected: String,
    /// The offending JSON, compact and cut to 100 characters.
    pub got: String,
    /// Where inside the value, e.g. `[2]` or `["tags"][0]`; empty at the top.
    pub path: String,
    /// Why, when the JSON kind alone does not say (e.g. `out of range for INT32`).
    pub reason: Option<String>,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.expected)?;
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        write!(f, ", got {}", self.got)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValueError {}

impl ValueError {
    fn new(expected: impl Into<String>, got: &Json, reason: Option<String>) -> Self {
        let mut got = got.to_string();
        if got.chars().count() > 100 {
            got = got.chars().take(100).collect::<String>() + "…";
        }
        ValueError {
            expected: expected.into(),
            got,
            path: String::new(),
            reason,
        }
    }

    fn at_index(mut self, i: usize) -> Self {
        self.path = format!("[{i}]{}", self.path);
        self
    }

    fn at_key(mut self, k: &str) -> Self {
        self.path = format!("[{}]{}", Json::String(k.to_string()), self.path);
        self
    }
}

type R<T> = Result<T, ValueError>;

fn bad<T>(expected: ValueType, got: &Json) -> R<T> {
    Err(ValueError::new(expected.as_str_name(), got, None))
}

fn bad_because<T>(expected: ValueType, got: &Json, reason: impl Into<String>) -> R<T> {
    Err(ValueError::new(
        expected.as_str_name(),
        got,
        Some(reason.into()),
    ))
}

fn val(v: Val) -> Value {
    Value { val: Some(v) }
}

/// Types a JSON value by its declared [`ValueType`], as the Feast server does for entity values
/// and written feature columns. `null` gives an unset `Value` for every type.
///
/// Per type (the *Feast* notes say where this differs from `python_values_to_proto_values`):
/// - `INT32`/`INT64`: integers, integral floats (`3.0`) and integer strings (`" 12 "`, like
///   Python's `int()`). Fractional floats, out-of-range values and booleans are errors (*Feast*
///   truncates `1.7` to 1 and reads `true` as 1).
/// - `FLOAT`/`DOUBLE`: numbers and numeric strings, including `"NaN"`, `"Infinity"`,
///   `"-Infinity"` (what [`value_to_json`] emits). `FLOAT` rounds to f32 (overflow → ±inf, as in
///   Feast). (*Feast* rejects strings for `DOUBLE` and ints inside float lists.)
/// - `STRING`: strings as is; numbers and booleans as Python's `str()` prints them (`1001` →
///   `"1001"`, `1e16` → `"1e+16"`, `true` → `"True"`), so an int entity value still finds a
///   string-keyed row. Arrays/objects are errors.
/// - `BYTES`: a base64 string (standard alphabet, padding optional), the inverse of
///   [`value_to_json`]. (*Feast* accepts no JSON value here.)
/// - `BOOL`: booleans, and the integers 0 and 1.
/// - `UNIX_TIMESTAMP`: epoch seconds (integers; floats truncated toward zero), integer strings, or
///   ISO-8601 strings (`2024-05-01T10:00:00`, `...Z`, `...+02:00`, date only; naive = UTC),
///   truncated to whole seconds toward zero like Python's `int(dt.timestamp())`. (*Feast* turns
///   every float into the NaT sentinel and rejects ISO strings.)
/// - `ZONED_TIMESTAMP`: an ISO-8601 string; the zone becomes `""` for a naive time, `"UTC"` for
///   `Z`/`+00:00`, else Python's `str(timezone)` spelling `"UTC+05:30"`. Integer seconds give
///   zone `""`. (*Feast* accepts only `datetime` objects.)
/// - `UUID`/`TIME_UUID`: a string that parses as a UUID, stored as given. (*Feast* does not
///   validate.)
/// - `DECIMAL`: a string in Python `Decimal` syntax (stored as given) or a JSON number (stored as
///   its JSON text). (*Feast* rejects numbers and does not validate strings.)
/// - `JSON`: a string must hold valid JSON text and is stored as is; any other value is stored
///   as Python's `json.dumps` would write it (`{"a": 1, "b": [1.0, "\u00e9"]}`).
/// - `MAP`: an object, or a string holding a JSON object (the `/write-to-online-store`
///   transport). Values are typed by inference (see `INVALID` below); nested objects become
///   `map_val`, arrays of objects `map_list_val`.
/// - `STRUCT`: like `MAP`; a non-object scalar `x` becomes `{"_value": str(x)}` as in Feast.
/// - `MAP_LIST`/`STRUCT_LIST`: an array (or a string holding one) whose elements are objects or
///   strings holding objects (the SDK sends a list of JSON strings, which *Feast*'s own
///   server rejects).
/// - Lists: an array; `null` elements become Feast's defaults (`""`, `0`, `0.0`, `false`,
///   empty bytes, and the NaT sentinel for timestamps). `JSON_LIST` elements follow `JSON`
///   (`null` → `"null"`).
/// - Sets: an array without `null`s; duplicates are dropped, keeping first occurrences (Python
///   keeps set order, which is arbitrary).
/// - `VALUE_LIST`/`VALUE_SET`: an array of arrays; each inner array is typed by inference (an
///   empty or `null` inner → unset `Value`; inner arrays that contain arrays nest as
///   `list_val`).
/// - `SCALAR_MAP`: only `{}` (JSON object keys are strings, which `MapKey` cannot hold; Feast
///   fails too).
/// - `NULL`: only `null`.
/// - `INVALID` (Feast's `UNKNOWN`): inference like Feast's: bool → `BOOL`, integer → `INT64`,
///   float → `DOUBLE`, string → `STRING`, object → `MAP`, array → the list of its elements'
///   type (`MAP_LIST` for objects). Mixed ints and floats give `DOUBLE_LIST` and an empty array an
///   unset value (*Feast* raises for both); arrays holding `null`, arrays or mixed kinds are
///   errors, as in Feast.
pub fn json_to_value(j: &Json, vt: ValueType) -> Result<Value, ValueError> {
    use ValueType as V;
    if j.is_null() {
        return Ok(Value::default());
    }
    Ok(match vt {
        V::Invalid => infer_value(j)?,
        V::Null => return bad(vt, j),
        V::Bytes => val(Val::BytesVal(to_bytes(j, vt)?)),
        V::String => val(Val::StringVal(to_python_str(j, vt)?)),
        V::Int32 => val(Val::Int32Val(to_i32(j, vt)?)),
        V::Int64 => val(Val::Int64Val(to_i64(j, vt)?)),
        V::Double => val(Val::DoubleVal(to_f64(j, vt)?)),
        V::Float => val(Val::FloatVal(to_f64(j, vt)? as f32)),
        V::Bool => val(Val::BoolVal(to_bool(j, vt)?)),
        V::UnixTimestamp => val(Val::UnixTimestampVal(to_unix_seconds(j, vt)?)),
        V::ZonedTimestamp => val(Val::ZonedTimestampVal(to_zoned(j, vt)?)),
        V::Uuid => val(Val::UuidVal(to_uuid(j, vt)?)),
        V::TimeUuid => val(Val::TimeUuidVal(to_uuid(j, vt)?)),
        V::Decimal => val(Val::DecimalVal(to_decimal(j, vt)?)),
        V::Json => val(Val::JsonVal(to_json_text(j, vt)?)),
        V::Map => val(Val::MapVal(to_map(&parse_if_string(j, vt)?, vt)?)),
        V::Struct => val(Val::StructVal(to_struct(&parse_if_string(j, vt)?, vt)?)),
        V::MapList => val(Val::MapListVal(to_map_list(&parse_if_string(j, vt)?, vt)?)),
        V::StructList => val(Val::StructListVal(to_map_list(
            &parse_if_string(j, vt)?,
            vt,
        )?)),
        V::ScalarMap => match j {
            Json::Object(o) if o.is_empty() => val(Val::ScalarMapVal(ScalarMap::default())),
            _ => {
                return bad_because(
                    vt,
                    j,
                    "SCALAR_MAP keys cannot be written as JSON object keys; only {} is accepted",
                );
            }
        },
        V::ValueList => val(Val::ListVal(to_nested(j, vt)?)),
        V::ValueSet => val(Val::SetVal(to_nested(j, vt)?)),

        V::BytesList => val(Val::BytesListVal(BytesList {
            val: list(j, vt, Vec::new(), to_bytes)?,
        })),
        V::StringList => val(Val::StringListVal(StringList {
            val: list(j, vt, String::new(), to_python_str)?,
        })),
        V::Int32List => val(Val::Int32ListVal(Int32List {
            val: list(j, vt, 0, to_i32)?,
        })),
        V::Int64List => val(Val::Int64ListVal(Int64List {
            val: list(j, vt, 0, to_i64)?,
        })),
        V::DoubleList => val(Val::DoubleListVal(DoubleList {
            val: list(j, vt, 0.0, to_f64)?,
        })),
        V::FloatList => val(Val::FloatListVal(FloatList {
            val: list(j, vt, 0.0, to_f32)?,
        })),
        V::BoolList => val(Val::BoolListVal(BoolList {
            val: list(j, vt, false, to_bool)?,
        })),
        V::UnixTimestampList => val(Val::UnixTimestampListVal(Int64List {
            val: list(j, vt, NULL_TIMESTAMP_INT_VALUE, to_unix_seconds)?,
        })),
        V::UuidList => val(Val::UuidListVal(StringList {
            val: list(j, vt, String::new(), to_uuid)?,
        })),
        V::TimeUuidList => val(Val::TimeUuidListVal(StringList {
            val: list(j, vt, String::new(), to_uuid)?,
        })),
        V::DecimalList => val(Val::DecimalListVal(StringList {
            val: list(j, vt, String::new(), to_decimal)?,
        })),
        V::JsonList => {
            let items = array(j, vt)?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let text = if item.is_null() {
                    "null".to_string()
                } else {
                    to_json_text(item, V::Json).map_err(|e| e.at_index(i))?
                };
                out.push(text);
            }
            val(Val::JsonListVal(StringList { val: out }))
        }

        V::BytesSet => val(Val::BytesSetVal(BytesSet {
            val: set(j, vt, to_bytes, |b| b.clone())?,
        })),
        V::StringSet => val(Val::StringSetVal(StringSet {
            val: set(j, vt, to_python_str, |s| s.clone())?,
        })),
        V::Int32Set => val(Val::Int32SetVal(Int32Set {
            val: set(j, vt, to_i32, |i| *i)?,
        })),
        V::Int64Set => val(Val::Int64SetVal(Int64Set {
            val: set(j, vt, to_i64, |i| *i)?,
        })),
        V::DoubleSet => val(Val::DoubleSetVal(DoubleSet {
            val: set(j, vt, to_f64, |f| (*f + 0.0).to_bits())?,
        })),
        V::FloatSet => val(Val::FloatSetVal(FloatSet {
            val: set(j, vt, to_f32, |f| (*f + 0.0).to_bits())?,
        })),
        V::BoolSet => val(Val::BoolSetVal(BoolSet {
            val: set(j, vt, to_bool, |b| *b)?,
        })),
        V::UnixTimestampSet => val(Val::UnixTimestampSetVal(Int64Set {
            val: set(j, vt, to_unix_seconds, |i| *i)?,
        })),
        V::UuidSet => val(Val::UuidSetVal(StringSet {
            val: set(j, vt, to_uuid, |s| s.clone())?,
        })),
        V::TimeUuidSet => val(Val::TimeUuidSetVal(StringSet {
            val: set(j, vt, to_uuid, |s| s.clone())?,
        })),
        V::DecimalSet => val(Val::DecimalSetVal(StringSet {
            val: set(j, vt, to_decimal, |s| s.clone())?,
        })),
    })
}

fn array(j: &Json, vt: ValueType) -> R<&Vec<Json>> {
    match j {
        Json::Array(a) => Ok(a),
        _ => bad_because(vt, j, "not an array"),
    }
}

/// A list: `null` elements become `none_default`.
fn list<T: Clone>(
    j: &Json,
    vt: ValueType,
    none_default: T,
    conv: impl Fn(&Json, ValueType) -> R<T>,
) -> R<Vec<T>> {
    let items = array(j, vt)?;
    let elem = crate::types::element_type(vt).unwrap_or(vt);
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.is_null() {
                Ok(none_default.clone())
            } else {
                conv(item, elem).map_err(|e| e.at_index(i))
            }
        })
        .collect()
}

/// A set: no `null` elements; duplicates (by `key`) dropped, first occurrence kept.
fn set<T, K: std::hash::Hash + Eq>(
    j: &Json,
    vt: ValueType,
    conv: impl Fn(&Json, ValueType) -> R<T>,
    key: impl Fn(&T) -> K,
) -> R<Vec<T>> {
    let items = array(j, vt)?;
    let elem = crate::types::element_type(vt).unwrap_or(vt);
    let mut seen = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_null() {
            return Err(ValueError::new(
                elem.as_str_name(),
                item,
                Some(format!("{} elements cannot be null", vt.as_str_name())),
            )
            .at_index(i));
        }
        let v = conv(item, elem).map_err(|e| e.at_index(i))?;
        if seen.insert(key(&v)) {
            out.push(v);
        }
    }
    Ok(out)
}

fn to_i64(j: &Json, vt: ValueType) -> R<i64> {
    match j {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if n.is_u64() {
                return bad_because(vt, j, format!("out of range for {}", vt.as_str_name()));
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 {
                return bad_because(vt, j, "has a fractional part");
            }
            if !I64_AS_F64_RANGE.contains(&f) {
                return bad_because(vt, j, format!("out of range for {}", vt.as_str_name()));
            }
            Ok(f as i64)
        }
        Json::String(s) => s
            .trim()
            .parse::<i64>()
            .or_else(|_| bad_because(vt, j, "not an integer")),
        _ => bad(vt, j),
    }
}

fn to_i32(j: &Json, vt: ValueType) -> R<i32> {
    let i = to_i64(j, vt)?;
    i32::try_from(i)
        .or_else(|_| bad_because(vt, j, format!("out of range for {}", vt.as_str_name())))
}

fn parse_float_str(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

fn to_f64(j: &Json, vt: ValueType) -> R<f64> {
    match j {
        Json::Number(n) => n.as_f64().map_or_else(|| bad(vt, j), Ok),
        Json::String(s) => {
            parse_float_str(s).map_or_else(|| bad_because(vt, j, "not a number"), Ok)
        }
        _ => bad(vt, j),
    }
}

fn to_f32(j: &Json, vt: ValueType) -> R<f32> {
    to_f64(j, vt).map(|f| f as f32)
}

fn to_bool(j: &Json, vt: ValueType) -> R<bool> {
    match j {
        Json::Bool(b) => Ok(*b),
        Json::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Json::Number(n) if n.as_i64() == Some(1) => Ok(true),
        _ => bad(vt, j),
    }
}

/// Python's `str()` of a JSON scalar.
fn to_python_str(j: &Json, vt: ValueType) -> R<String> {
    match j {
        Json::String(s) => Ok(s.clone()),
        Json::Bool(true) => Ok("True".into()),
        Json::Bool(false) => Ok("False".into()),
        Json::Number(n) => Ok(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => python_float_repr(f),
            _ => n.to_string(),
        }),
        _ => bad(vt, j),
    }
}

fn to_bytes(j: &Json, vt: ValueType) -> R<Vec<u8>> {
    match j {
        Json::String(s) => B64_LENIENT
            .decode(s.as_bytes())
            .or_else(|_| bad_because(vt, j, "not valid base64")),
        _ => bad_because(vt, j, "bytes must be a base64 string"),
    }
}

/// Epoch seconds, truncated toward zero, and the UTC offset if the text carried one.
fn parse_iso_datetime(s: &str) -> Option<(i64, Option<i32>)> {
    let (dt, offset) = parse_iso_timestamp(s)?;
    let (secs, nanos) = (dt.timestamp(), dt.timestamp_subsec_nanos());
    Some((
        if secs < 0 && nanos > 0 {
            secs + 1
        } else {
            secs
        },
        offset,
    ))
}

/// Parses an ISO-8601 date-time as pandas' `to_datetime` reads the strings Feast clients
/// send: `T` or space between date and time, optional fraction (to nanoseconds), `Z` or a
/// `±HH:MM` offset, or none (naive = UTC), or a date alone (midnight). Returns the instant
/// and the offset in seconds east of UTC when the text carried one.
pub fn parse_iso_timestamp(s: &str) -> Option<(DateTime<Utc>, Option<i32>)> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt.with_timezone(&Utc), Some(dt.offset().local_minus_utc())));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some((dt.with_timezone(&Utc), Some(dt.offset().local_minus_utc())));
        }
    }
    let (naive_part, utc) = match s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(naive_part, fmt).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(naive_part, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })?;
    Some((Utc.from_utc_datetime(&naive), utc.then_some(0)))
}

fn to_unix_seconds(j: &Json, vt: ValueType) -> R<i64> {
    match j {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if n.is_u64() || !I64_AS_F64_RANGE.contains(&f) {
                return bad_because(vt, j, "out of range for epoch seconds");
            }
            Ok(f.trunc() as i64)
        }
        Json::String(s) => {
            if let Ok(i) = s.trim().parse::<i64>() {
                return Ok(i);
            }
            parse_iso_datetime(s).map(|(secs, _)| secs).map_or_else(
                || bad_because(vt, j, "not epoch seconds or an ISO-8601 date-time"),
                Ok,
            )
        }
        _ => bad(vt, j),
    }
}

/// Python's `str(datetime.timezone(offset))`: `UTC`, `UTC+05:30`, `UTC-07:00:15`.
fn python_timezone_name(offset_secs: i32) -> String {
    if offset_secs == 0 {
        return "UTC".into();
    }
    let mut s = String::from("UTC");
    push_python_offset(&mut s, offset_secs);
    s
}

fn to_zoned(j: &Json, vt: ValueType) -> R<ZonedTimestamp> {
    match j {
        Json::Number(_) => Ok(ZonedTimestamp {
            unix_timestamp: to_unix_seconds(j, vt)?,
            zone: String::new(),
        }),
        Json::String(s) => {
            let (secs, offset) = parse_iso_datetime(s)
                .map_or_else(|| bad_because(vt, j, "not an ISO-8601 date-time"), Ok)?;
            Ok(ZonedTimestamp {
                unix_timestamp: secs,
                zone: offset.map(python_timezone_name).unwrap_or_default(),
            })
        }
        _ => bad(vt, j),
    }
}

fn to_uuid(j: &Json, vt: ValueType) -> R<String> {
    match j {
        Json::String(s) if uuid::Uuid::try_parse(s.trim()).is_ok() => Ok(s.clone()),
        Json::String(_) => bad_because(vt, j, "not a UUID"),
        _ => bad(vt, j),
    }
}

/// Python's `decimal.Decimal(str)` syntax (without underscores).
fn is_decimal_literal(s: &str) -> bool {
    let t = s.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return true;
    }
    if let Some(payload) = lower
        .strip_prefix("snan")
        .or_else(|| lower.strip_prefix("nan"))
    {
        return payload.bytes().all(|b| b.is_ascii_digit());
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits_ok(int_part)
        && digits_ok(frac_part)
        && !(int_part.is_empty() && frac_part.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits_ok(e)
    });
    mantissa_ok && exponent_ok
}

fn to_decimal(j: &Json, vt: ValueType) -> R<String> {
    match j {
        Json::String(s) if is_decimal_literal(s) => Ok(s.clone()),
        Json::String(_) => bad_because(vt, j, "not a decimal number"),
        Json::Number(n) => Ok(n.to_string()),
        _ => bad(vt, j),
    }
}

fn to_json_text(j: &Json, vt: ValueType) -> R<String> {
    match j {
        Json::String(s) => match serde_json::from_str::<Json>(s) {
            Ok(_) => Ok(s.clone()),
            Err(e) => bad_because(vt, j, format!("not valid JSON text: {e}")),
        },
        other => Ok(crate::json::python_dumps(other)),
    }
}

/// A string holding JSON is parsed first (`map_val`/`struct_val` arrive that way).
fn parse_if_string(j: &Json, vt: ValueType) -> R<Json> {
    match j {
        Json::String(s) => serde_json::from_str(s)
            .or_else(|e| bad_because(vt, j, format!("not valid JSON text: {e}"))),
        other => Ok(other.clone()),
    }
}

fn to_map(j: &Json, vt: ValueType) -> R<Map> {
    match j {
        Json::Object(o) => object_to_map(o),
        _ => bad_because(vt, j, "not a JSON object"),
    }
}

fn to_struct(j: &Json, vt: ValueType) -> R<Map> {
    match j {
        Json::Object(o) => object_to_map(o),
        Json::Array(_) => bad_because(vt, j, "not a JSON object"),
        Json::Null => Ok(placeholder_struct("None".into())),
        scalar => Ok(placeholder_struct(to_python_str(scalar, vt)?)),
    }
}

fn placeholder_struct(s: String) -> Map {
    let mut m = Map::default();
    m.val.insert("_value".into(), val(Val::StringVal(s)));
    m
}

fn to_map_list(j: &Json, vt: ValueType) -> R<MapList> {
    let items = array(j, vt)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let map = match item {
            Json::Object(o) => object_to_map(o),
            Json::String(_) => to_map(&parse_if_string(item, ValueType::Map)?, ValueType::Map),
            _ => bad_because(ValueType::Map, item, "not a JSON object"),
        };
        out.push(map.map_err(|e| e.at_index(i))?);
    }
    Ok(MapList { val: out })
}

/// Feast's `_python_dict_to_map_proto`: `null` → unset, object → `map_val`, non-empty array
/// of objects → `map_list_val`, else inference.
fn object_to_map(o: &serde_json::Map<String, Json>) -> R<Map> {
    let mut m = Map::default();
    for (k, v) in o {
        let value = match v {
            Json::Object(inner) => val(Val::MapVal(object_to_map(inner).map_err(|e| e.at_key(k))?)),
            _ => infer_value(v).map_err(|e| e.at_key(k))?,
        };
        m.val.insert(k.clone(), value);
    }
    Ok(m)
}

/// Feast's type inference for one JSON value (`python_values_to_proto_values(.., UNKNOWN)`).
fn infer_value(j: &Json) -> R<Value> {
    Ok(match j {
        Json::Null => Value::default(),
        Json::Bool(b) => val(Val::BoolVal(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => val(Val::Int64Val(i)),
            None if n.is_u64() => {
                return bad_because(ValueType::Int64, j, "out of range for INT64");
            }
            None => val(Val::DoubleVal(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => val(Val::StringVal(s.clone())),
        Json::Object(o) => val(Val::MapVal(object_to_map(o)?)),
        Json::Array(items) => infer_list(items, j)?,
    })
}

fn infer_list(items: &[Json], whole: &Json) -> R<Value> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Bool,
        Int,
        Float,
        Str,
    }
    let Some(first) = items.first() else {
        return Ok(Value::default());
    };
    if first.is_object() {
        return Ok(val(Val::MapListVal(to_map_list(
            whole,
            ValueType::MapList,
        )?)));
    }
    let mut kind: Option<Kind> = None;
    for (i, item) in items.iter().enumerate() {
        let k = match item {
            Json::Bool(_) => Kind::Bool,
            Json::Number(n) if n.as_i64().is_some() => Kind::Int,
            Json::Number(n) if n.is_f64() => Kind::Float,
            Json::String(_) => Kind::Str,
            _ => {
                let reason = match item {
                    Json::Array(_) => "nested arrays need a declared VALUE_LIST type",
                    Json::Null => "list elements cannot be null when the type is inferred",
                    Json::Object(_) => "a list mixes objects and scalars",
                    _ => "out of range for INT64",
                };
                return Err(
                    ValueError::new("a scalar list element", item, Some(reason.into())).at_index(i),
                );
            }
        };
        kind = Some(match (kind, k) {
            (None, k) => k,
            (Some(a), b) if a == b => a,
            (Some(Kind::Int | Kind::Float), Kind::Int | Kind::Float) => Kind::Float,
            _ => {
                return Err(ValueError::new(
                    "list elements of one type",
                    whole,
                    Some("the list mixes element types".into()),
                ));
            }
        });
    }
    Ok(match kind.unwrap_or(Kind::Str) {
        Kind::Bool => val(Val::BoolListVal(BoolList {
            val: items.iter().filter_map(Json::as_bool).collect(),
        })),
        Kind::Int => val(Val::Int64ListVal(Int64List {
            val: items.iter().filter_map(Json::as_i64).collect(),
        })),
        Kind::Float => val(Val::DoubleListVal(DoubleList {
            val: items.iter().filter_map(Json::as_f64).collect(),
        })),
        Kind::Str => val(Val::StringListVal(StringList {
            val: items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
        })),
    })
}

/// `VALUE_LIST`/`VALUE_SET` (Feast's `_convert_nested_collection_to_proto`).
fn to_nested(j: &Json, vt: ValueType) -> R<RepeatedValue> {
    let items = array(j, vt)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, inner) in items.iter().enumerate() {
        let v = match inner {
            Json::Null => Value::default(),
            Json::Array(a) if a.is_empty() => Value::default(),
            Json::Array(a) if a.iter().any(Json::is_array) => val(Val::ListVal(
                to_nested(inner, ValueType::ValueList).map_err(|e| e.at_index(i))?,
            )),
            Json::Array(a) => infer_list(a, inner).map_err(|e| e.at_index(i))?,
            _ => {
                return Err(ValueError::new(
                    vt.as_str_name(),
                    inner,
                    Some("elements must be arrays".into()),
                )
                .at_index(i));
            }
        };
        out.push(v);
    }
    Ok(RepeatedValue { val: out })
}

// ---------------------------------------------------------------------------------------------
// Python formatting
// ---------------------------------------------------------------------------------------------

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents -4..16
/// (`1.0`, `0.0001`, `1234.5`), else scientific with a signed two-digit exponent (`1e+16`,
/// `1.5e-05`); `nan`, `inf`, `-inf`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e2", "1e16", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ALL_VALUE_TYPES;
    use feast_proto::types::{MapKey, ScalarMapEntry, map_key::Key};
    use serde_json::json;

    fn v(val: Val) -> Value {
        Value { val: Some(val) }
    }

    fn compact(v: &Value) -> String {
        serde_json::to_string(&value_to_json(v)).unwrap()
    }

    fn map(entries: &[(&str, Value)]) -> Map {
        Map {
            val: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn nulls() {
        assert_eq!(value_to_json(&Value::default()), Json::Null);
        assert_eq!(value_to_json(&v(Val::NullVal(0))), Json::Null);
        assert!(is_null(&Value::default()) && is_null(&v(Val::NullVal(0))));
        assert!(!is_null(&v(Val::Int64Val(0))));
    }

    #[test]
    fn scalars_to_json() {
        let cases: Vec<(Val, &str)> = vec![
            (Val::Int32Val(-7), "-7"),
            (Val::Int32Val(i32::MAX), "2147483647"),
            (Val::Int64Val(i64::MIN), "-9223372036854775808"),
            (Val::Int64Val(1001), "1001"),
            (Val::UnixTimestampVal(1714557600), "1714557600"),
            (Val::DoubleVal(1.0), "1.0"),
            (Val::DoubleVal(0.52), "0.52"),
            (Val::DoubleVal(-0.0), "-0.0"),
            (Val::DoubleVal(1e16), "1e+16"),
            (Val::DoubleVal(1.5e-7), "1.5e-7"),
            (Val::FloatVal(0.1), "0.10000000149011612"),
            (Val::FloatVal(2.0), "2.0"),
            (Val::BoolVal(true), "true"),
            (Val::StringVal("é\"x".into()), "\"é\\\"x\""),
            (Val::JsonVal("{\"a\": 1}".into()), "\"{\\\"a\\\": 1}\""),
            (Val::UuidVal("a".into()), "\"a\""),
            (Val::TimeUuidVal("b".into()), "\"b\""),
            (Val::DecimalVal("1.50".into()), "\"1.50\""),
            (Val::BytesVal(vec![0, 1, 2, 255]), "\"AAEC/w==\""),
            (Val::BytesVal(vec![]), "\"\""),
            (Val::DoubleVal(f64::NAN), "\"NaN\""),
            (Val::DoubleVal(f64::INFINITY), "\"Infinity\""),
            (Val::DoubleVal(f64::NEG_INFINITY), "\"-Infinity\""),
            (Val::FloatVal(f32::NAN), "\"NaN\""),
            (Val::FloatVal(f32::NEG_INFINITY), "\"-Infinity\""),
            (
                Val::ScalarMapVal(ScalarMap {
                    val: vec![ScalarMapEntry {
                        key: Some(MapKey {
                            key: Some(Key::Int64Key(1)),
                        }),
                        value: Some(v(Val::Int64Val(2))),
                    }],
                }),
                "null",
            ),
        ];
        for (val, expected) in cases {
            assert_eq!(compact(&v(val.clone())), expected, "{val:?}");
        }
    }

    #[test]
    fn integral_floats_stay_floats() {
        // The Python client types `1` as INT64 and `1.0` as DOUBLE.
        let j = value_to_json(&v(Val::DoubleVal(1.0)));
        assert!(j.is_f64());
        assert_eq!(serde_json::to_string(&j).unwrap(), "1.0");
        let back: Json = serde_json::from_str("1.0").unwrap();
        assert!(back.is_f64());
    }

    #[test]
    fn collections_to_json() {
        let cases: Vec<(Val, &str)> = vec![
            (
                Val::BytesListVal(BytesList {
                    val: vec![b"a".to_vec(), vec![]],
                }),
                r#"["YQ==",""]"#,
            ),
            (
                Val::BytesSetVal(BytesSet {
                    val: vec![b"ab".to_vec()],
                }),
                r#"["YWI="]"#,
            ),
            (
                Val::StringListVal(StringList {
                    val: vec!["x".into(), "".into()],
                }),
                r#"["x",""]"#,
            ),
            (
                Val::StringSetVal(StringSet {
                    val: vec!["x".into()],
                }),
                r#"["x"]"#,
            ),
            (Val::Int32ListVal(Int32List { val: vec![1, -2] }), "[1,-2]"),
            (Val::Int32SetVal(Int32Set { val: vec![3] }), "[3]"),
            (
                Val::Int64ListVal(Int64List {
                    val: vec![i64::MAX],
                }),
                "[9223372036854775807]",
            ),
            (Val::Int64SetVal(Int64Set { val: vec![] }), "[]"),
            (
                Val::UnixTimestampListVal(Int64List {
                    val: vec![0, 1714557600],
                }),
                "[0,1714557600]",
            ),
            (Val::UnixTimestampSetVal(Int64Set { val: vec![5] }), "[5]"),
            (
                Val::DoubleListVal(DoubleList {
                    val: vec![1.0, 0.5],
                }),
                "[1.0,0.5]",
            ),
            (
                Val::DoubleListVal(DoubleList {
                    val: vec![1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY],
                }),
                r#"[1.0,"NaN","Infinity","-Infinity"]"#,
            ),
            (
                Val::DoubleSetVal(DoubleSet {
                    val: vec![f64::NAN, 2.5],
                }),
                r#"["NaN",2.5]"#,
            ),
            (
                Val::FloatListVal(FloatList {
                    val: vec![0.1, f32::INFINITY],
                }),
                r#"[0.10000000149011612,"Infinity"]"#,
            ),
            (
                Val::FloatSetVal(FloatSet {
                    val: vec![f32::NAN],
                }),
                r#"["NaN"]"#,
            ),
            (
                Val::BoolListVal(BoolList {
                    val: vec![true, false],
                }),
                "[true,false]",
            ),
            (Val::BoolSetVal(BoolSet { val: vec![true] }), "[true]"),
            (
                Val::JsonListVal(StringList {
                    val: vec!["[1]".into()],
                }),
                r#"["[1]"]"#,
            ),
            (
                Val::UuidListVal(StringList {
                    val: vec!["u".into()],
                }),
                r#"["u"]"#,
            ),
            (
                Val::TimeUuidListVal(StringList {
                    val: vec!["t".into()],
                }),
                r#"["t"]"#,
            ),
            (
                Val::UuidSetVal(StringSet {
                    val: vec!["u".into()],
                }),
                r#"["u"]"#,
            ),
            (
                Val::TimeUuidSetVal(StringSet {
                    val: vec!["t".into()],
                }),
                r#"["t"]"#,
            ),
            (
                Val::DecimalListVal(StringList {
                    val: vec!["1.0".into()],
                }),
                r#"["1.0"]"#,
            ),
            (
                Val::DecimalSetVal(StringSet {
                    val: vec!["2".into()],
                }),
                r#"["2"]"#,
            ),
        ];
        for (val, expected) in cases {
            assert_eq!(compact(&v(val.clone())), expected, "{val:?}");
        }
    }

    #[test]
    fn nested_to_json() {
        let inner = map(&[
            ("z", v(Val::Int64Val(1))),
            ("a", v(Val::DoubleListVal(DoubleList { val: vec![1.5] }))),
            ("n", Value::default()),
            ("b", v(Val::BytesVal(b"hi".to_vec()))),
            ("nan", v(Val::DoubleVal(f64::NAN))),
        ]);
        let outer = map(&[
            ("inner", v(Val::MapVal(inner.clone()))),
            ("s", v(Val::StringVal("x".into()))),
        ]);
        // Keys come out sorted (the proto map is a BTreeMap).
        let expected_inner = r#"{"a":[1.5],"b":"aGk=","n":null,"nan":"NaN","z":1}"#;
        assert_eq!(compact(&v(Val::MapVal(inner.clone()))), expected_inner);
        assert_eq!(compact(&v(Val::StructVal(inner.clone()))), expected_inner);
        assert_eq!(
            compact(&v(Val::MapVal(outer))),
            format!(r#"{{"inner":{expected_inner},"s":"x"}}"#)
        );
        let ml = MapList {
            val: vec![inner.clone(), Map::default()],
        };
        assert_eq!(
            compact(&v(Val::MapListVal(ml.clone()))),
            format!("[{expected_inner},{{}}]")
        );
        assert_eq!(
            compact(&v(Val::StructListVal(ml))),
            format!("[{expected_inner},{{}}]")
        );
        let rv = RepeatedValue {
            val: vec![
                v(Val::Int64ListVal(Int64List { val: vec![1, 2] })),
                Value::default(),
                v(Val::ListVal(RepeatedValue {
                    val: vec![v(Val::StringListVal(StringList {
                        val: vec!["a".into()],
                    }))],
                })),
                v(Val::FloatListVal(FloatList {
                    val: vec![f32::NAN],
                })),
            ],
        };
        assert_eq!(
            compact(&v(Val::ListVal(rv.clone()))),
            r#"[[1,2],null,[["a"]],["NaN"]]"#
        );
        assert_eq!(
            compact(&v(Val::SetVal(rv))),
            r#"[[1,2],null,[["a"]],["NaN"]]"#
        );
    }

    #[test]
    fn zoned_timestamps_to_json() {
        // Expected strings printed by feast 0.67's `_value_to_native`.
        let cases = [
            (1714557600, "", Some("2024-05-01T10:00:00+00:00")),
            (1714557600, "UTC", Some("2024-05-01T10:00:00+00:00")),
            (
                1714557600,
                "America/New_York",
                Some("2024-05-01T06:00:00-04:00"),
            ),
            (1714557600, "+05:30", Some("2024-05-01T15:30:00+05:30")),
            (1714557600, "UTC-07:00", Some("2024-05-01T03:00:00-07:00")),
            (1714557600, "GMT+0100", Some("2024-05-01T11:00:00+01:00")),
            (1714557600, "garbage", Some("2024-05-01T10:00:00+00:00")),
            (
                1714557600,
                "Europe/Paris",
                Some("2024-05-01T12:00:00+02:00"),
            ),
            (
                1704067200,
                "Europe/Paris",
                Some("2024-01-01T01:00:00+01:00"),
            ),
            // Local mean time: an offset with seconds. (Zone history before 1970 can differ from
            // Python's where its tzdata is built with `backzone`, e.g. Europe/Amsterdam in 1890.)
            (
                -3155673600,
                "America/New_York",
                Some("1869-12-31T19:03:58-04:56:02"),
            ),
            (
                1714557600,
                "Asia/Kathmandu",
                Some("2024-05-01T15:45:00+05:45"),
            ),
            (1714557600, "Etc/GMT+5", Some("2024-05-01T05:00:00-05:00")),
            (1714557600, "utc", Some("2024-05-01T10:00:00+00:00")),
            (1714557600, " +05:30 ", Some("2024-05-01T15:30:00+05:30")),
            (1714557600, "GMT-0330", Some("2024-05-01T06:30:00-03:30")),
            (1714557600, "+24:00", Some("2024-05-01T10:00:00+00:00")),
            (1714557600, "+5:30", Some("2024-05-01T10:00:00+00:00")),
            (0, "", Some("1970-01-01T00:00:00+00:00")),
            (NULL_TIMESTAMP_INT_VALUE, "UTC", None),
        ];
        for (ts, zone, expected) in cases {
            let z = ZonedTimestamp {
                unix_timestamp: ts,
                zone: zone.into(),
            };
            assert_eq!(
                zoned_timestamp_to_iso(&z).as_deref(),
                expected,
                "{ts} {zone}"
            );
            let j = value_to_json(&v(Val::ZonedTimestampVal(z)));
            assert_eq!(j, expected.map_or(Json::Null, |s| Json::String(s.into())));
        }
    }

    #[test]
    fn value_type_of_every_case() {
        assert_eq!(value_type_of(&Value::default()), ValueType::Invalid);
        assert_eq!(value_type_of(&v(Val::NullVal(0))), ValueType::Null);
        assert_eq!(
            value_type_of(&v(Val::ListVal(RepeatedValue::default()))),
            ValueType::ValueList
        );
        assert_eq!(
            value_type_of(&v(Val::StructVal(Map::default()))),
            ValueType::Struct
        );
        assert_eq!(
            value_type_of(&v(Val::UnixTimestampListVal(Int64List::default()))),
            ValueType::UnixTimestampList
        );
        assert_eq!(
            value_type_of(&v(Val::ZonedTimestampVal(ZonedTimestamp::default()))),
            ValueType::ZonedTimestamp
        );
        // Every value type but INVALID has a oneof case whose number equals the enum number.
        for vt in ALL_VALUE_TYPES {
            if vt == ValueType::Invalid {
                continue;
            }
            let sample = sample_value(vt);
            assert_eq!(value_type_of(&sample), vt);
        }
    }

    /// A non-trivial value of every type, for round trips.
    fn sample_value(vt: ValueType) -> Value {
        use ValueType as V;
        let strs = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let u1 = "123e4567-e89b-12d3-a456-426614174000";
        let u2 = "a8098c1a-f86e-11da-bd1a-00112444be1e";
        let m = map(&[
            ("i", v(Val::Int64Val(1))),
            ("f", v(Val::DoubleVal(0.5))),
            ("s", v(Val::StringVal("x".into()))),
            ("b", v(Val::BoolVal(false))),
            ("l", v(Val::Int64ListVal(Int64List { val: vec![1, 2] }))),
            (
                "m",
                v(Val::MapVal(map(&[(
                    "deep",
                    v(Val::StringListVal(StringList { val: strs(&["a"]) })),
                )]))),
            ),
            (
                "ml",
                v(Val::MapListVal(MapList {
                    val: vec![map(&[("k", v(Val::BoolVal(true)))])],
                })),
            ),
            ("n", Value::default()),
        ]);
        v(match vt {
            V::Invalid => return Value::default(),
            V::Null => Val::NullVal(0),
            V::Bytes => Val::BytesVal(vec![0, 255, 10]),
            V::String => Val::StringVal("héllo".into()),
            V::Int32 => Val::Int32Val(i32::MIN),
            V::Int64 => Val::Int64Val(i64::MAX),
            V::Double => Val::DoubleVal(-1.25e-300),
            V::Float => Val::FloatVal(3.4e38),
            V::Bool => Val::BoolVal(true),
            V::UnixTimestamp => Val::UnixTimestampVal(-86400),
            V::BytesList => Val::BytesListVal(BytesList {
                val: vec![b"a".to_vec(), vec![]],
            }),
            V::StringList => Val::StringListVal(StringList {
                val: strs(&["a", "", "a"]),
            }),
            V::Int32List => Val::Int32ListVal(Int32List {
                val: vec![1, 1, -3],
            }),
            V::Int64List => Val::Int64ListVal(Int64List {
                val: vec![i64::MIN, 0],
            }),
            V::DoubleList => Val::DoubleListVal(DoubleList {
                val: vec![1.0, f64::NAN, f64::INFINITY],
            }),
            V::FloatList => Val::FloatListVal(FloatList {
                val: vec![0.1, f32::NEG_INFINITY],
            }),
            V::BoolList => Val::BoolListVal(BoolList {
                val: vec![true, true],
            }),
            V::UnixTimestampList => Val::UnixTimestampListVal(Int64List { val: vec![1, 2] }),
            V::Map => Val::MapVal(m),
            V::MapList => Val::MapListVal(MapList {
                val: vec![m, Map::default()],
            }),
            V::BytesSet => Val::BytesSetVal(BytesSet {
                val: vec![b"x".to_vec(), b"y".to_vec()],
            }),
            V::StringSet => Val::StringSetVal(StringSet {
                val: strs(&["b", "a"]),
            }),
            V::Int32Set => Val::Int32SetVal(Int32Set { val: vec![2, 1] }),
            V::Int64Set => Val::Int64SetVal(Int64Set { val: vec![5] }),
            V::DoubleSet => Val::DoubleSetVal(DoubleSet {
                val: vec![0.0, 2.5, f64::NAN],
            }),
            V::FloatSet => Val::FloatSetVal(FloatSet { val: vec![1.5] }),
            V::BoolSet => Val::BoolSetVal(BoolSet {
                val: vec![false, true],
            }),
            V::UnixTimestampSet => Val::UnixTimestampSetVal(Int64Set { val: vec![9] }),
            V::Json => Val::JsonVal(r#"{"a": [1, 2.5, null]}"#.into()),
            V::JsonList => Val::JsonListVal(StringList {
                val: strs(&["1", r#""s""#, "null"]),
            }),
            V::Struct => Val::StructVal(m),
            V::StructList => Val::StructListVal(MapList { val: vec![m] }),
            V::Uuid => Val::UuidVal(u1.into()),
            V::TimeUuid => Val::TimeUuidVal(u2.into()),
            V::UuidList => Val::UuidListVal(StringList {
                val: strs(&[u1, u2]),
            }),
            V::TimeUuidList => Val::TimeUuidListVal(StringList { val: strs(&[u2]) }),
            V::UuidSet => Val::UuidSetVal(StringSet { val: strs(&[u1]) }),
            V::TimeUuidSet => Val::TimeUuidSetVal(StringSet {
                val: strs(&[u2, u1]),
            }),
            V::ValueList => Val::ListVal(RepeatedValue {
                val: vec![
                    v(Val::Int64ListVal(Int64List { val: vec![1, 2] })),
                    Value::default(),
                    v(Val::StringListVal(StringList { val: strs(&["a"]) })),
                    v(Val::ListVal(RepeatedValue {
                        val: vec![v(Val::DoubleListVal(DoubleList { val: vec![0.5] }))],
                    })),
                ],
            }),
            V::ValueSet => Val::SetVal(RepeatedValue {
                val: vec![v(Val::BoolListVal(BoolList { val: vec![true] }))],
            }),
            V::Decimal => Val::DecimalVal("-12.3400".into()),
            V::DecimalList => Val::DecimalListVal(StringList {
                val: strs(&["1", "1E+3"]),
            }),
            V::DecimalSet => Val::DecimalSetVal(StringSet {
                val: strs(&["NaN"]),
            }),
            V::ScalarMap => Val::ScalarMapVal(ScalarMap::default()),
            V::ZonedTimestamp => Val::ZonedTimestampVal(ZonedTimestamp {
                unix_timestamp: 1714557600,
                zone: "UTC+05:30".into(),
            }),
        })
    }

    /// Equality that treats NaN as equal to itself.
    fn same(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn json_round_trip_every_type() {
        for vt in ALL_VALUE_TYPES {
            let original = sample_value(vt);
            let j = value_to_json(&original);
            let back = json_to_value(&j, vt).unwrap_or_else(|e| panic!("{vt:?}: {e}"));
            match vt {
                // The JSON forms of these lose nothing but are not parsed back to the same case.
                ValueType::Invalid => assert_eq!(back, Value::default()),
                ValueType::Null | ValueType::ScalarMap => {
                    assert_eq!(back, Value::default(), "{vt:?}")
                }
                _ => assert!(
                    same(&back, &original),
                    "{vt:?}: {original:?} -> {j} -> {back:?}"
                ),
            }
            assert_eq!(json_to_value(&Json::Null, vt), Ok(Value::default()));
        }
    }

    fn ok(j: Json, vt: ValueType) -> Value {
        json_to_value(&j, vt).unwrap_or_else(|e| panic!("{j} as {vt:?}: {e}"))
    }

    fn err(j: Json, vt: ValueType) -> String {
        match json_to_value(&j, vt) {
            Ok(v) => panic!("{j} as {vt:?} should fail, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ints_from_json() {
        use ValueType as V;
        assert_eq!(ok(json!(1001), V::Int64), v(Val::Int64Val(1001)));
        assert_eq!(ok(json!(" 12 "), V::Int64), v(Val::Int64Val(12)));
        assert_eq!(ok(json!("-5"), V::Int32), v(Val::Int32Val(-5)));
        assert_eq!(ok(json!(3.0), V::Int32), v(Val::Int32Val(3)));
        assert_eq!(
            ok(json!(i64::MIN as f64), V::Int64),
            v(Val::Int64Val(i64::MIN))
        );
        assert_eq!(ok(json!(i32::MIN), V::Int32), v(Val::Int32Val(i32::MIN)));
        assert_eq!(
            err(json!("abc"), V::Int64),
            r#"expected INT64, got "abc" (not an integer)"#
        );
        assert_eq!(
            err(json!(1.5), V::Int64),
            "expected INT64, got 1.5 (has a fractional part)"
        );
        assert_eq!(
            err(json!(3000000000i64), V::Int32),
            "expected INT32, got 3000000000 (out of range for INT32)"
        );
        assert_eq!(
            err(json!(u64::MAX), V::Int64),
            "expected INT64, got 18446744073709551615 (out of range for INT64)"
        );
        assert!(err(json!(9.3e18), V::Int64).contains("out of range"));
        assert_eq!(err(json!(true), V::Int64), "expected INT64, got true");
        assert_eq!(err(json!([1]), V::Int64), "expected INT64, got [1]");
        assert_eq!(
            err(json!({"a": 1}), V::Int32),
            r#"expected INT32, got {"a":1}"#
        );
    }

    #[test]
    fn floats_from_json() {
        use ValueType as V;
        assert_eq!(ok(json!(1), V::Double), v(Val::DoubleVal(1.0)));
        assert_eq!(ok(json!(0.5), V::Float), v(Val::FloatVal(0.5)));
        assert_eq!(ok(json!("2.5"), V::Double), v(Val::DoubleVal(2.5)));
        assert_eq!(
            ok(json!("Infinity"), V::Double),
            v(Val::DoubleVal(f64::INFINITY))
        );
        assert_eq!(
            ok(json!("-Infinity"), V::Float),
            v(Val::FloatVal(f32::NEG_INFINITY))
        );
        assert_eq!(ok(json!(1e40), V::Float), v(Val::FloatVal(f32::INFINITY)));
        let nan = ok(json!("NaN"), V::Double);
        assert!(matches!(nan.val, Some(Val::DoubleVal(f)) if f.is_nan()));
        assert_eq!(
            err(json!("x"), V::Double),
            r#"expected DOUBLE, got "x" (not a number)"#
        );
        assert_eq!(err(json!(false), V::Float), "expected FLOAT, got false");
        assert_eq!(
            ok(json!([1, 2.5, null, "NaN"]), V::DoubleList)
                .val
                .map(|x| format!("{x:?}")),
            Some("DoubleListVal(DoubleList { val: [1.0, 2.5, 0.0, NaN] })".into())
        );
    }

    #[test]
    fn strings_bools_bytes_from_json() {
        use ValueType as V;
        let s = |x: &str| v(Val::StringVal(x.into()));
        assert_eq!(ok(json!("x"), V::String), s("x"));
        assert_eq!(ok(json!(1001), V::String), s("1001"));
        assert_eq!(ok(json!(1.0), V::String), s("1.0"));
        assert_eq!(ok(json!(1e16), V::String), s("1e+16"));
        assert_eq!(ok(json!(true), V::String), s("True"));
        assert_eq!(
            err(json!(["x"]), V::String),
            r#"expected STRING, got ["x"]"#
        );
        assert_eq!(ok(json!(true), V::Bool), v(Val::BoolVal(true)));
        assert_eq!(ok(json!(0), V::Bool), v(Val::BoolVal(false)));
        assert_eq!(err(json!(2), V::Bool), "expected BOOL, got 2");
        assert_eq!(err(json!("true"), V::Bool), r#"expected BOOL, got "true""#);
        assert_eq!(
            ok(json!("AAEC/w=="), V::Bytes),
            v(Val::BytesVal(vec![0, 1, 2, 255]))
        );
        assert_eq!(
            ok(json!("AAEC/w"), V::Bytes),
            v(Val::BytesVal(vec![0, 1, 2, 255]))
        );
        assert_eq!(ok(json!(""), V::Bytes), v(Val::BytesVal(vec![])));
        assert_eq!(
            err(json!("***"), V::Bytes),
            r#"expected BYTES, got "***" (not valid base64)"#
        );
        assert!(err(json!(5), V::Bytes).contains("base64"));
    }

    #[test]
    fn timestamps_from_json() {
        use ValueType as V;
        let ts = |s: i64| v(Val::UnixTimestampVal(s));
        assert_eq!(ok(json!(1714557600), V::UnixTimestamp), ts(1714557600));
        assert_eq!(ok(json!(1714557600.9), V::UnixTimestamp), ts(1714557600));
        assert_eq!(ok(json!(-1.5), V::UnixTimestamp), ts(-1));
        assert_eq!(ok(json!("1714557600"), V::UnixTimestamp), ts(1714557600));
        assert_eq!(
            ok(json!("2024-05-01T10:00:00"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01T10:00:00.123456"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01 10:00:00"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01T10:00:00Z"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01T12:00:00+02:00"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01T12:00:00+0200"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(
            ok(json!("2024-05-01T10:00"), V::UnixTimestamp),
            ts(1714557600)
        );
        assert_eq!(ok(json!("2024-05-01"), V::UnixTimestamp), ts(1714521600));
        assert_eq!(ok(json!("1969-12-31T23:59:59.5"), V::UnixTimestamp), ts(0));
        assert_eq!(
            err(json!("yesterday"), V::UnixTimestamp),
            r#"expected UNIX_TIMESTAMP, got "yesterday" (not epoch seconds or an ISO-8601 date-time)"#
        );
        assert_eq!(
            err(json!(true), V::UnixTimestamp),
            "expected UNIX_TIMESTAMP, got true"
        );
        assert_eq!(
            ok(
                json!([1, null, "2024-05-01T10:00:00"]),
                V::UnixTimestampList
            ),
            v(Val::UnixTimestampListVal(Int64List {
                val: vec![1, NULL_TIMESTAMP_INT_VALUE, 1714557600]
            }))
        );
        assert_eq!(
            ok(json!([1, 1, 2]), V::UnixTimestampSet),
            v(Val::UnixTimestampSetVal(Int64Set { val: vec![1, 2] }))
        );

        let z = |secs: i64, zone: &str| {
            v(Val::ZonedTimestampVal(ZonedTimestamp {
                unix_timestamp: secs,
                zone: zone.into(),
            }))
        };
        assert_eq!(
            ok(json!("2024-05-01T10:00:00"), V::ZonedTimestamp),
            z(1714557600, "")
        );
        assert_eq!(
            ok(json!("2024-05-01T10:00:00Z"), V::ZonedTimestamp),
            z(1714557600, "UTC")
        );
        assert_eq!(
            ok(json!("2024-05-01T10:00:00+00:00"), V::ZonedTimestamp),
            z(1714557600, "UTC")
        );
        assert_eq!(
            ok(json!("2024-05-01T15:30:00+05:30"), V::ZonedTimestamp),
            z(1714557600, "UTC+05:30")
        );
        assert_eq!(
            ok(json!("2024-05-01T03:00:00-07:00"), V::ZonedTimestamp),
            z(1714557600, "UTC-07:00")
        );
        assert_eq!(ok(json!(1714557600), V::ZonedTimestamp), z(1714557600, ""));
        assert!(err(json!("nope"), V::ZonedTimestamp).starts_with("expected ZONED_TIMESTAMP"));
        // The zone written for a parsed offset resolves back to the same wall-clock time.
        let back = value_to_json(&ok(json!("2024-05-01T15:30:00+05:30"), V::ZonedTimestamp));
        assert_eq!(back, json!("2024-05-01T15:30:00+05:30"));
    }

    #[test]
    fn uuids_decimals_json_from_json() {
        use ValueType as V;
        let u = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(ok(json!(u), V::Uuid), v(Val::UuidVal(u.into())));
        assert_eq!(ok(json!(u), V::TimeUuid), v(Val::TimeUuidVal(u.into())));
        assert_eq!(
            err(json!("abc"), V::Uuid),
            r#"expected UUID, got "abc" (not a UUID)"#
        );
        assert!(err(json!(["abc"]), V::UuidList).starts_with("expected UUID at [0]"));
        assert_eq!(
            ok(json!("1.50"), V::Decimal),
            v(Val::DecimalVal("1.50".into()))
        );
        assert_eq!(
            ok(json!(" -1e-3 "), V::Decimal),
            v(Val::DecimalVal(" -1e-3 ".into()))
        );
        assert_eq!(ok(json!(".5"), V::Decimal), v(Val::DecimalVal(".5".into())));
        assert_eq!(
            ok(json!("Infinity"), V::Decimal),
            v(Val::DecimalVal("Infinity".into()))
        );
        assert_eq!(ok(json!(2.5), V::Decimal), v(Val::DecimalVal("2.5".into())));
        assert_eq!(ok(json!(7), V::Decimal), v(Val::DecimalVal("7".into())));
        for bad in ["", ".", "1.2.3", "e5", "1e", "abc", "1,5"] {
            assert!(json_to_value(&json!(bad), V::Decimal).is_err(), "{bad:?}");
        }
        // JSON: strings must hold JSON text; anything else is dumped like Python's json.dumps.
        assert_eq!(
            ok(json!("{\"a\":1}"), V::Json),
            v(Val::JsonVal("{\"a\":1}".into()))
        );
        assert_eq!(ok(json!("\"s\""), V::Json), v(Val::JsonVal("\"s\"".into())));
        assert!(err(json!("not json"), V::Json).contains("not valid JSON text"));
        assert_eq!(
            ok(
                json!({"a": "é", "b": [1.0, 1e16, null, true], "c": {}}),
                V::Json
            ),
            v(Val::JsonVal(
                r#"{"a": "\u00e9", "b": [1.0, 1e+16, null, true], "c": {}}"#.into()
            ))
        );
        assert_eq!(ok(json!(5), V::Json), v(Val::JsonVal("5".into())));
        assert_eq!(
            ok(json!([{"a": 1}, "{\"b\": 2}", null]), V::JsonList),
            v(Val::JsonListVal(StringList {
                val: vec!["{\"a\": 1}".into(), "{\"b\": 2}".into(), "null".into()]
            }))
        );
        assert!(err(json!(["{"]), V::JsonList).starts_with("expected JSON at [0]"));
    }

    #[test]
    fn python_formatting() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e300, "1e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (f, s) in cases {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn maps_and_structs_from_json() {
        use ValueType as V;
        let j = json!({"i": 1, "f": 0.5, "s": "x", "b": false, "l": [1, 2], "m": {"deep": ["a"]}, "ml": [{"k": true}], "n": null});
        let Some(Val::MapVal(m)) = ok(j.clone(), V::Map).val else {
            panic!()
        };
        assert_eq!(m.val["i"], v(Val::Int64Val(1)));
        assert_eq!(m.val["f"], v(Val::DoubleVal(0.5)));
        assert_eq!(m.val["s"], v(Val::StringVal("x".into())));
        assert_eq!(m.val["b"], v(Val::BoolVal(false)));
        assert_eq!(
            m.val["l"],
            v(Val::Int64ListVal(Int64List { val: vec![1, 2] }))
        );
        assert_eq!(m.val["n"], Value::default());
        assert!(
            matches!(&m.val["m"].val, Some(Val::MapVal(inner)) if inner.val["deep"] == v(Val::StringListVal(StringList { val: vec!["a".into()] })))
        );
        assert!(matches!(&m.val["ml"].val, Some(Val::MapListVal(l)) if l.val.len() == 1));
        // The write transport sends maps as JSON strings.
        assert_eq!(
            ok(Json::String(j.to_string()), V::Map),
            ok(j.clone(), V::Map)
        );
        let Some(Val::StructVal(s)) = ok(j.clone(), V::Struct).val else {
            panic!()
        };
        assert_eq!(s, m);
        assert_eq!(
            ok(json!(5), V::Struct),
            v(Val::StructVal(placeholder_struct("5".into())))
        );
        assert_eq!(
            ok(json!("5"), V::Struct),
            v(Val::StructVal(placeholder_struct("5".into())))
        );
        assert!(err(json!([1]), V::Map).contains("not a JSON object"));
        assert!(err(json!("[1]"), V::Map).contains("not a JSON object"));
        assert!(err(json!("{oops"), V::Map).contains("not valid JSON text"));
        assert_eq!(
            err(json!({"a": [1, [2]]}), V::Map),
            r#"expected a scalar list element at ["a"][1], got [2] (nested arrays need a declared VALUE_LIST type)"#
        );
        assert!(err(json!({"a": [1, "x"]}), V::Map).contains("mixes element types"));
        assert!(err(json!({"a": [1, null]}), V::Map).contains("cannot be null"));
        // Lists of maps: objects, or strings holding objects (the SDK's transport).
        let ml = ok(json!([{"a": 1}, "{\"b\": 2}"]), V::MapList);
        let Some(Val::MapListVal(ml)) = ml.val else {
            panic!()
        };
        assert_eq!(ml.val[0].val["a"], v(Val::Int64Val(1)));
        assert_eq!(ml.val[1].val["b"], v(Val::Int64Val(2)));
        assert_eq!(
            ok(json!("[{\"a\": 1}]"), V::StructList),
            v(Val::StructListVal(MapList {
                val: vec![ml.val[0].clone()]
            }))
        );
        assert!(err(json!([{"a": 1}, 5]), V::MapList).starts_with("expected MAP at [1]"));
        assert!(err(json!({"a": 1}), V::StructList).contains("not an array"));
        assert_eq!(
            ok(json!({}), V::ScalarMap),
            v(Val::ScalarMapVal(ScalarMap::default()))
        );
        assert!(err(json!({"1": 2}), V::ScalarMap).contains("SCALAR_MAP"));
    }

    #[test]
    fn lists_and_sets_from_json() {
        use ValueType as V;
        assert_eq!(
            ok(json!(["a", null]), V::StringList),
            v(Val::StringListVal(StringList {
                val: vec!["a".into(), "".into()]
            }))
        );
        assert_eq!(
            ok(json!([1, null]), V::Int64List),
            v(Val::Int64ListVal(Int64List { val: vec![1, 0] }))
        );
        assert_eq!(
            ok(json!([null]), V::BoolList),
            v(Val::BoolListVal(BoolList { val: vec![false] }))
        );
        assert_eq!(
            ok(json!([null, "YQ=="]), V::BytesList),
            v(Val::BytesListVal(BytesList {
                val: vec![vec![], b"a".to_vec()]
            }))
        );
        assert_eq!(
            ok(json!([]), V::Int64List),
            v(Val::Int64ListVal(Int64List { val: vec![] }))
        );
        assert_eq!(
            err(json!([1, 2.5]), V::Int32List),
            "expected INT32 at [1], got 2.5 (has a fractional part)"
        );
        assert_eq!(
            err(json!("abc"), V::StringList),
            r#"expected STRING_LIST, got "abc" (not an array)"#
        );
        assert_eq!(
            ok(json!(["a", "a", "b"]), V::StringSet),
            v(Val::StringSetVal(StringSet {
                val: vec!["a".into(), "b".into()]
            }))
        );
        assert_eq!(
            ok(json!([0.0, -0.0, 1]), V::DoubleSet),
            v(Val::DoubleSetVal(DoubleSet {
                val: vec![0.0, 1.0]
            }))
        );
        assert_eq!(
            ok(json!([true, 1, false]), V::BoolSet),
            v(Val::BoolSetVal(BoolSet {
                val: vec![true, false]
            }))
        );
        assert_eq!(
            err(json!(["a", null]), V::StringSet),
            "expected STRING at [1], got null (STRING_SET elements cannot be null)"
        );
    }

    #[test]
    fn nested_collections_from_json() {
        use ValueType as V;
        let got = ok(
            json!([[1, 2], [], null, ["a"], [[0.5]], [{"k": 1}]]),
            V::ValueList,
        );
        let expected = v(Val::ListVal(RepeatedValue {
            val: vec![
                v(Val::Int64ListVal(Int64List { val: vec![1, 2] })),
                Value::default(),
                Value::default(),
                v(Val::StringListVal(StringList {
                    val: vec!["a".into()],
                })),
                v(Val::ListVal(RepeatedValue {
                    val: vec![v(Val::DoubleListVal(DoubleList { val: vec![0.5] }))],
                })),
                v(Val::MapListVal(MapList {
                    val: vec![map(&[("k", v(Val::Int64Val(1)))])],
                })),
            ],
        }));
        assert_eq!(got, expected);
        let Some(Val::SetVal(_)) = ok(json!([[true]]), V::ValueSet).val else {
            panic!()
        };
        assert_eq!(
            err(json!([1]), V::ValueList),
            "expected VALUE_LIST at [0], got 1 (elements must be arrays)"
        );
        assert!(err(json!([[1, [2]]]), V::ValueList).starts_with("expected VALUE_LIST at [0][0]"));
    }

    #[test]
    fn inference_and_null() {
        use ValueType as V;
        assert_eq!(ok(json!(5), V::Invalid), v(Val::Int64Val(5)));
        assert_eq!(ok(json!(5.0), V::Invalid), v(Val::DoubleVal(5.0)));
        assert_eq!(ok(json!("s"), V::Invalid), v(Val::StringVal("s".into())));
        assert_eq!(ok(json!(true), V::Invalid), v(Val::BoolVal(true)));
        assert_eq!(
            ok(json!([true]), V::Invalid),
            v(Val::BoolListVal(BoolList { val: vec![true] }))
        );
        assert_eq!(
            ok(json!([1, 2.5]), V::Invalid),
            v(Val::DoubleListVal(DoubleList {
                val: vec![1.0, 2.5]
            }))
        );
        assert_eq!(ok(json!([]), V::Invalid), Value::default());
        assert!(matches!(
            ok(json!({"a": 1}), V::Invalid).val,
            Some(Val::MapVal(_))
        ));
        assert!(matches!(
            ok(json!([{"a": 1}]), V::Invalid).val,
            Some(Val::MapListVal(_))
        ));
        assert_eq!(
            err(json!(u64::MAX), V::Invalid),
            "expected INT64, got 18446744073709551615 (out of range for INT64)"
        );
        assert_eq!(err(json!(1), V::Null), "expected NULL, got 1");
    }

    #[test]
    fn long_offending_values_are_cut() {
        let big = Json::String("x".repeat(500));
        let e = json_to_value(&big, ValueType::Int64).unwrap_err();
        assert!(
            e.got.chars().count() <= 101 && e.got.ends_with('…'),
            "{}",
            e.got
        );
    }
}
