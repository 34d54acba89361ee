//! The `syncStatus` machine as pure functions: what the handler writes to EspoCRM for each
//! outcome of a run, which action a [`SyncDecision`] leads to under the conflict policy, and when
//! a `permanently_failed` record is reset.
//!
//! ```text
//! pending_sync | dirty | failed | clean ──(job starts)──> syncing
//! syncing ──ok──> clean            (retry count 0, error cleared, rowId + lastSync stored)
//! syncing ──error──> failed        (count + 1, message)   ──5th──> permanently_failed
//! syncing ──Advoware 404──> deleted_in_advoware  (advowareDeletedAt; never re-created)
//! syncing ──conflict, policy manual──> conflict  (nothing written, a person decides)
//! permanently_failed ──older than 24 h──> failed (count 0; the check retries it)
//! ```

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::decide::SyncDecision;
use super::model::SyncStatus;

/// What to do when both sides changed. The seeds let EspoCRM win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    #[default]
    EspocrmWins,
    AdvowareWins,
    /// Write nothing, set `conflict`, notify; a person resolves it in the CRM.
    Manual,
}

impl FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "espocrm_wins" => Ok(Self::EspocrmWins),
            "advoware_wins" => Ok(Self::AdvowareWins),
            "manual" => Ok(Self::Manual),
            other => Err(format!(
                "unknown conflict policy {other:?} (espocrm_wins, advoware_wins, manual)"
            )),
        }
    }
}

/// The write a decision leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to write to either side (bookkeeping may still be refreshed).
    Nothing,
    /// Read-modify-write `PUT` of the Advoware record from the EspoCRM content.
    WriteAdvoware,
    /// Partial `PUT` of the EspoCRM record from the Advoware content.
    WriteEspocrm,
    /// Leave both sides, mark `conflict`.
    LeaveConflict,
}

/// Maps a decision to its action; a conflict also asks for a notification (the caller names
/// the fields from [`SyncDecision::Conflict`]).
pub fn plan(decision: &SyncDecision, policy: ConflictPolicy) -> Action {
    match (decision, policy) {
        (SyncDecision::NoChange { .. }, _) => Action::Nothing,
        (SyncDecision::EspocrmNewer, _) => Action::WriteAdvoware,
        (SyncDecision::AdvowareNewer, _) => Action::WriteEspocrm,
        (SyncDecision::Conflict { .. }, ConflictPolicy::EspocrmWins) => Action::WriteAdvoware,
        (SyncDecision::Conflict { .. }, ConflictPolicy::AdvowareWins) => Action::WriteEspocrm,
        (SyncDecision::Conflict { .. }, ConflictPolicy::Manual) => Action::LeaveConflict,
    }
}

/// A partial update of the sync fields. `None` = leave the attribute alone; `Some(None)` =
/// clear it (sent as `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<SyncStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_error_message: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_retry_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advoware_row_id: Option<String>,
    /// `YYYY-MM-DD HH:mm:ss` UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advoware_last_sync: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advoware_deleted_at: Option<String>,
}

fn espo_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Longest `syncErrorMessage` written (EspoCRM text fields are large, the CRM view is not).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;

impl StatusUpdate {
    /// A job starts working on the record.
    pub fn syncing() -> Self {
        Self {
            sync_status: Some(SyncStatus::Syncing),
            ..Self::default()
        }
    }

    /// Both sides are equal now: `clean`, retry count 0, error cleared, Advoware's `rowId` after
    /// our write (or as read) and the time of the sync.
    pub fn clean(row_id: &str, now: DateTime<Utc>) -> Self {
        Self {
            sync_status: Some(SyncStatus::Clean),
            sync_error_message: Some(None),
            sync_retry_count: Some(0),
            advoware_row_id: Some(row_id.to_owned()),
            advoware_last_sync: Some(espo_time(now)),
            advoware_deleted_at: None,
        }
    }

    /// The run failed: `failed`, or `permanently_failed` once `max_retries` failures are reached.
    pub fn failed(retry_count: u32, max_retries: u32, message: &str) -> Self {
        let (status, count) = SyncStatus::after_failure(retry_count, max_retries);
        Self {
            sync_status: Some(status),
            sync_error_message: Some(Some(
                message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect(),
            )),
            sync_retry_count: Some(count),
            ..Self::default()
        }
    }

    /// Advoware answered 404 for the stored `betnr`.
    pub fn deleted_in_advoware(now: DateTime<Utc>) -> Self {
        Self {
            sync_status: Some(SyncStatus::DeletedInAdvoware),
            sync_error_message: Some(Some("Beteiligter no longer exists in Advoware".into())),
            advoware_deleted_at: Some(espo_time(now)),
            ..Self::default()
        }
    }

    /// Conflict left for a person (policy `manual`).
    pub fn conflict(fields: &[&str]) -> Self {
        Self {
            sync_status: Some(SyncStatus::Conflict),
            sync_error_message: Some(Some(format!(
                "changed on both sides: {}",
                fields.join(", ")
            ))),
            ..Self::default()
        }
    }

    /// Auto-reset of a `permanently_failed` record: back to `failed` with count 0, so the next
    /// check retries it; the last error stays visible.
    pub fn reset() -> Self {
        Self {
            sync_status: Some(SyncStatus::Failed),
            sync_retry_count: Some(0),
            ..Self::default()
        }
    }
}

/// Whether a record is due for the auto-reset: `permanently_failed` and unchanged (EspoCRM
/// `modifiedAt`, which the failure write set) for at least `after`.
pub fn due_for_reset(
    status: Option<SyncStatus>,
    modified_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    after: chrono::Duration,
) -> bool {
    status == Some(SyncStatus::PermanentlyFailed) && modified_at.is_some_and(|m| now - m >= after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        super::super::decide::parse_espo_datetime(Some(s)).unwrap_or_default()
    }

    #[test]
    fn decisions_map_to_actions_under_each_policy() {
        let conflict = SyncDecision::Conflict {
            fields: vec!["lastName"],
        };
        assert_eq!(
            plan(&conflict, ConflictPolicy::default()),
            Action::WriteAdvoware
        );
        assert_eq!(
            plan(&conflict, ConflictPolicy::AdvowareWins),
            Action::WriteEspocrm
        );
        assert_eq!(
            plan(&conflict, ConflictPolicy::Manual),
            Action::LeaveConflict
        );
        for p in [ConflictPolicy::EspocrmWins, ConflictPolicy::Manual] {
            assert_eq!(plan(&SyncDecision::EspocrmNewer, p), Action::WriteAdvoware);
            assert_eq!(plan(&SyncDecision::AdvowareNewer, p), Action::WriteEspocrm);
            assert_eq!(
                plan(&SyncDecision::NoChange { row_id_moved: true }, p),
                Action::Nothing
            );
        }
        assert_eq!("manual".parse(), Ok(ConflictPolicy::Manual));
        assert!("whoever".parse::<ConflictPolicy>().is_err());
    }

    #[test]
    fn updates_serialise_as_partial_puts() {
        let now = at("2026-03-01 10:00:00");
        assert_eq!(
            serde_json::to_value(StatusUpdate::syncing()).ok(),
            Some(json!({"syncStatus": "syncing"}))
        );
        assert_eq!(
            serde_json::to_value(StatusUpdate::clean("r9", now)).ok(),
            Some(
                json!({"syncStatus": "clean", "syncErrorMessage": null, "syncRetryCount": 0,
                "advowareRowId": "r9", "advowareLastSync": "2026-03-01 10:00:00"})
            )
        );
        assert_eq!(
            serde_json::to_value(StatusUpdate::deleted_in_advoware(now)).ok(),
            Some(json!({"syncStatus": "deleted_in_advoware",
                "syncErrorMessage": "Beteiligter no longer exists in Advoware",
                "advowareDeletedAt": "2026-03-01 10:00:00"}))
        );
        assert_eq!(
            serde_json::to_value(StatusUpdate::reset()).ok(),
            Some(json!({"syncStatus": "failed", "syncRetryCount": 0}))
        );
        let c = StatusUpdate::conflict(&["lastName", "dateOfBirth"]);
        assert_eq!(
            c.sync_error_message,
            Some(Some("changed on both sides: lastName, dateOfBirth".into()))
        );
    }

    #[test]
    fn failures_count_up_to_permanent() {
        let f = StatusUpdate::failed(0, 5, "Advoware answered 400");
        assert_eq!(
            (f.sync_status, f.sync_retry_count),
            (Some(SyncStatus::Failed), Some(1))
        );
        let f = StatusUpdate::failed(4, 5, &"x".repeat(2000));
        assert_eq!(
            (f.sync_status, f.sync_retry_count),
            (Some(SyncStatus::PermanentlyFailed), Some(5))
        );
        assert_eq!(
            f.sync_error_message.flatten().map(|m| m.chars().count()),
            Some(MAX_ERROR_MESSAGE_CHARS)
        );
    }

    #[test]
    fn reset_only_permanent_failures_older_than_the_limit() {
        let day = chrono::Duration::hours(24);
        let now = at("2026-03-02 10:00:00");
        let pf = Some(SyncStatus::PermanentlyFailed);
        assert!(due_for_reset(pf, Some(at("2026-03-01 10:00:00")), now, day));
        assert!(!due_for_reset(
            pf,
            Some(at("2026-03-01 10:00:01")),
            now,
            day
        ));
        assert!(!due_for_reset(pf, None, now, day));
        assert!(!due_for_reset(
            Some(SyncStatus::Failed),
            Some(at("2026-01-01 00:00:00")),
            now,
            day
        ));
    }
}
