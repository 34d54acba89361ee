//! Payload shape checks (pure; not in `bitbylaw-core` because only this
//! filter needs them).
//!
//! Runs after `bitbylaw_core::canonical::dedup_key` has accepted the body as
//! strict JSON, so only the *shape* is checked here. `serde` visitors walk the
//! document without building a tree: other members are skipped as
//! `IgnoredAny`, which keeps the check cheap on large batches.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::Payload;

/// Why a payload has the wrong shape (logged; clients get `invalid_payload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// Not valid JSON at all (should have been caught before).
    NotJson,
    /// An array was expected.
    NotArray,
    /// The batch is empty.
    EmptyBatch,
    /// A batch element is not an object with a string `id`.
    BadItem(usize),
    /// An object was expected.
    NotObject,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::NotJson => f.write_str("not JSON"),
            ShapeError::NotArray => f.write_str("expected a JSON array (EspoCRM batch)"),
            ShapeError::EmptyBatch => f.write_str("empty batch"),
            ShapeError::BadItem(i) => write!(f, "batch item {i} is not an object with a string id"),
            ShapeError::NotObject => f.write_str("expected a JSON object"),
        }
    }
}

/// Checks `body` (already known to be JSON) against the configured shape.
/// Returns the number of events it carries (batch length, else 1).
pub fn check_shape(body: &[u8], shape: Payload) -> Result<usize, ShapeError> {
    match shape {
        Payload::Any => Ok(1),
        Payload::Object => {
            let mut de = serde_json::Deserializer::from_slice(body);
            de.deserialize_any(ObjectVisitor)
                .map_err(|_| ShapeError::NotJson)?
        }
        Payload::EspoCrmBatch => {
            let mut de = serde_json::Deserializer::from_slice(body);
            de.deserialize_any(BatchVisitor)
                .map_err(|_| ShapeError::NotJson)?
        }
    }
}

/// Visits the top-level value; the inner `Result` carries the shape verdict
/// so that a wrong shape is not confused with a syntax error.
struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Result<usize, ShapeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Ok(1))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(ShapeError::NotObject))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotObject))
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Result<usize, ShapeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n = 0usize;
        let mut bad = None;
        while let Some(item) = seq.next_element::<Item>()? {
            if !item.0 && bad.is_none() {
                bad = Some(n);
            }
            n += 1;
        }
        Ok(match (n, bad) {
            (0, _) => Err(ShapeError::EmptyBatch),
            (_, Some(i)) => Err(ShapeError::BadItem(i)),
            _ => Ok(n),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(ShapeError::NotArray))
    }
}

/// One batch element: `true` when it is an object with a string `id`.
struct Item(bool);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut has_id = false;
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 {
                has_id = map.next_value::<IsNonEmptyString>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Item(has_id))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item(false))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
        Ok(Item(false))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
        Ok(Item(false))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
        Ok(Item(false))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
        Ok(Item(false))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Item, E> {
        Ok(Item(false))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
        Ok(Item(false))
    }
}

/// An object key: `true` when it is `id`.
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrIs(|s| s == "id")).map(Key)
    }
}

/// A value: `true` when it is a non-empty string.
struct IsNonEmptyString(bool);

impl<'de> Deserialize<'de> for IsNonEmptyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrIs(|s| !s.is_empty()))
            .map(IsNonEmptyString)
    }
}

/// Visits a string (borrowed or unescaped) and applies a predicate; any
/// other value yields `false`.
struct StrIs(fn(&str) -> bool);

impl<'de> Visitor<'de> for StrIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        Ok((self.0)(s))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn espocrm_batches() {
        let ok = br#"[{"id":"a","x":[1,{"id":5}]},{"name":"n","id":"b\u0041"}]"#;
        assert_eq!(check_shape(ok, Payload::EspoCrmBatch), Ok(2));
        assert_eq!(
            check_shape(b"[]", Payload::EspoCrmBatch),
            Err(ShapeError::EmptyBatch)
        );
        assert_eq!(
            check_shape(br#"{"id":"a"}"#, Payload::EspoCrmBatch),
            Err(ShapeError::NotArray)
        );
        assert_eq!(
            check_shape(br#"[{"id":"a"},{"id":1}]"#, Payload::EspoCrmBatch),
            Err(ShapeError::BadItem(1))
        );
        assert_eq!(
            check_shape(br#"[{"id":""}]"#, Payload::EspoCrmBatch),
            Err(ShapeError::BadItem(0))
        );
        assert_eq!(
            check_shape(br#"[{"x":"a"}]"#, Payload::EspoCrmBatch),
            Err(ShapeError::BadItem(0))
        );
        assert_eq!(
            check_shape(br#"["a"]"#, Payload::EspoCrmBatch),
            Err(ShapeError::BadItem(0))
        );
        assert_eq!(
            check_shape(br#"[[{"id":"a"}]]"#, Payload::EspoCrmBatch),
            Err(ShapeError::BadItem(0))
        );
        assert_eq!(
            check_shape(b"\"s\"", Payload::EspoCrmBatch),
            Err(ShapeError::NotArray)
        );
        assert_eq!(
            check_shape(b"[{", Payload::EspoCrmBatch),
            Err(ShapeError::NotJson)
        );
    }

    #[test]
    fn objects() {
        assert_eq!(check_shape(br#"{"a":[1,2]}"#, Payload::Object), Ok(1));
        assert_eq!(
            check_shape(b"[1]", Payload::Object),
            Err(ShapeError::NotObject)
        );
        assert_eq!(
            check_shape(b"null", Payload::Object),
            Err(ShapeError::NotObject)
        );
        assert_eq!(check_shape(b"null", Payload::Any), Ok(1));
    }
}
