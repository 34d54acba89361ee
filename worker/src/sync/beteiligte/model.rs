//! Wire types of both sides and the sync status.
//!
//! Text and date fields stay strings here: a malformed value must become a
//! [`super::MappingError`] (the record ends `failed` with a reason), not a failed decode of
//! the whole record.

use std::fmt;
use std::str::FromStr;

use bitbylaw_core::ids::{BetNr, EspoId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// EspoCRM attribute names of `CBeteiligte` used by the sync (one place, so a differing
/// customisation is a one-line change).
pub mod espo_fields {
    pub const ENTITY: &str = "CBeteiligte";
    pub const FIRST_NAME: &str = "firstName";
    pub const LAST_NAME: &str = "lastName";
    pub const FIRMENNAME: &str = "firmenname";
    pub const SALUTATION: &str = "salutationName";
    pub const TITEL: &str = "titel";
    pub const RECHTSFORM: &str = "rechtsform";
    pub const DATE_OF_BIRTH: &str = "dateOfBirth";
    pub const HR_NUMMER: &str = "handelsregisterNummer";
    pub const HR_GERICHT: &str = "handelsregisterGericht";
    pub const BETNR: &str = "betnr";
    pub const ADVOWARE_ROW_ID: &str = "advowareRowId";
    pub const SYNC_STATUS: &str = "syncStatus";
    pub const ADVOWARE_LAST_SYNC: &str = "advowareLastSync";
    pub const SYNC_ERROR_MESSAGE: &str = "syncErrorMessage";
    pub const SYNC_RETRY_COUNT: &str = "syncRetryCount";
    pub const ADVOWARE_DELETED_AT: &str = "advowareDeletedAt";
    pub const MODIFIED_AT: &str = "modifiedAt";
    pub const EMAIL_ADDRESS_DATA: &str = "emailAddressData";
    pub const PHONE_NUMBER_DATA: &str = "phoneNumberData";
    /// The firm's address entity (issue 12; uncertain, see README) and its link attribute to
    /// the `CBeteiligte`.
    pub const ADRESSEN_ENTITY: &str = "CAdressen";
    pub const ADRESSEN_LINK: &str = "beteiligteId";
}

/// The seeds' `syncStatus` values of a `CBeteiligte` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncStatus {
    /// New in EspoCRM, not yet in Advoware.
    PendingSync,
    /// Changed in EspoCRM since the last sync.
    Dirty,
    /// A job is working on it right now (visible in the CRM).
    Syncing,
    /// Both sides equal after the last sync.
    Clean,
    /// The last attempt failed; retried by the 15-minute check.
    Failed,
    /// Both sides changed; resolved by policy, a person was notified.
    Conflict,
    /// Advoware answered 404; never re-created automatically.
    DeletedInAdvoware,
    /// Failed too often; reset after 24 h by the check.
    PermanentlyFailed,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 8] = [
        Self::PendingSync,
        Self::Dirty,
        Self::Syncing,
        Self::Clean,
        Self::Failed,
        Self::Conflict,
        Self::DeletedInAdvoware,
        Self::PermanentlyFailed,
    ];

    /// The value stored in EspoCRM.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingSync => "pending_sync",
            Self::Dirty => "dirty",
            Self::Syncing => "syncing",
            Self::Clean => "clean",
            Self::Failed => "failed",
            Self::Conflict => "conflict",
            Self::DeletedInAdvoware => "deleted_in_advoware",
            Self::PermanentlyFailed => "permanently_failed",
        }
    }

    /// The states the 15-minute check picks up as "unclean" (seeds: query 1).
    pub fn is_unclean(self) -> bool {
        matches!(self, Self::PendingSync | Self::Dirty | Self::Failed)
    }

    /// Status and retry count after one more failed attempt: `failed` below `max_retries`
    /// failures, `permanently_failed` from then on (seeds: 5).
    pub fn after_failure(retry_count: u32, max_retries: u32) -> (Self, u32) {
        let count = retry_count.saturating_add(1);
        if count >= max_retries {
            (Self::PermanentlyFailed, count)
        } else {
            (Self::Failed, count)
        }
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `syncStatus` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown syncStatus {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for SyncStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl Serialize for SyncStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SyncStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `null`, absent and `""` (EspoCRM's empty enum) all mean "no status".
fn empty_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SyncStatus>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// A `CBeteiligte` record as EspoCRM returns it (the attributes the sync reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EspoBeteiligte {
    pub id: Option<EspoId>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub firmenname: Option<String>,
    #[serde(default)]
    pub salutation_name: Option<String>,
    #[serde(default)]
    pub titel: Option<String>,
    #[serde(default)]
    pub rechtsform: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub handelsregister_nummer: Option<String>,
    #[serde(default)]
    pub handelsregister_gericht: Option<String>,
    // ----- sync fields
    #[serde(default)]
    pub betnr: Option<BetNr>,
    #[serde(default)]
    pub advoware_row_id: Option<String>,
    #[serde(default, deserialize_with = "empty_status")]
    pub sync_status: Option<SyncStatus>,
    /// `YYYY-MM-DD HH:mm:ss` UTC.
    #[serde(default)]
    pub advoware_last_sync: Option<String>,
    #[serde(default)]
    pub sync_error_message: Option<String>,
    #[serde(default)]
    pub sync_retry_count: Option<u32>,
    #[serde(default)]
    pub advoware_deleted_at: Option<String>,
    /// Maintained by EspoCRM on every change, `YYYY-MM-DD HH:mm:ss` UTC.
    #[serde(default)]
    pub modified_at: Option<String>,
    // ----- Kommunikation (issue 12): `None` when the read did not carry the array
    /// E-mail addresses with their flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address_data: Option<Vec<super::kommunikation::EspoEmailAddress>>,
    /// Phone numbers with type and flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_data: Option<Vec<super::kommunikation::EspoPhoneNumber>>,
    /// The primary phone number as EspoCRM stores it. Read only, for the 3CX lookup index
    /// (`handlers::telephony::index::IndexingEspo`); the sync does not map it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// The master-data attributes the sync writes to EspoCRM, all of them: `null` clears a field
/// that was cleared in Advoware. Sent as a partial `PUT` (the sync fields go in the same call).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EspoStammdatenPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub firmenname: Option<String>,
    pub salutation_name: Option<String>,
    pub titel: Option<String>,
    pub rechtsform: Option<String>,
    pub date_of_birth: Option<String>,
    pub handelsregister_nummer: Option<String>,
    pub handelsregister_gericht: Option<String>,
}

/// An Advoware `Beteiligte` record. The fields the sync owns are typed; everything else
/// (addresses, Kommunikation, fields we do not know) is kept in [`Self::other`] and written back
/// unchanged, because Advoware's `PUT` replaces the record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvowareBeteiligter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bet_nr: Option<BetNr>,
    /// Changes on every write (change signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geaendert_am: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vorname: Option<String>,
    #[serde(default)]
    pub anrede: Option<String>,
    #[serde(default)]
    pub titel: Option<String>,
    #[serde(default)]
    pub rechtsform: Option<String>,
    /// `YYYY-MM-DDT00:00:00` (date-only accepted).
    #[serde(default)]
    pub geburtsdatum: Option<String>,
    #[serde(default)]
    pub handels_register_nummer: Option<String>,
    #[serde(default)]
    pub registergericht: Option<String>,
    /// Every other attribute, preserved for read-modify-write.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The `betnr` of an EspoCRM `CBeteiligte` read as plain JSON (a number, or digits in a string
/// as some EspoCRM layouts store it); `None` when missing, empty, zero or not a number. For the
/// places that read one field of another sync's record (Bankverbindungen, the 3CX call note).
pub fn espo_betnr(record: &Value) -> Option<BetNr> {
    let n = match record.get("betnr")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }?;
    (n > 0).then_some(BetNr(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn betnr_is_read_from_numbers_and_digit_strings_only() {
        assert_eq!(espo_betnr(&json!({"betnr": 50001})), Some(BetNr(50001)));
        assert_eq!(espo_betnr(&json!({"betnr": " 7 "})), Some(BetNr(7)));
        for none in [
            json!({}),
            json!({"betnr": null}),
            json!({"betnr": 0}),
            json!({"betnr": ""}),
            json!({"betnr": "12a"}),
            json!({"betnr": -3}),
            json!({"betnr": 1.5}),
        ] {
            assert_eq!(espo_betnr(&none), None, "{none}");
        }
    }

    #[test]
    fn status_strings_round_trip_and_empty_is_none() {
        for st in SyncStatus::ALL {
            assert_eq!(st.as_str().parse::<SyncStatus>(), Ok(st));
            assert_eq!(serde_json::to_value(st).ok(), Some(json!(st.as_str())));
        }
        let e: EspoBeteiligte =
            serde_json::from_value(json!({"id": "a1", "syncStatus": ""})).unwrap_or_default();
        assert_eq!(e.sync_status, None);
        assert_eq!(e.id.as_ref().map(EspoId::as_str), Some("a1"));
        assert!(serde_json::from_value::<EspoBeteiligte>(json!({"syncStatus": "bogus"})).is_err());
    }

    #[test]
    fn failures_become_permanent_at_the_limit() {
        assert_eq!(SyncStatus::after_failure(0, 5), (SyncStatus::Failed, 1));
        assert_eq!(SyncStatus::after_failure(3, 5), (SyncStatus::Failed, 4));
        assert_eq!(
            SyncStatus::after_failure(4, 5),
            (SyncStatus::PermanentlyFailed, 5)
        );
    }

    #[test]
    fn unknown_advoware_fields_survive_a_round_trip() {
        let raw = json!({
            "betNr": 50001, "rowId": "AAAAAAAAB9E=", "name": "Muster",
            "adressen": [{"strasse": "Hauptstr. 1"}], "kommunikation": [], "kurzname": "MUST"
        });
        let b: AdvowareBeteiligter = serde_json::from_value(raw.clone()).unwrap_or_default();
        assert_eq!(b.bet_nr, Some(BetNr(50001)));
        assert_eq!(b.other.get("kurzname"), Some(&json!("MUST")));
        let back = serde_json::to_value(&b).unwrap_or_default();
        for key in ["adressen", "kommunikation", "kurzname", "name", "rowId"] {
            assert_eq!(back.get(key), raw.get(key), "{key}");
        }
    }
}
