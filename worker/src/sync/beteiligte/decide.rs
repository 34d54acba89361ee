//! Which side changed since the last sync, and what to do about it.
//!
//! Inputs are the two records mapped to [`Stammdaten`] plus the change signals the seeds use:
//! Advoware's `rowId` (changes on every write) against the `advowareRowId` stored in EspoCRM,
//! and EspoCRM's `modifiedAt` against `advowareLastSync`. Content decides first:
//!
//! 1. Equal mapped content → [`SyncDecision::NoChange`], whatever the timestamps say. This is
//!    what stops ping-pong: our own write-back to EspoCRM bumps `modifiedAt` and triggers an
//!    update webhook, but the content then already equals Advoware's.
//! 2. Content differs → who changed? With the hash of the content at the last sync
//!    ([`content_hash`], stored by the handler) it is exact: a side changed iff its hash
//!    differs from the stored one. Without it (first run, lost state) the timestamps are used:
//!    EspoCRM changed iff `modifiedAt` is later than `advowareLastSync` plus a tolerance (the
//!    write-back that sets `advowareLastSync` itself bumps `modifiedAt` a moment later);
//!    Advoware changed iff its `rowId` differs from the stored one.
//! 3. One side changed → that side is newer; both, or neither (a difference no signal explains)
//!    → [`SyncDecision::Conflict`] with the differing fields, resolved by the configured policy.

use chrono::{DateTime, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

use super::mapping::{changed_fields, Stammdaten};

/// The outcome for one Beteiligter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncDecision {
    /// Nothing to write. `row_id_moved`: Advoware's `rowId` differs from the stored one (e.g. a
    /// change in a field we do not sync), so the handler should store the new one.
    NoChange { row_id_moved: bool },
    /// EspoCRM changed: write Advoware (read-modify-write PUT).
    EspocrmNewer,
    /// Advoware changed: write EspoCRM (partial PUT).
    AdvowareNewer,
    /// Both changed (or the difference has no explanation): apply the policy and notify.
    Conflict { fields: Vec<&'static str> },
}

impl SyncDecision {
    /// The seeds' name of the outcome (logs, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoChange { .. } => "no_change",
            Self::EspocrmNewer => "espocrm_newer",
            Self::AdvowareNewer => "advoware_newer",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub espo: &'a Stammdaten,
    pub advoware: &'a Stammdaten,
    /// [`content_hash`] of the content both sides had after the last sync, if stored.
    pub last_synced_hash: Option<&'a str>,
    /// EspoCRM `modifiedAt`.
    pub espo_modified_at: Option<DateTime<Utc>>,
    /// EspoCRM `advowareLastSync`.
    pub last_sync: Option<DateTime<Utc>>,
    /// How much later than `advowareLastSync` our own write-back may have set `modifiedAt`.
    pub modified_tolerance: chrono::Duration,
    /// EspoCRM `advowareRowId`.
    pub stored_row_id: Option<&'a str>,
    /// Advoware `rowId` now.
    pub advoware_row_id: Option<&'a str>,
}

/// Decides per the rules in the module docs. Pure.
pub fn decide(i: &DecisionInput<'_>) -> SyncDecision {
    let row_id_moved = i.stored_row_id != i.advoware_row_id;
    if i.espo == i.advoware {
        return SyncDecision::NoChange { row_id_moved };
    }
    let (espo_changed, advoware_changed) = match i.last_synced_hash {
        Some(base) => (
            content_hash(i.espo) != base,
            content_hash(i.advoware) != base,
        ),
        None => {
            let espo_changed = match (i.espo_modified_at, i.last_sync) {
                (Some(modified), Some(synced)) => modified > synced + i.modified_tolerance,
                _ => true,
            };
            (espo_changed, row_id_moved)
        }
    };
    match (espo_changed, advoware_changed) {
        (true, false) => SyncDecision::EspocrmNewer,
        (false, true) => SyncDecision::AdvowareNewer,
        _ => SyncDecision::Conflict {
            fields: changed_fields(i.espo, i.advoware),
        },
    }
}

/// SHA-256 (hex) of the canonical JSON of `s`: what the handler stores after a sync as the
/// common base of the next three-way decision.
pub fn content_hash(s: &Stammdaten) -> String {
    // Serialising a struct of strings, dates and enums cannot fail; an empty input would only
    // make every comparison "changed", never "equal".
    let bytes = serde_json::to_vec(s).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Parses EspoCRM's `YYYY-MM-DD HH:mm:ss` (UTC); `None` for empty or malformed values.
pub fn parse_espo_datetime(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let raw = raw?.trim();
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::super::mapping::Kind;
    use super::*;

    fn person(name: &str) -> Stammdaten {
        Stammdaten {
            kind: Kind::Person,
            name: name.into(),
            vorname: Some("Max".into()),
            anrede: None,
            titel: None,
            geburtsdatum: None,
            rechtsform: None,
            handelsregister: None,
        }
    }

    fn t(s: &str) -> Option<DateTime<Utc>> {
        parse_espo_datetime(Some(s))
    }

    fn input<'a>(espo: &'a Stammdaten, adv: &'a Stammdaten) -> DecisionInput<'a> {
        DecisionInput {
            espo,
            advoware: adv,
            last_synced_hash: None,
            espo_modified_at: t("2026-03-01 10:00:00"),
            last_sync: t("2026-03-01 10:00:00"),
            modified_tolerance: chrono::Duration::seconds(5),
            stored_row_id: Some("r1"),
            advoware_row_id: Some("r1"),
        }
    }

    #[test]
    fn equal_content_is_no_change_even_after_our_own_write_back() {
        let (a, b) = (person("A"), person("A"));
        let mut i = input(&a, &b);
        i.espo_modified_at = t("2026-03-01 12:00:00");
        i.advoware_row_id = Some("r2");
        assert_eq!(decide(&i), SyncDecision::NoChange { row_id_moved: true });
        assert_eq!(
            decide(&input(&a, &b)),
            SyncDecision::NoChange {
                row_id_moved: false
            }
        );
    }

    #[test]
    fn timestamps_pick_the_newer_side() {
        let (e, a) = (person("Neu"), person("Alt"));
        let mut i = input(&e, &a);
        i.espo_modified_at = t("2026-03-01 11:00:00");
        assert_eq!(decide(&i), SyncDecision::EspocrmNewer);
        let mut i = input(&e, &a);
        i.advoware_row_id = Some("r2");
        assert_eq!(decide(&i), SyncDecision::AdvowareNewer);
        // Within the tolerance our own write-back is not an EspoCRM change.
        i.espo_modified_at = t("2026-03-01 10:00:03");
        assert_eq!(decide(&i), SyncDecision::AdvowareNewer);
        i.espo_modified_at = t("2026-03-01 11:00:00");
        assert_eq!(
            decide(&i),
            SyncDecision::Conflict {
                fields: vec!["lastName"]
            }
        );
    }

    #[test]
    fn never_synced_counts_as_espocrm_change() {
        let (e, a) = (person("Neu"), person("Alt"));
        let mut i = input(&e, &a);
        i.last_sync = None;
        assert_eq!(decide(&i), SyncDecision::EspocrmNewer);
    }

    #[test]
    fn stored_hash_makes_the_decision_exact() {
        let (base, changed) = (person("Alt"), person("Neu"));
        let h = content_hash(&base);
        // EspoCRM still at the base, Advoware changed: even a bumped modifiedAt and an
        // unchanged rowId do not fool it.
        let mut i = input(&base, &changed);
        i.last_synced_hash = Some(&h);
        i.espo_modified_at = t("2026-03-02 00:00:00");
        assert_eq!(decide(&i), SyncDecision::AdvowareNewer);
        let mut i = input(&changed, &base);
        i.last_synced_hash = Some(&h);
        assert_eq!(decide(&i), SyncDecision::EspocrmNewer);
        let other = person("Anders");
        let mut i = input(&changed, &other);
        i.last_synced_hash = Some(&h);
        assert_eq!(decide(&i).as_str(), "conflict");
    }

    #[test]
    fn unexplained_difference_is_a_conflict() {
        let (e, a) = (person("X"), person("Y"));
        assert_eq!(decide(&input(&e, &a)).as_str(), "conflict");
    }
}
