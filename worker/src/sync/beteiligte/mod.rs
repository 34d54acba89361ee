//! Beteiligte sync, pure part: EspoCRM `CBeteiligte` ↔ Advoware `Beteiligte` master data.
//!
//! No I/O here (the handler that fetches, locks and writes is the next step of issue 11):
//!
//! - [`model`]: the wire types of both sides — [`EspoBeteiligte`] (with the sync fields) and
//!   [`AdvowareBeteiligter`] (unknown fields kept in a flattened map, because Advoware's `PUT`
//!   replaces the whole record: read, modify, write back everything) — and [`SyncStatus`].
//! - [`mapping`]: the normalised [`Stammdaten`] both sides map through (person or company, name,
//!   first name, Anrede, title, Rechtsform, date of birth, Handelsregister), the normalisation
//!   rules, and [`changed_fields`] naming what differs.
//! - [`decide`](mod@decide): which side is newer — `espocrm_newer` / `advoware_newer` / `conflict` /
//!   `no_change` — from rowId, `modifiedAt` vs `advowareLastSync`, and the mapped content, so
//!   that our own write-back never causes a write in the other direction.
//! - [`status`]: the `syncStatus` machine — the EspoCRM update for each outcome (syncing, clean,
//!   failed → permanently_failed, deleted_in_advoware, conflict, 24 h reset) and the action a
//!   decision leads to under the [`ConflictPolicy`].
//!
//! - [`kommunikation`]: e-mail/phone entries, 3-way against the last synced base (issue 12).
//! - [`adressen`]: `CAdressen` ↔ Advoware `adressen[]`, what Advoware cannot write becomes a
//!   manual task (issue 12).
//!
//! Field names of `CBeteiligte` beyond the sync fields are the firm's customisation and not
//! documented publicly; they are constants in [`model::espo_fields`] (see the README).

pub mod adressen;
pub mod decide;
pub mod kommunikation;
pub mod mapping;
pub mod model;
pub mod status;

pub use decide::{content_hash, decide, parse_espo_datetime, DecisionInput, SyncDecision};
pub use mapping::{
    advoware_to_stammdaten, changed_fields, espo_to_stammdaten, to_advoware, to_espo_patch, Anrede,
    Handelsregister, Kind, Rechtsform, Stammdaten,
};
pub use model::{espo_betnr, AdvowareBeteiligter, EspoBeteiligte, EspoStammdatenPatch, SyncStatus};
pub use status::{due_for_reset, plan, Action, ConflictPolicy, StatusUpdate};

/// Why a record cannot be mapped. Permanent: the data must be fixed by a person, so the
/// handler writes it to `syncErrorMessage` and does not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field the mapping needs is absent or empty (e.g. a person without last name).
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A date that is not `YYYY-MM-DD[T…]`.
    #[error("field {field}: unparsable date {value:?}")]
    InvalidDate {
        /// The field name on the side it came from.
        field: &'static str,
        /// The value as sent.
        value: String,
    },
}
