//! Calendar sync, pure part: Advoware appointments (Termine) ↔ Google Calendar events.
//!
//! No I/O here: the sync engine fetches both sides, maps them with these functions and compares
//! content hashes with the ones stored after the last sync (three-way diff).
//!
//! - [`mapping`]: the Advoware wire type [`AdvowareTermin`], our own Google-side [`EventData`]
//!   (independent of the `google-calendar3` types), the normalised [`Appointment`] both map
//!   through, and [`termin_to_event`] / [`event_to_termin`].
//! - [`recurrence`]: `turnus`/`turnusArt` ↔ `RRULE`, occurrence arithmetic for series ends.
//! - [`hash`]: [`content_hash_termin`] / [`content_hash_event`] over the synced fields only.
//! - [`state`]: the per-employee sync state (hashes of the last synced version of each pair).
//! - [`diff`]: the three-way diff, state × Advoware × Google → a [`diff::Plan`] of actions.
//! - [`scope`]: the date window, which pairs and events a run is about, the event mirror.
//!
//! Advoware times are Europe/Berlin wall-clock times; Google gets UTC instants plus
//! `timeZone: "Europe/Berlin"`. See [`mapping::berlin_to_utc`] for the DST rules.

pub mod diff;
pub mod hash;
pub mod mapping;
pub mod recurrence;
pub mod scope;
pub mod state;

pub use hash::{content_hash_event, content_hash_termin};
pub use mapping::{
    event_to_termin, termin_to_event, AdvowareTermin, Appointment, ContentMode, EventData,
    EventTime, FRNR_PROPERTY, TIME_ZONE,
};

use chrono::NaiveDate;

/// Why an appointment or event cannot be mapped. A concrete enum because the caller branches on
/// it: data errors and unsupported recurrences are logged and the item skipped, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field the mapping needs is absent or empty.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A date field that is not `YYYY-MM-DD[T…]`.
    #[error("field {field}: unparsable date {value:?}")]
    InvalidDate {
        /// The Advoware field name.
        field: &'static str,
        /// The value as sent.
        value: String,
    },
    /// A time field that is not `HH:MM[:SS[.fff]]`.
    #[error("field {field}: unparsable time {value:?}")]
    InvalidTime {
        /// The Advoware field name.
        field: &'static str,
        /// The value as sent.
        value: String,
    },
    /// `turnus` is negative or absurdly large.
    #[error("invalid turnus {0}")]
    InvalidTurnus(i64),
    /// A recurring appointment whose `turnusArt` is not 1–4.
    #[error("unknown turnusArt {0}")]
    UnknownTurnusArt(i64),
    /// The `frNr` extended property of an event is not a number.
    #[error("invalid frNr property {0:?}")]
    InvalidFrNr(String),
    /// An event whose start and end are not both dates or both date-times.
    #[error("event start and end mix all-day and timed values")]
    MixedEventTimes,
    /// A syntactically broken recurrence rule.
    #[error("invalid recurrence: {0}")]
    InvalidRecurrence(String),
    /// A valid recurrence Advoware cannot express (several weekdays, exceptions, multi-day
    /// occurrences, …).
    #[error("recurrence not supported by Advoware: {0}")]
    UnsupportedRecurrence(String),
    /// A series whose end lies too many periods away to compute.
    #[error("recurring series too long to compute its end")]
    SeriesTooLong,
    /// A date outside the range the mapping can represent.
    #[error("date out of range: {0}")]
    DateOutOfRange(NaiveDate),
}
