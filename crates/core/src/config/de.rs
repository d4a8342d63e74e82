//! serde building blocks that keep serde_norway's error locations.
//!
//! serde_norway attaches a position to an error only when the error is created
//! while one of its own `deserialize_*` calls is on the stack. So every check in
//! this module runs inside a visitor (never after `T::deserialize` returned), and
//! tagged unions are dispatched on a tag that was read in an earlier pass (see
//! [`Peek`]) instead of buffering the map, which would lose positions.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::error::invalid;

// ---------------------------------------------------------------------------
// Scalars with pydantic-like coercion
// ---------------------------------------------------------------------------

/// Integer visitor. `lax` mirrors pydantic's lax `int` (numeric strings and
/// integral floats accepted); strict mirrors `StrictInt`.
struct IntV {
    lax: bool,
    nullable: bool,
    min: i64,
    max: i64,
    what: &'static str,
}

impl IntV {
    fn check<E: de::Error>(&self, v: i64) -> Result<Option<i64>, E> {
        if v < self.min || v > self.max {
            Err(E::invalid_value(Unexpected::Signed(v), &self.what))
        } else {
            Ok(Some(v))
        }
    }
}

impl<'de> Visitor<'de> for IntV {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.check(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.check(v),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self.what)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if self.lax && v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
            self.check(v as i64)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self.what))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.lax
            && let Ok(n) = v.trim().parse::<i64>()
        {
            return self.check(n);
        }
        Err(E::invalid_type(Unexpected::Str(v), &self.what))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Bool(v), &self.what))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.nullable {
            Ok(None)
        } else {
            Err(E::invalid_type(Unexpected::Unit, &self.what))
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
}

fn int<'de, D: Deserializer<'de>>(
    d: D,
    lax: bool,
    nullable: bool,
    min: i64,
    max: i64,
    what: &'static str,
) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntV {
        lax,
        nullable,
        min,
        max,
        what,
    })
}

/// pydantic `int`.
pub fn lax_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(int(d, true, false, i64::MIN, i64::MAX, "an integer")?.unwrap_or_default())
}

/// pydantic `Optional[int]`.
pub fn lax_int_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d, true, true, i64::MIN, i64::MAX, "an integer")
}

/// pydantic `int` with `ge=0` (`NonNegativeInt`).
pub fn lax_int_ge0<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(int(d, true, false, 0, i64::MAX, "a non-negative integer")?.unwrap_or_default())
}

/// pydantic `int` with `gt=0`.
pub fn lax_int_gt0<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(int(d, true, false, 1, i64::MAX, "a positive integer")?.unwrap_or_default())
}

/// pydantic `Optional[int]` with `gt=0`.
pub fn lax_int_gt0_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d, true, true, 1, i64::MAX, "a positive integer")
}

/// pydantic `StrictInt`.
pub fn strict_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(int(d, false, false, i64::MIN, i64::MAX, "an integer")?.unwrap_or_default())
}

/// pydantic `Optional[StrictInt]`.
pub fn strict_int_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d, false, true, i64::MIN, i64::MAX, "an integer")
}

/// A TCP port given as a pydantic `int` (a numeric string is accepted).
pub fn lax_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    Ok(int(d, true, false, 0, 65535, "a port number (0-65535)")?.unwrap_or_default() as u16)
}

/// A TCP port given as a pydantic `Optional[StrictInt]`.
pub fn strict_port_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(int(d, false, true, 0, 65535, "a port number (0-65535)")?.map(|v| v as u16))
}

/// Booleans. PyYAML (YAML 1.1) reads plain `yes/no/on/off` as booleans and
/// pydantic's lax `bool` also takes `"true"`, `"1"`, `"t"`, `"y"`, 0 and 1, so
/// all of these are accepted here.
struct BoolV {
    nullable: bool,
}

fn bool_from_str(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "t" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

impl<'de> Visitor<'de> for BoolV {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match v {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(E::invalid_type(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match v {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(E::invalid_type(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        bool_from_str(v)
            .map(Some)
            .ok_or_else(|| E::invalid_type(Unexpected::Str(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.nullable {
            Ok(None)
        } else {
            Err(E::invalid_type(Unexpected::Unit, &self))
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
}

/// pydantic `bool` / `StrictBool` as read from PyYAML output.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(d.deserialize_any(BoolV { nullable: false })?
        .unwrap_or_default())
}

/// pydantic `Optional[bool]`.
pub fn boolean_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(BoolV { nullable: true })
}

/// pydantic `float` with `gt=0` (ints and numeric strings accepted).
pub fn lax_float_gt0<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct V;
    impl V {
        fn check<E: de::Error>(v: f64) -> Result<f64, E> {
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &"a positive number"))
            }
        }
    }
    impl<'de> Visitor<'de> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a positive number")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Self::check(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Self::check(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Self::check(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v.trim().parse::<f64>() {
                Ok(n) => Self::check(n),
                Err(_) => Err(E::invalid_type(Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(V)
}

/// A string checked by `check` inside the visitor, so a failure carries the
/// value's position. `check` returns the message for an invalid value.
pub fn checked_str<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct V {
        what: &'static str,
        check: fn(&str) -> Result<(), String>,
    }
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            (self.check)(v).map_err(invalid)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V { what, check })
}

/// A string field that must be a YAML string (pydantic `StrictStr` where the
/// difference matters, e.g. `project: 123` is rejected by Feast).
pub fn strict_str_checked<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct V {
        what: &'static str,
        check: fn(&str) -> Result<(), String>,
    }
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            (self.check)(v).map_err(invalid)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_any(V { what, check })
}

/// A list of integers checked after it is read (still inside the visitor).
pub fn checked_int_list<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&[i64]) -> Result<(), String>,
) -> Result<Vec<i64>, D::Error> {
    struct Elem;
    impl<'de> DeserializeSeed<'de> for Elem {
        type Value = i64;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
            strict_int(d)
        }
    }
    struct V(fn(&[i64]) -> Result<(), String>);
    impl<'de> Visitor<'de> for V {
        type Value = Vec<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Elem)? {
                out.push(v);
            }
            (self.0)(&out).map_err(invalid)?;
            Ok(out)
        }
    }
    d.deserialize_seq(V(check))
}

// ---------------------------------------------------------------------------
// Pass 1: peek at the tags of the tagged sections
// ---------------------------------------------------------------------------

/// The shape of one top-level section, read without interpreting it.
#[derive(Debug, Clone, Default)]
pub enum PeekNode {
    /// The key is not in the file.
    #[default]
    Absent,
    /// `key:` / `key: null`.
    Null,
    /// A scalar (string form, e.g. `online_store: redis`).
    Scalar,
    /// A mapping: its keys and the values of `type` / `registry_type`.
    Map(PeekMap),
    /// Anything else (a sequence, a tagged node).
    Other,
}

/// Keys of a mapping and its tag values.
#[derive(Debug, Clone, Default)]
pub struct PeekMap {
    pub keys: BTreeSet<String>,
    /// Value of `type`: `Some(Ok(s))` for a string, `Some(Err(()))` for a non-string.
    pub type_tag: Option<Result<String, ()>>,
    /// Value of `registry_type`, same convention.
    pub registry_type_tag: Option<Result<String, ()>>,
}

impl<'de> Deserialize<'de> for PeekNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TagValue;
        impl<'de> Visitor<'de> for TagValue {
            type Value = Result<String, ()>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Ok(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Err(()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Err(()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Err(()))
            }
            fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom("YAML tags are not supported here"))
            }
        }
        impl<'de> DeserializeSeed<'de> for TagValue {
            type Value = Result<String, ()>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }

        /// A mapping key read as text (YAML allows non-string keys).
        struct KeyText;
        impl<'de> Visitor<'de> for KeyText {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        impl<'de> DeserializeSeed<'de> for KeyText {
            type Value = String;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
                d.deserialize_str(self)
            }
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PeekNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<PeekNode, E> {
                Ok(PeekNode::Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PeekNode, E> {
                Ok(PeekNode::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PeekNode, E> {
                Ok(PeekNode::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<PeekNode, E> {
                Ok(PeekNode::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PeekNode, E> {
                Ok(PeekNode::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<PeekNode, E> {
                Ok(PeekNode::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<PeekNode, E> {
                Ok(PeekNode::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<PeekNode, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PeekNode::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<PeekNode, A::Error> {
                let mut out = PeekMap::default();
                while let Some(k) = m.next_key_seed(KeyText)? {
                    match k.as_str() {
                        "type" => out.type_tag = Some(m.next_value_seed(TagValue)?),
                        "registry_type" => {
                            out.registry_type_tag = Some(m.next_value_seed(TagValue)?)
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                    out.keys.insert(k);
                }
                Ok(PeekNode::Map(out))
            }
            fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<PeekNode, A::Error> {
                Ok(PeekNode::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The tagged top-level sections, read in a first pass. Other keys are skipped
/// and duplicates are left for the typed pass to report (at the duplicate key).
#[derive(Debug, Clone, Default)]
pub struct Peek {
    pub registry: PeekNode,
    pub online_store: PeekNode,
    pub offline_store: PeekNode,
    pub batch_engine: PeekNode,
    pub auth: PeekNode,
    pub feature_server: PeekNode,
}

impl<'de> Deserialize<'de> for Peek {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Peek;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of feature_store.yaml keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Peek, A::Error> {
                let mut p = Peek::default();
                while let Some(k) = m.next_key::<String>()? {
                    let slot = match k.as_str() {
                        "registry" => &mut p.registry,
                        "online_store" => &mut p.online_store,
                        "offline_store" => &mut p.offline_store,
                        "batch_engine" => &mut p.batch_engine,
                        "auth" => &mut p.auth,
                        "feature_server" => &mut p.feature_server,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = m.next_value()?;
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------
// Dispatching a mapping to a struct while skipping its tag key
// ---------------------------------------------------------------------------

/// A `MapAccess` that hides one key (the tag) from the struct being built, so
/// variant structs can use `deny_unknown_fields` without declaring the tag.
pub struct SkipKey<A> {
    inner: A,
    skip: &'static str,
}

impl<A> SkipKey<A> {
    pub fn new(inner: A, skip: &'static str) -> Self {
        SkipKey { inner, skip }
    }
}

struct SkipSeed<'a, K> {
    seed: &'a mut Option<K>,
    skip: &'static str,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for SkipSeed<'_, K> {
    type Value = Option<K::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for SkipSeed<'_, K> {
    type Value = Option<K::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == self.skip {
            return Ok(None);
        }
        let seed = self
            .seed
            .take()
            .ok_or_else(|| E::custom("internal error: key seed used twice"))?;
        seed.deserialize(de::value::StrDeserializer::<E>::new(v))
            .map(Some)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipKey<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let mut seed = Some(seed);
        loop {
            match self.inner.next_key_seed(SkipSeed {
                seed: &mut seed,
                skip: self.skip,
            })? {
                None => return Ok(None),
                Some(Some(k)) => return Ok(Some(k)),
                Some(None) => {
                    self.inner.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// Build `T` from the rest of a mapping, hiding the `skip` key.
pub fn struct_from_map<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    map: A,
    skip: &'static str,
) -> Result<T, A::Error> {
    T::deserialize(de::value::MapAccessDeserializer::new(SkipKey::new(
        map, skip,
    )))
}

/// Build `T` from an empty mapping (string forms such as `online_store: redis`).
pub fn struct_from_nothing<'de, T: Deserialize<'de>, E: de::Error>() -> Result<T, E> {
    let empty: Vec<(&str, ())> = Vec::new();
    T::deserialize(de::value::MapDeserializer::<_, E>::new(empty.into_iter()))
}

/// Walk a mapping and fail at the value of `key` with `message`, so the error
/// points at the offending tag value. If the key is missing, fail at the mapping.
pub fn fail_at_key<'de, A: MapAccess<'de>, T>(
    mut map: A,
    key: &'static str,
    message: String,
) -> Result<T, A::Error> {
    struct Fail(String);
    impl<'de> DeserializeSeed<'de> for Fail {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl Fail {
        fn err<X: de::Error>(self) -> Result<(), X> {
            Err(X::custom(self.0))
        }
    }
    impl<'de> Visitor<'de> for Fail {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("anything")
        }
        fn visit_str<X: de::Error>(self, _: &str) -> Result<(), X> {
            self.err()
        }
        fn visit_bool<X: de::Error>(self, _: bool) -> Result<(), X> {
            self.err()
        }
        fn visit_i64<X: de::Error>(self, _: i64) -> Result<(), X> {
            self.err()
        }
        fn visit_u64<X: de::Error>(self, _: u64) -> Result<(), X> {
            self.err()
        }
        fn visit_f64<X: de::Error>(self, _: f64) -> Result<(), X> {
            self.err()
        }
        fn visit_unit<X: de::Error>(self) -> Result<(), X> {
            self.err()
        }
        fn visit_none<X: de::Error>(self) -> Result<(), X> {
            self.err()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            self.err()
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            self.err()
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            self.err()
        }
    }

    while let Some(k) = map.next_key::<String>()? {
        if k == key {
            map.next_value_seed(Fail(message.clone()))?;
            break;
        }
        map.next_value::<IgnoredAny>()?;
    }
    Err(de::Error::custom(message))
}
