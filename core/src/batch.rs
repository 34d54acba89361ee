//! EspoCRM webhook batches: the one rule, applied by `webhook_guard` at the
//! edge and by the worker's intake, for which entries of a batch are usable.
//!
//! EspoCRM does not retry a 400, so refusing a whole batch for one bad entry
//! would silently lose the good ones. The rule therefore judges each entry on
//! its own: a batch passes when it is a non-empty JSON array of at most
//! [`MAX_BATCH_ENTRIES`] entries with at least one usable entry; the unusable
//! entries are reported (edge: logged and counted; worker: logged, counted
//! and listed in the 202 body) and skipped. Only a batch with nothing usable
//! in it, or a body that is no batch at all, is refused — at the edge already,
//! with the same verdict the worker would give.
//!
//! The rule works on [`Entry`] views so that the filter (which parses with
//! [`crate::canonical`]) and the worker (`serde_json`) share it unchanged.

use std::fmt;

use crate::canonical;

/// Most entries one batch may carry. EspoCRM sends up to 20 per request (its
/// batch size is configurable); a larger fan-out is refused as a whole.
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// Longest entity id accepted (ids end up in Redis keys and log lines).
pub const MAX_ENTITY_ID_LEN: usize = 128;

/// Whether `id` is usable as an entity id: 1–128 ASCII letters, digits,
/// `-`, `_`, `.`, `@` (EspoCRM's 17-hex ids, UUIDs, e-mail-like custom ids).
pub fn is_valid_entity_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ENTITY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// One batch entry as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Not a JSON object.
    NotObject,
    /// An object; `id` is its `id` member when that is a string.
    Object { id: Option<&'a str> },
}

impl<'a> Entry<'a> {
    /// The view of a `serde_json` value.
    pub fn of_json(v: &'a serde_json::Value) -> Entry<'a> {
        match v {
            serde_json::Value::Object(m) => Entry::Object {
                id: m.get("id").and_then(serde_json::Value::as_str),
            },
            _ => Entry::NotObject,
        }
    }

    /// The view of a [`canonical::Value`] (the filter's parse).
    pub fn of_canonical(v: &'a canonical::Value<'a>) -> Entry<'a> {
        match v.kind() {
            canonical::Kind::Object => Entry::Object {
                id: v.get("id").and_then(canonical::Value::as_str),
            },
            _ => Entry::NotObject,
        }
    }

    /// The entry's entity id, or why it has none usable.
    pub fn entity_id(self) -> Result<&'a str, EntryProblem> {
        match self {
            Entry::NotObject => Err(EntryProblem::NotObject),
            Entry::Object { id: None } => Err(EntryProblem::NoStringId),
            Entry::Object { id: Some(id) } if is_valid_entity_id(id) => Ok(id),
            Entry::Object { id: Some(_) } => Err(EntryProblem::InvalidId),
        }
    }
}

/// Why one entry is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProblem {
    /// The entry is not a JSON object.
    NotObject,
    /// The object has no string `id`.
    NoStringId,
    /// The `id` is empty, too long or has characters outside the rule.
    InvalidId,
}

impl EntryProblem {
    /// A stable code for logs, metrics and response bodies.
    pub fn code(self) -> &'static str {
        match self {
            EntryProblem::NotObject => "not_object",
            EntryProblem::NoStringId => "no_string_id",
            EntryProblem::InvalidId => "invalid_id",
        }
    }
}

/// An unusable entry: its position in the batch and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEntry {
    pub index: usize,
    pub problem: EntryProblem,
}

impl fmt::Display for InvalidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.index, self.problem.code())
    }
}

/// Why a whole batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not a JSON array.
    #[error("expected a JSON array of objects with a string \"id\"")]
    NotArray,
    /// The array is empty.
    #[error("the batch is empty")]
    Empty,
    /// More than [`MAX_BATCH_ENTRIES`] entries.
    #[error("the batch has {0} entries (max {MAX_BATCH_ENTRIES})")]
    TooMany(usize),
    /// Not one entry is usable (the first few problems are listed).
    #[error("no usable entry in the batch ({})", list(.0))]
    NoUsableEntry(Vec<InvalidEntry>),
}

fn list(entries: &[InvalidEntry]) -> String {
    let shown: Vec<String> = entries.iter().take(10).map(ToString::to_string).collect();
    let more = entries.len().saturating_sub(10);
    if more > 0 {
        format!("{}, … {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The verdict on a batch that passes: which entries are usable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Indexes of the usable entries, in order.
    pub usable: Vec<usize>,
    /// The unusable entries, in order (reported, never enqueued).
    pub invalid: Vec<InvalidEntry>,
}

/// Judges a batch: `entries` is `None` when the body is not an array.
pub fn check<'a, I>(entries: Option<I>) -> Result<Verdict, BatchError>
where
    I: ExactSizeIterator<Item = Entry<'a>>,
{
    let entries = entries.ok_or(BatchError::NotArray)?;
    match entries.len() {
        0 => return Err(BatchError::Empty),
        n if n > MAX_BATCH_ENTRIES => return Err(BatchError::TooMany(n)),
        _ => {}
    }
    let mut verdict = Verdict::default();
    for (index, entry) in entries.enumerate() {
        match entry.entity_id() {
            Ok(_) => verdict.usable.push(index),
            Err(problem) => verdict.invalid.push(InvalidEntry { index, problem }),
        }
    }
    if verdict.usable.is_empty() {
        return Err(BatchError::NoUsableEntry(verdict.invalid));
    }
    Ok(verdict)
}

/// [`check`] on a `serde_json` body (the worker).
pub fn check_json(body: &serde_json::Value) -> Result<Verdict, BatchError> {
    check(body.as_array().map(|a| a.iter().map(Entry::of_json)))
}

/// [`check`] on a [`canonical::Value`] body (the filter).
pub fn check_canonical(body: &canonical::Value<'_>) -> Result<Verdict, BatchError> {
    check(body.as_array().map(|a| a.iter().map(Entry::of_canonical)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(v: serde_json::Value) -> Result<Verdict, BatchError> {
        let text = v.to_string();
        let doc = canonical::Document::parse(text.as_bytes()).unwrap();
        let a = check_canonical(doc.root());
        let b = check_json(&v);
        assert_eq!(a, b, "{text}");
        a
    }

    #[test]
    fn entity_ids() {
        assert!(is_valid_entity_id("6745a1b2c3d4e5f60"));
        assert!(is_valid_entity_id("a-b_c.d@e"));
        assert!(is_valid_entity_id(&"a".repeat(128)));
        assert!(!is_valid_entity_id(&"a".repeat(129)));
        assert!(!is_valid_entity_id(""));
        assert!(!is_valid_entity_id("a b"));
        assert!(!is_valid_entity_id("a/b"));
        assert!(!is_valid_entity_id("ä"));
    }

    #[test]
    fn usable_part_passes_and_the_rest_is_reported() {
        let v =
            both(json!([{"id": "a1"}, {"id": "a b"}, 5, {"name": "x"}, {"id": 7}, {"id": "b2"}]))
                .unwrap();
        assert_eq!(v.usable, [0, 5]);
        let codes: Vec<String> = v.invalid.iter().map(ToString::to_string).collect();
        assert_eq!(
            codes,
            [
                "1:invalid_id",
                "2:not_object",
                "3:no_string_id",
                "4:no_string_id"
            ]
        );
    }

    #[test]
    fn whole_batch_refusals() {
        assert_eq!(both(json!({"id": "a"})), Err(BatchError::NotArray));
        assert_eq!(both(json!("s")), Err(BatchError::NotArray));
        assert_eq!(both(json!([])), Err(BatchError::Empty));
        let err = both(json!([{"id": ""}, ["x"]])).unwrap_err();
        assert_eq!(
            err,
            BatchError::NoUsableEntry(vec![
                InvalidEntry {
                    index: 0,
                    problem: EntryProblem::InvalidId
                },
                InvalidEntry {
                    index: 1,
                    problem: EntryProblem::NotObject
                },
            ])
        );
        assert!(err.to_string().contains("0:invalid_id, 1:not_object"));
        let max: Vec<_> = (0..MAX_BATCH_ENTRIES)
            .map(|i| json!({"id": format!("e{i}")}))
            .collect();
        assert_eq!(both(json!(max)).unwrap().usable.len(), MAX_BATCH_ENTRIES);
        let over: Vec<_> = (0..=MAX_BATCH_ENTRIES)
            .map(|i| json!({"id": format!("e{i}")}))
            .collect();
        assert_eq!(
            both(json!(over)),
            Err(BatchError::TooMany(MAX_BATCH_ENTRIES + 1))
        );
    }
}
