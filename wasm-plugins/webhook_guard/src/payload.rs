//! Payload shape checks (pure; not in `bitbylaw-core` because only this
//! filter needs them).
//!
//! The filter parses the body once (`bitbylaw_core::canonical::Document`)
//! for the dedup key and checks the shape on that same parse with
//! [`check_document`]; nothing here reads the bytes again.

use std::fmt;

use bitbylaw_core::batch::{self, BatchError, InvalidEntry};
use bitbylaw_core::canonical::{Document, Kind, Value};

use crate::config::Payload;

/// Why a payload has the wrong shape (logged; clients get `invalid_payload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// Not valid JSON at all (should have been caught before).
    NotJson,
    /// The EspoCRM batch rule refuses the whole batch (`bitbylaw_core::batch`).
    Batch(BatchError),
    /// An object was expected.
    NotObject,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::NotJson => f.write_str("not JSON"),
            ShapeError::Batch(e) => write!(f, "EspoCRM batch: {e}"),
            ShapeError::NotObject => f.write_str("expected a JSON object"),
        }
    }
}

/// Checks `body` against the configured shape (parsing it strictly first).
/// Returns the batch entries to skip (see [`check_document`]).
pub fn check_shape(body: &[u8], shape: Payload) -> Result<Vec<InvalidEntry>, ShapeError> {
    if shape == Payload::Any {
        return Ok(Vec::new());
    }
    let doc = Document::parse(body).map_err(|_| ShapeError::NotJson)?;
    check_document(doc.root(), shape)
}

/// Checks an already parsed body against the configured shape.
///
/// An EspoCRM batch is judged by the rule the worker applies too
/// ([`bitbylaw_core::batch`]): it passes with at least one usable entry,
/// and the unusable ones are returned so the filter can log and count them
/// (the worker skips and reports them). Other shapes skip nothing.
pub fn check_document(root: &Value<'_>, shape: Payload) -> Result<Vec<InvalidEntry>, ShapeError> {
    match shape {
        Payload::Any => Ok(Vec::new()),
        Payload::Object => match root.kind() {
            Kind::Object => Ok(Vec::new()),
            _ => Err(ShapeError::NotObject),
        },
        Payload::EspoCrmBatch => batch::check_canonical(root)
            .map(|v| v.invalid)
            .map_err(ShapeError::Batch),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use bitbylaw_core::batch::EntryProblem;

    fn skipped(body: &str) -> Vec<String> {
        check_shape(body.as_bytes(), Payload::EspoCrmBatch)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn espocrm_batches() {
        let ok = br#"[{"id":"a","x":[1,{"id":5}]},{"name":"n","id":"b\u0041"}]"#;
        assert_eq!(check_shape(ok, Payload::EspoCrmBatch), Ok(Vec::new()));
        assert_eq!(
            check_shape(b"[]", Payload::EspoCrmBatch),
            Err(ShapeError::Batch(BatchError::Empty))
        );
        assert_eq!(
            check_shape(br#"{"id":"a"}"#, Payload::EspoCrmBatch),
            Err(ShapeError::Batch(BatchError::NotArray))
        );
        // usable entries pass, the others are reported
        assert_eq!(skipped(r#"[{"id":"a"},{"id":1}]"#), ["1:no_string_id"]);
        assert_eq!(skipped(r#"[{"id":"a b"},{"id":"c"}]"#), ["0:invalid_id"]);
        assert_eq!(
            check_shape(br#"[{"id":""}]"#, Payload::EspoCrmBatch),
            Err(ShapeError::Batch(BatchError::NoUsableEntry(vec![
                InvalidEntry {
                    index: 0,
                    problem: EntryProblem::InvalidId
                }
            ])))
        );
        for bad in [r#"[{"x":"a"}]"#, r#"["a"]"#, r#"[[{"id":"a"}]]"#] {
            assert!(
                matches!(
                    check_shape(bad.as_bytes(), Payload::EspoCrmBatch),
                    Err(ShapeError::Batch(BatchError::NoUsableEntry(_)))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            check_shape(b"\"s\"", Payload::EspoCrmBatch),
            Err(ShapeError::Batch(BatchError::NotArray))
        );
        assert_eq!(
            check_shape(b"[{", Payload::EspoCrmBatch),
            Err(ShapeError::NotJson)
        );
    }

    #[test]
    fn objects() {
        assert_eq!(
            check_shape(br#"{"a":[1,2]}"#, Payload::Object),
            Ok(Vec::new())
        );
        assert_eq!(
            check_shape(b"[1]", Payload::Object),
            Err(ShapeError::NotObject)
        );
        assert_eq!(
            check_shape(b"null", Payload::Object),
            Err(ShapeError::NotObject)
        );
        assert_eq!(check_shape(b"null", Payload::Any), Ok(Vec::new()));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value as J;

    /// Reference: the verdict on a `serde_json::Value` (the worker's parse).
    fn reference(v: &J, shape: Payload) -> Result<Vec<InvalidEntry>, ShapeError> {
        match shape {
            Payload::Any => Ok(Vec::new()),
            Payload::Object => match v {
                J::Object(_) => Ok(Vec::new()),
                _ => Err(ShapeError::NotObject),
            },
            Payload::EspoCrmBatch => batch::check_json(v)
                .map(|v| v.invalid)
                .map_err(ShapeError::Batch),
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
