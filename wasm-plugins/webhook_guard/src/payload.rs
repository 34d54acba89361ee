//! Payload shape checks (pure; not in `bitbylaw-core` because only this
//! filter needs them).
//!
//! The filter parses the body once (`bitbylaw_core::canonical::Document`)
//! for the dedup key and checks the shape on that same parse with
//! [`check_document`]; nothing here reads the bytes again.

use std::fmt;

use bitbylaw_core::canonical::{Document, Kind, Value};

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

/// Checks `body` against the configured shape (parsing it strictly first).
/// Returns the number of events it carries (batch length, else 1).
pub fn check_shape(body: &[u8], shape: Payload) -> Result<usize, ShapeError> {
    if shape == Payload::Any {
        return Ok(1);
    }
    let doc = Document::parse(body).map_err(|_| ShapeError::NotJson)?;
    check_document(doc.root(), shape)
}

/// Checks an already parsed body against the configured shape.
/// Returns the number of events it carries (batch length, else 1).
pub fn check_document(root: &Value<'_>, shape: Payload) -> Result<usize, ShapeError> {
    match shape {
        Payload::Any => Ok(1),
        Payload::Object => match root.kind() {
            Kind::Object => Ok(1),
            _ => Err(ShapeError::NotObject),
        },
        Payload::EspoCrmBatch => {
            let items = root.as_array().ok_or(ShapeError::NotArray)?;
            if items.is_empty() {
                return Err(ShapeError::EmptyBatch);
            }
            match items.iter().position(|item| !has_string_id(item)) {
                Some(i) => Err(ShapeError::BadItem(i)),
                None => Ok(items.len()),
            }
        }
    }
}

/// Whether `item` is an object whose `id` is a non-empty string.
fn has_string_id(item: &Value<'_>) -> bool {
    item.get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.is_empty())
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

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value as J;

    /// Independent reference: the verdict on a `serde_json::Value`.
    fn reference(v: &J, shape: Payload) -> Result<usize, ShapeError> {
        match shape {
            Payload::Any => Ok(1),
            Payload::Object => match v {
                J::Object(_) => Ok(1),
                _ => Err(ShapeError::NotObject),
            },
            Payload::EspoCrmBatch => {
                let J::Array(items) = v else {
                    return Err(ShapeError::NotArray);
                };
                if items.is_empty() {
                    return Err(ShapeError::EmptyBatch);
                }
                let ok = |i: &J| matches!(i.get("id"), Some(J::String(s)) if !s.is_empty());
                match items.iter().position(|i| !ok(i)) {
                    Some(i) => Err(ShapeError::BadItem(i)),
                    None => Ok(items.len()),
                }
            }
        }
    }

    fn leaf() -> impl Strategy<Value = J> {
        prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i32>().prop_map(J::from),
            prop_oneof![Just(String::new()), "[a-z]{1,3}", Just("id".to_owned())]
                .prop_map(J::String),
        ]
    }

    fn json() -> impl Strategy<Value = J> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
                proptest::collection::btree_map(
                    prop_oneof![Just("id".to_owned()), "[a-z]{1,2}"],
                    inner,
                    0..4
                )
                .prop_map(|m| J::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `id` written as `\u0069d` sometimes, to exercise unescaped keys.
    fn render(v: &J, escape_id: bool) -> String {
        let text = v.to_string();
        if escape_id {
            text.replace("\"id\"", "\"\\u0069d\"")
        } else {
            text
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn verdict_matches_reference(v in json(), esc in any::<bool>()) {
            let body = render(&v, esc);
            for shape in [Payload::EspoCrmBatch, Payload::Object, Payload::Any] {
                prop_assert_eq!(check_shape(body.as_bytes(), shape), reference(&v, shape), "{}", body);
            }
        }
    }
}
