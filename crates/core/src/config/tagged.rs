//! Tagged sections (`online_store: {type: ...}`, `registry: {registry_type: ...}`, ...).
//!
//! Feast picks a pydantic model from the tag and validates the whole mapping
//! with it. Here the tag was read in the first pass ([`PeekNode`]), so the
//! variant struct can be deserialized straight from the YAML event stream and
//! every error keeps its line and column.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::de::{PeekNode, fail_at_key};
use super::error::invalid;

/// A section selected by a tag.
pub(crate) trait Tagged: Sized {
    /// Variant selector.
    type Kind;
    /// The tag key (`type` or `registry_type`).
    const TAG: &'static str;
    /// What the visitor expects, for type errors.
    const EXPECTING: &'static str;

    /// Resolve a tag value. `keys` are the keys of the mapping (None for the
    /// string form). The error message may carry the markers of `error.rs`.
    fn resolve(name: &str, keys: Option<&BTreeSet<String>>) -> Result<Self::Kind, String>;

    /// The variant used when a mapping has no tag.
    fn untagged(keys: &BTreeSet<String>) -> Result<Self::Kind, String>;

    /// Build a variant from the remaining entries of the mapping (the tag is hidden).
    fn from_map<'de, A: MapAccess<'de>>(kind: Self::Kind, map: A) -> Result<Self, A::Error>;

    /// Build a variant from its name alone (`online_store: redis`).
    fn from_name<E: de::Error>(kind: Self::Kind) -> Result<Self, E>;

    /// Value for `section: null`. `Ok(None)` when Feast treats it as "not configured".
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Err(E::invalid_type(de::Unexpected::Unit, &Self::EXPECTING))
    }

    /// Value for a plain string: by default the string names a variant.
    fn from_string<E: de::Error>(s: &str) -> Result<Option<Self>, E> {
        let kind = Self::resolve(s, None).map_err(E::custom)?;
        Self::from_name(kind).map(Some)
    }
}

/// Seed that deserializes a tagged section using the tag found in pass 1.
pub(crate) struct TaggedSeed<'p, T> {
    peek: &'p PeekNode,
    marker: PhantomData<T>,
}

impl<'p, T> TaggedSeed<'p, T> {
    pub fn new(peek: &'p PeekNode) -> Self {
        TaggedSeed {
            peek,
            marker: PhantomData,
        }
    }
}

impl<'de, T: Tagged> DeserializeSeed<'de> for TaggedSeed<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Tagged> Visitor<'de> for TaggedSeed<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
        T::from_string(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        T::from_null()
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        T::from_null()
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        let empty = BTreeSet::new();
        let (keys, tag) = match self.peek {
            PeekNode::Map(pm) => {
                let tag = if T::TAG == "registry_type" {
                    pm.registry_type_tag.clone()
                } else {
                    pm.type_tag.clone()
                };
                (&pm.keys, tag)
            }
            _ => (&empty, None),
        };
        let kind = match tag {
            None => T::untagged(keys).map_err(de::Error::custom)?,
            Some(Err(())) => {
                return fail_at_key(
                    map,
                    T::TAG,
                    super::error::INVALID_MARK.to_owned() + "invalid type: expected a string",
                );
            }
            Some(Ok(name)) => match T::resolve(&name, Some(keys)) {
                Ok(kind) => kind,
                Err(msg) => return fail_at_key(map, T::TAG, msg),
            },
        };
        T::from_map(kind, map).map(Some)
    }
}

/// Run a validation at the end of a section; the error points at the mapping.
pub(crate) fn validated<T, E: de::Error>(
    value: T,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, E> {
    check(&value).map_err(invalid)?;
    Ok(value)
}

/// Message for a tag value that Feast knows but feast-rs does not implement.
pub(crate) fn unsupported_msg(what: &str, name: &str, supported: &[&str]) -> String {
    format!(
        "{}{what} type `{name}` is valid in Feast but not supported by feast-rs (supported: {})",
        super::error::UNSUPPORTED_MARK,
        supported.join(", ")
    )
}

/// Message for a tag value that Feast itself rejects.
pub(crate) fn unknown_msg(what: &str, name: &str, supported: &[&str]) -> String {
    format!(
        "{}unknown {what} type `{name}`, expected one of {}",
        super::error::INVALID_MARK,
        supported
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
