//! The per-employee sync state of the calendar sync (vdirsyncer's "status database").
//!
//! For every known pair `frNr ↔ Google event id` it holds the content hash each side had right
//! after the last successful sync of that pair; the three-way diff in [`super::diff`] compares
//! the current hashes against these to tell "changed on this side" from "changed on the other".
//! Besides the pairs it keeps
//! - *tombstones*: appointments whose Google event the user deleted while the policy says not to
//!   recreate it, with the Advoware hash at that time (so a later Advoware change recreates it,
//!   "modification beats deletion", and an unchanged one is not recreated every run);
//! - *pending* creations: Google events we are creating in Advoware, written *before* the
//!   create so that a crash between the Advoware create and the state write is recognised on the
//!   next run (the new appointment is adopted instead of being created a second time).
//!
//! The record is plain data (serde), and [`SyncState::apply`] is the only way the planner's
//! [`StateUpdate`]s change it, so the caller can persist it after every single action.

use std::collections::BTreeMap;

use bitbylaw_core::ids::{FrNr, Kuerzel};
use serde::{Deserialize, Serialize};

/// Which system an appointment was first created in. Matters for deletions (a Google-created
/// appointment may be deleted in Advoware when the policy allows it) and for the content mode
/// (events the user created in Google always keep their full text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// Created in Advoware, copied to Google.
    Advoware,
    /// Created in Google, copied to Advoware.
    Google,
}

/// One synced pair and each side's content hash after its last successful sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairState {
    /// The Advoware appointment number.
    pub frnr: FrNr,
    /// The Google event id.
    pub event_id: String,
    /// [`content_hash_termin`](super::content_hash_termin) of the Advoware side.
    pub advoware_hash: String,
    /// [`content_hash_event`](super::content_hash_event) of the Google side.
    pub google_hash: String,
    /// Where the appointment was created.
    pub origin: Origin,
}

/// The whole sync state of one employee's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// Whose calendar; appointments created in Advoware are created in this calendar.
    pub kuerzel: Kuerzel,
    /// Known pairs by `frNr`.
    #[serde(default)]
    pub pairs: BTreeMap<FrNr, PairState>,
    /// Appointments deliberately not recreated in Google → their Advoware hash at that time.
    #[serde(default)]
    pub tombstones: BTreeMap<FrNr, String>,
    /// Google events being created in Advoware → their Google hash when the create started.
    #[serde(default)]
    pub pending: BTreeMap<String, String>,
}

/// A change of the state, planned together with an action and applied by the caller right
/// before ([`Step::before`](super::diff::Step::before)) or after
/// ([`Step::after`](super::diff::Step::after)) the action succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUpdate {
    /// The action changes nothing the state records.
    Nothing,
    /// Record (or replace) a pair; clears a tombstone of its `frNr` and a pending entry of its
    /// event, and drops any other pair that had this event.
    Put(PairState),
    /// Like [`StateUpdate::Put`] for a pair whose event id is only known once Google created the
    /// event ([`Created::EventId`]).
    PutCreatedEvent {
        /// The appointment.
        frnr: FrNr,
        /// Hash of the Advoware side.
        advoware_hash: String,
        /// Hash of the event as sent.
        google_hash: String,
        /// Where the appointment was created.
        origin: Origin,
    },
    /// Like [`StateUpdate::Put`] for a pair whose `frNr` is only known once Advoware created the
    /// appointment ([`Created::FrNr`]).
    PutCreatedTermin {
        /// The event.
        event_id: String,
        /// Hash of the appointment as sent.
        advoware_hash: String,
        /// Hash of the Google side.
        google_hash: String,
        /// Where the appointment was created.
        origin: Origin,
    },
    /// Drop the pair of `frnr`; leave a tombstone with this Advoware hash, or none.
    Forget {
        /// The appointment.
        frnr: FrNr,
        /// `Some(advoware hash)` to remember not to recreate the Google event.
        tombstone: Option<String>,
    },
    /// Mark a Google event as being created in Advoware.
    Pending {
        /// The event.
        event_id: String,
        /// Its content hash.
        google_hash: String,
    },
}

/// The id a create action returned, needed to complete its [`StateUpdate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Google's id of the event created by `CreateInGoogle`.
    EventId(String),
    /// Advoware's `frNr` of the appointment created by `CreateInAdvoware`.
    FrNr(FrNr),
}

/// Why a state update cannot be applied: the caller passed the wrong (or no) created id. A
/// programming error on the caller's side, but reported rather than panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A `PutCreated…` update without the matching [`Created`] id.
    #[error("state update needs the id returned by the create ({0})")]
    MissingCreatedId(&'static str),
}

impl SyncState {
    /// An empty state for `kuerzel`'s calendar (first sync, or after the state was lost).
    pub fn new(kuerzel: Kuerzel) -> Self {
        Self {
            kuerzel,
            pairs: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Applies one planned update. `created` is the id a create action returned; it is only
    /// read by the `PutCreated…` variants.
    pub fn apply(
        &mut self,
        update: &StateUpdate,
        created: Option<&Created>,
    ) -> Result<(), StateError> {
        match update {
            StateUpdate::Nothing => {}
            StateUpdate::Put(pair) => self.put(pair.clone()),
            StateUpdate::PutCreatedEvent {
                frnr,
                advoware_hash,
                google_hash,
                origin,
            } => {
                let Some(Created::EventId(event_id)) = created else {
                    return Err(StateError::MissingCreatedId("Google event id"));
                };
                self.put(PairState {
                    frnr: *frnr,
                    event_id: event_id.clone(),
                    advoware_hash: advoware_hash.clone(),
                    google_hash: google_hash.clone(),
                    origin: *origin,
                });
            }
            StateUpdate::PutCreatedTermin {
                event_id,
                advoware_hash,
                google_hash,
                origin,
            } => {
                let Some(Created::FrNr(frnr)) = created else {
                    return Err(StateError::MissingCreatedId("frNr"));
                };
                self.put(PairState {
                    frnr: *frnr,
                    event_id: event_id.clone(),
                    advoware_hash: advoware_hash.clone(),
                    google_hash: google_hash.clone(),
                    origin: *origin,
                });
            }
            StateUpdate::Forget { frnr, tombstone } => {
                self.pairs.remove(frnr);
                match tombstone {
                    Some(hash) => {
                        self.tombstones.insert(*frnr, hash.clone());
                    }
                    None => {
                        self.tombstones.remove(frnr);
                    }
                }
            }
            StateUpdate::Pending {
                event_id,
                google_hash,
            } => {
                self.pending.insert(event_id.clone(), google_hash.clone());
            }
        }
        Ok(())
    }

    /// The pair whose Google side is `event_id`, if any.
    pub fn pair_of_event(&self, event_id: &str) -> Option<&PairState> {
        self.pairs.values().find(|p| p.event_id == event_id)
    }

    fn put(&mut self, pair: PairState) {
        self.pairs
            .retain(|frnr, p| *frnr == pair.frnr || p.event_id != pair.event_id);
        self.tombstones.remove(&pair.frnr);
        self.pending.remove(&pair.event_id);
        self.pairs.insert(pair.frnr, pair);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn pair(frnr: u64, id: &str) -> PairState {
        PairState {
            frnr: FrNr(frnr),
            event_id: id.into(),
            advoware_hash: "a".into(),
            google_hash: "g".into(),
            origin: Origin::Advoware,
        }
    }

    #[test]
    fn put_replaces_the_old_pair_of_an_event_and_clears_markers() {
        let mut s = SyncState::new(Kuerzel::new("SB").unwrap());
        s.apply(&StateUpdate::Put(pair(1, "e1")), None).unwrap();
        s.apply(
            &StateUpdate::Pending {
                event_id: "e1".into(),
                google_hash: "g".into(),
            },
            None,
        )
        .unwrap();
        s.tombstones.insert(FrNr(2), "x".into());
        s.apply(
            &StateUpdate::PutCreatedTermin {
                event_id: "e1".into(),
                advoware_hash: "a".into(),
                google_hash: "g".into(),
                origin: Origin::Google,
            },
            Some(&Created::FrNr(FrNr(2))),
        )
        .unwrap();
        assert_eq!(s.pairs.keys().copied().collect::<Vec<_>>(), vec![FrNr(2)]);
        assert!(s.pending.is_empty() && s.tombstones.is_empty());
        assert_eq!(s.pair_of_event("e1").map(|p| p.frnr), Some(FrNr(2)));
    }

    #[test]
    fn created_updates_need_the_created_id() {
        let mut s = SyncState::new(Kuerzel::new("SB").unwrap());
        let u = StateUpdate::PutCreatedEvent {
            frnr: FrNr(1),
            advoware_hash: "a".into(),
            google_hash: "g".into(),
            origin: Origin::Advoware,
        };
        assert!(s.apply(&u, None).is_err());
        assert!(s.apply(&u, Some(&Created::FrNr(FrNr(1)))).is_err());
        s.apply(&u, Some(&Created::EventId("e".into()))).unwrap();
        assert_eq!(s.pairs[&FrNr(1)].event_id, "e");
    }

    #[test]
    fn forget_sets_or_clears_the_tombstone_and_state_round_trips_as_json() {
        let mut s = SyncState::new(Kuerzel::new("SB").unwrap());
        s.apply(&StateUpdate::Put(pair(7, "e7")), None).unwrap();
        let forget = |t: Option<&str>| StateUpdate::Forget {
            frnr: FrNr(7),
            tombstone: t.map(Into::into),
        };
        s.apply(&forget(Some("h")), None).unwrap();
        assert!(s.pairs.is_empty());
        assert_eq!(s.tombstones[&FrNr(7)], "h");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SyncState>(&json).unwrap(), s);
        s.apply(&forget(None), None).unwrap();
        assert!(s.tombstones.is_empty());
    }
}
