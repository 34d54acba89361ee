//! The three-way diff of the calendar sync: current Advoware appointments × current Google
//! events × the [`SyncState`] of the last sync → a [`Plan`] of typed actions (issue #6).
//!
//! Pure: no I/O, no clock. The caller executes the [`Step`]s in order and, after each successful
//! action, applies its [`Step::after`] to the state and persists it, so a crash in the middle
//! of a run loses at most the action in flight. A step whose action fails is simply not
//! recorded; the next run sees the same difference and plans it again.
//!
//! The model is vdirsyncer's status database: a side "changed" when its content hash differs
//! from the hash stored after the last sync. The rules (numbers as in the issue's *Policy*):
//! 1. a new Advoware appointment is created in Google; a Google event already carrying the
//!    `frNr` (state lost, crashed run) is adopted instead, Advoware winning on content;
//! 2. a new Google event is created in Advoware;
//! 3. a change on one side goes to the other;
//! 4. a change on both sides is a conflict: the later change wins, Advoware wins ties;
//! 5. a Google deletion is undone (Advoware is the system of record) unless
//!    [`Policy::recreate_deleted_in_google`] is off; an Advoware change always recreates;
//! 6. an Advoware deletion deletes the Google event, unless the event changed since: then it
//!    is recreated in Advoware and reported as a conflict;
//! 7. deleted on both sides → the pair is forgotten;
//! 8. nothing is deleted in Advoware unless [`Policy::advoware_delete_allowed`], and then only
//!    appointments that were created in Google;
//! 9. a side that returns nothing while the state knows many pairs is an outage, not a mass
//!    deletion ([`PlanError::SideLooksEmpty`]);
//! 10. unchanged on both sides → no action at all.

use std::collections::{BTreeMap, BTreeSet};

use bitbylaw_core::ids::FrNr;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::hash::{content_hash_event, content_hash_termin};
use super::mapping::{
    berlin_to_utc, event_to_termin, termin_to_event, AdvowareTermin, ContentMode, EventData,
    FRNR_PROPERTY,
};
use super::state::{Origin, PairState, StateUpdate, SyncState};
use super::MappingError;

/// A Google event as the planner needs it: its id and last-change time beside the mapped data
/// (kept out of [`EventData`], which holds only synced content).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GoogleEvent {
    /// Google's event id.
    pub id: String,
    /// Google's `updated`; decides conflicts (rule 4).
    pub updated: Option<DateTime<Utc>>,
    /// The synced content.
    pub data: EventData,
}

/// The knobs of issue #6. [`Policy::default`] is the documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// May appointments be deleted in Advoware (only ever Google-created ones)? Default false.
    pub advoware_delete_allowed: bool,
    /// Recreate Google events the user deleted while the appointment still exists? Default true.
    pub recreate_deleted_in_google: bool,
    /// Refuse to plan when a side looks empty (rule 9)? Default true; false is the override.
    pub empty_side_guard: bool,
    /// How many known pairs make an empty side suspicious. Default 5.
    pub empty_side_min_known: usize,
    /// What Google gets of appointments created in Advoware.
    pub content_mode: ContentMode,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            advoware_delete_allowed: false,
            recreate_deleted_in_google: true,
            empty_side_guard: true,
            empty_side_min_known: 5,
            content_mode: ContentMode::Full,
        }
    }
}

/// One of the two systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Advoware.
    Advoware,
    /// Google Calendar.
    Google,
}

/// How a conflict was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Both sides changed; Advoware's change is newer (or as new, or times are unknown).
    AdvowareWins,
    /// Both sides changed; Google's change is newer.
    GoogleWins,
    /// Deleted in Google but changed in Advoware: recreated in Google.
    RecreatedInGoogle,
    /// Deleted in Advoware but changed in Google: recreated in Advoware.
    RecreatedInAdvoware,
}

/// The item a [`Action::Skip`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An Advoware appointment (`None` when it has no `frNr`).
    Termin(Option<FrNr>),
    /// A Google event by id.
    Event(String),
}

/// What to do on which side. Writes carry the complete body to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create `event` in Google for appointment `frnr`.
    CreateInGoogle {
        /// The appointment.
        frnr: FrNr,
        /// The event to create (carries [`FRNR_PROPERTY`]).
        event: EventData,
    },
    /// Replace the content of a Google event.
    UpdateGoogle {
        /// The event.
        event_id: String,
        /// Its new content (carries [`FRNR_PROPERTY`]; other private properties are kept).
        event: EventData,
    },
    /// Delete a Google event.
    DeleteFromGoogle {
        /// The event.
        event_id: String,
    },
    /// Create `termin` in Advoware for a Google event; the caller then records the new `frNr`.
    CreateInAdvoware {
        /// The event it comes from.
        event_id: String,
        /// The appointment to create (no `frNr`).
        termin: AdvowareTermin,
    },
    /// Replace the content of an Advoware appointment.
    UpdateAdvoware {
        /// The appointment.
        frnr: FrNr,
        /// Its new content.
        termin: AdvowareTermin,
    },
    /// Delete an Advoware appointment (only with [`Policy::advoware_delete_allowed`]).
    DeleteFromAdvoware {
        /// The appointment.
        frnr: FrNr,
    },
    /// No write; the pair (or tombstone) is dropped from the state.
    ForgetPair {
        /// The appointment.
        frnr: FrNr,
        /// Its former event, if there was one.
        event_id: Option<String>,
    },
    /// No write: both sides already agree (changed identically, or adopted); only the state
    /// is updated.
    RecordInSync {
        /// The appointment.
        frnr: FrNr,
        /// The event.
        event_id: String,
    },
    /// A conflict and how it was resolved; the resolving write is the next step. Logged and
    /// counted by the caller.
    Conflict {
        /// The appointment.
        frnr: FrNr,
        /// The event.
        event_id: String,
        /// Who won.
        resolution: Resolution,
    },
    /// An item that cannot be mapped; left alone (its pair, if any, stays as it is).
    Skip {
        /// Which item.
        item: Item,
        /// Why.
        reason: MappingError,
    },
}

impl Action {
    /// Whether the action writes to Advoware or Google.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::CreateInGoogle { .. }
                | Self::UpdateGoogle { .. }
                | Self::DeleteFromGoogle { .. }
                | Self::CreateInAdvoware { .. }
                | Self::UpdateAdvoware { .. }
                | Self::DeleteFromAdvoware { .. }
        )
    }
}

/// One action with the state changes around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// To apply and persist *before* the action (marks a pending creation).
    pub before: Option<StateUpdate>,
    /// What to do.
    pub action: Action,
    /// To apply and persist once the action succeeded.
    pub after: StateUpdate,
}

/// The ordered steps of one sync run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// The actions, without their state updates.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.steps.iter().map(|s| &s.action)
    }

    /// How many steps write to either side.
    pub fn writes(&self) -> usize {
        self.actions().filter(|a| a.is_write()).count()
    }

    /// How many conflicts were resolved.
    pub fn conflicts(&self) -> usize {
        self.actions()
            .filter(|a| matches!(a, Action::Conflict { .. }))
            .count()
    }
}

/// Why no plan was made. A concrete enum because the caller must tell an outage (alert, retry
/// later) from everything else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A side returned nothing although the state knows `known` pairs: most likely an outage or
    /// a permission problem, and acting on it would delete everything on the other side.
    #[error("{side:?} returned no appointments although {known} pairs are known")]
    SideLooksEmpty {
        /// The empty side.
        side: Side,
        /// Pairs in the state.
        known: usize,
    },
}

/// Plans one sync run of `state.kuerzel`'s calendar. `google` must hold the events of that
/// calendar that are not cancelled.
pub fn plan(
    state: &SyncState,
    advoware: &[AdvowareTermin],
    google: &[GoogleEvent],
    policy: &Policy,
) -> Result<Plan, PlanError> {
    let known = state.pairs.len();
    // `known > 0`: a first sync (empty state) may legitimately meet an empty side.
    if policy.empty_side_guard && known > 0 && known >= policy.empty_side_min_known {
        if advoware.is_empty() {
            return Err(PlanError::SideLooksEmpty {
                side: Side::Advoware,
                known,
            });
        }
        if google.is_empty() {
            return Err(PlanError::SideLooksEmpty {
                side: Side::Google,
                known,
            });
        }
    }
    let mut p = Planner::new(state, policy);
    p.read_advoware(advoware);
    p.read_google(google);
    p.paired();
    p.new_in_advoware();
    p.new_in_google();
    Ok(Plan { steps: p.steps })
}

/// A mappable appointment with its content hash.
struct Termin<'a> {
    t: &'a AdvowareTermin,
    hash: String,
}

/// A readable Google event with its hash and `frNr` tag.
struct Event<'a> {
    e: &'a GoogleEvent,
    hash: String,
    tag: Option<FrNr>,
}

struct Planner<'a> {
    state: &'a SyncState,
    policy: &'a Policy,
    /// Present appointments; `None` = unmappable.
    adv: BTreeMap<FrNr, Option<Termin<'a>>>,
    /// Present events; `None` = unmappable.
    goo: BTreeMap<&'a str, Option<Event<'a>>>,
    /// Event ids the state pairs.
    paired_ids: BTreeSet<&'a str>,
    /// Unpaired events already taken by an adoption.
    claimed: BTreeSet<&'a str>,
    /// Unpaired appointments already taken by an adoption.
    adopted: BTreeSet<FrNr>,
    steps: Vec<Step>,
}

impl<'a> Planner<'a> {
    fn new(state: &'a SyncState, policy: &'a Policy) -> Self {
        Self {
            state,
            policy,
            adv: BTreeMap::new(),
            goo: BTreeMap::new(),
            paired_ids: state.pairs.values().map(|p| p.event_id.as_str()).collect(),
            claimed: BTreeSet::new(),
            adopted: BTreeSet::new(),
            steps: Vec::new(),
        }
    }

    fn push(&mut self, action: Action, after: StateUpdate) {
        self.steps.push(Step {
            before: None,
            action,
            after,
        });
    }

    fn skip(&mut self, item: Item, reason: MappingError) {
        self.push(Action::Skip { item, reason }, StateUpdate::Nothing);
    }

    fn read_advoware(&mut self, advoware: &'a [AdvowareTermin]) {
        for t in advoware {
            let Some(frnr) = t.fr_nr else {
                self.skip(Item::Termin(None), MappingError::MissingField("frNr"));
                continue;
            };
            // A failed hash means a failed mapping, so checking the mapping too is not needed.
            match content_hash_termin(t) {
                Ok(hash) => {
                    self.adv.insert(frnr, Some(Termin { t, hash }));
                }
                Err(e) => {
                    self.skip(Item::Termin(Some(frnr)), e);
                    self.adv.insert(frnr, None);
                }
            }
        }
    }

    fn read_google(&mut self, google: &'a [GoogleEvent]) {
        for e in google {
            let read = content_hash_event(&e.data).and_then(|hash| {
                let tag = match e.data.private_properties.get(FRNR_PROPERTY) {
                    Some(raw) => Some(
                        raw.trim()
                            .parse::<FrNr>()
                            .map_err(|_| MappingError::InvalidFrNr(raw.clone()))?,
                    ),
                    None => None,
                };
                Ok(Event { e, hash, tag })
            });
            match read {
                Ok(ev) => {
                    self.goo.insert(e.id.as_str(), Some(ev));
                }
                Err(err) => {
                    self.skip(Item::Event(e.id.clone()), err);
                    self.goo.insert(e.id.as_str(), None);
                }
            }
        }
    }

    /// The content mode for an appointment: events the user created in Google keep their text.
    fn mode(&self, origin: Origin) -> ContentMode {
        match origin {
            Origin::Google => ContentMode::Full,
            Origin::Advoware => self.policy.content_mode.clone(),
        }
    }

    /// An unpaired, unclaimed, readable event tagged with `frnr`, preferring one whose content
    /// already equals `hash`; claims it.
    fn take_tagged(&mut self, frnr: FrNr, hash: &str) -> Option<&'a GoogleEvent> {
        let candidates: Vec<(&'a GoogleEvent, bool)> = self
            .goo
            .iter()
            .filter(|(id, _)| !self.paired_ids.contains(*id) && !self.claimed.contains(*id))
            .filter_map(|(_, ev)| ev.as_ref())
            .filter(|ev| ev.tag == Some(frnr))
            .map(|ev| (ev.e, ev.hash == hash))
            .collect();
        let chosen = candidates
            .iter()
            .find(|(_, same)| *same)
            .or_else(|| candidates.first())
            .map(|(e, _)| *e)?;
        self.claimed.insert(chosen.id.as_str());
        Some(chosen)
    }

    /// An unpaired, untagged event we were creating in Advoware whose content equals `hash`
    /// (the create succeeded but its state write was lost); claims it.
    fn take_pending(&mut self, hash: &str) -> Option<&'a GoogleEvent> {
        let chosen = self
            .goo
            .iter()
            .filter(|(id, _)| {
                !self.paired_ids.contains(*id)
                    && !self.claimed.contains(*id)
                    && self.state.pending.contains_key(**id)
            })
            .filter_map(|(_, ev)| ev.as_ref())
            .find(|ev| ev.tag.is_none() && ev.hash == hash)
            .map(|ev| ev.e)?;
        self.claimed.insert(chosen.id.as_str());
        Some(chosen)
    }

    /// For an event we were recreating in Advoware (rule 6): an unpaired appointment with its
    /// content, i.e. the recreation succeeded but its state write was lost; claims it.
    fn take_pending_termin(
        &mut self,
        event_id: &str,
        gh: &str,
    ) -> Option<(FrNr, &'a AdvowareTermin, String)> {
        if !self.state.pending.contains_key(event_id) {
            return None;
        }
        let found = self
            .adv
            .iter()
            .filter(|(f, _)| !self.state.pairs.contains_key(*f) && !self.adopted.contains(*f))
            .filter_map(|(f, t)| t.as_ref().map(|t| (*f, t.t, t.hash.clone())))
            .find(|(_, _, h)| h == gh)?;
        self.adopted.insert(found.0);
        Some(found)
    }

    fn hash_of(&self, id: &str) -> Option<(String, Option<FrNr>)> {
        self.goo
            .get(id)
            .and_then(Option::as_ref)
            .map(|ev| (ev.hash.clone(), ev.tag))
    }

    /// Rules 3–8 for every pair the state knows.
    fn paired(&mut self) {
        let state = self.state;
        for pair in state.pairs.values() {
            let a = self
                .adv
                .get(&pair.frnr)
                .map(|t| t.as_ref().map(|t| (t.t, t.hash.clone())));
            let g = self
                .goo
                .get(pair.event_id.as_str())
                .map(|e| e.as_ref().map(|e| e.e));
            match (a, g) {
                // Unmappable on either side: leave the pair alone (already skipped).
                (Some(None), _) | (_, Some(None)) => {}
                (Some(Some((t, th))), Some(Some(e))) => self.both_present(pair, t, &th, e),
                (Some(Some((t, th))), None) => match self.take_tagged(pair.frnr, &th) {
                    // Our own recreation whose state write was lost: use it.
                    Some(e) => self.adopt(pair.frnr, t, &th, e, pair.origin),
                    None => self.deleted_in_google(pair, t, &th),
                },
                (None, Some(Some(e))) => self.deleted_in_advoware(pair, e),
                (None, None) => self.push(
                    Action::ForgetPair {
                        frnr: pair.frnr,
                        event_id: Some(pair.event_id.clone()),
                    },
                    StateUpdate::Forget {
                        frnr: pair.frnr,
                        tombstone: None,
                    },
                ),
            }
        }
    }

    fn both_present(&mut self, pair: &PairState, t: &AdvowareTermin, th: &str, e: &GoogleEvent) {
        let Some((gh, tag)) = self.hash_of(&e.id) else {
            return;
        };
        let a_changed = th != pair.advoware_hash;
        let g_changed = gh != pair.google_hash;
        let wrote_google = match (a_changed, g_changed) {
            (false, false) => false,
            (true, false) => self.update_google(pair.frnr, t, th, e, pair.origin),
            (false, true) => {
                self.update_advoware(pair.frnr, t, e, &gh, pair.origin);
                false
            }
            (true, true) => self.conflict(pair, t, th, e, &gh),
        };
        if !wrote_google && tag != Some(pair.frnr) {
            // Content unchanged, but the event lacks (or has a stale) frNr: write the tag only.
            self.push(
                Action::UpdateGoogle {
                    event_id: e.id.clone(),
                    event: tagged(&e.data, pair.frnr),
                },
                StateUpdate::Nothing,
            );
        }
    }

    /// Rule 4. Returns whether the resolution writes to Google.
    fn conflict(
        &mut self,
        pair: &PairState,
        t: &AdvowareTermin,
        th: &str,
        e: &GoogleEvent,
        gh: &str,
    ) -> bool {
        // Changed identically on both sides: nothing to write, only the state to refresh.
        let target = termin_to_event(t, &self.mode(pair.origin));
        if target
            .as_ref()
            .ok()
            .and_then(|ev| content_hash_event(ev).ok())
            .as_deref()
            == Some(gh)
        {
            let in_sync = PairState {
                advoware_hash: th.to_owned(),
                google_hash: gh.to_owned(),
                ..pair.clone()
            };
            self.push(
                Action::RecordInSync {
                    frnr: pair.frnr,
                    event_id: e.id.clone(),
                },
                StateUpdate::Put(in_sync),
            );
            return false;
        }
        let advoware_time = t.zuletzt_geaendert_am.as_deref().and_then(parse_berlin);
        let google_wins = matches!((advoware_time, e.updated), (Some(a), Some(g)) if g > a);
        let resolution = if google_wins {
            Resolution::GoogleWins
        } else {
            Resolution::AdvowareWins
        };
        self.push(
            Action::Conflict {
                frnr: pair.frnr,
                event_id: e.id.clone(),
                resolution,
            },
            StateUpdate::Nothing,
        );
        if google_wins {
            self.update_advoware(pair.frnr, t, e, gh, pair.origin);
            false
        } else {
            self.update_google(pair.frnr, t, th, e, pair.origin)
        }
    }

    /// Advoware → Google for an existing event. Returns whether a step was planned.
    fn update_google(
        &mut self,
        frnr: FrNr,
        t: &AdvowareTermin,
        th: &str,
        e: &GoogleEvent,
        origin: Origin,
    ) -> bool {
        let mut event = match termin_to_event(t, &self.mode(origin)) {
            Ok(ev) => ev,
            Err(err) => {
                self.skip(Item::Termin(Some(frnr)), err);
                return false;
            }
        };
        // Keep private properties other applications put on the event.
        for (k, v) in &e.data.private_properties {
            event
                .private_properties
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        let google_hash = match content_hash_event(&event) {
            Ok(h) => h,
            Err(err) => {
                self.skip(Item::Termin(Some(frnr)), err);
                return false;
            }
        };
        self.push(
            Action::UpdateGoogle {
                event_id: e.id.clone(),
                event,
            },
            StateUpdate::Put(PairState {
                frnr,
                event_id: e.id.clone(),
                advoware_hash: th.to_owned(),
                google_hash,
                origin,
            }),
        );
        true
    }

    /// Google → Advoware for an existing appointment.
    fn update_advoware(
        &mut self,
        frnr: FrNr,
        current: &AdvowareTermin,
        e: &GoogleEvent,
        gh: &str,
        origin: Origin,
    ) {
        let mut termin = match event_to_termin(&e.data, &self.state.kuerzel) {
            Ok(t) => t,
            Err(err) => {
                self.skip(Item::Event(e.id.clone()), err);
                return;
            }
        };
        termin.fr_nr = Some(frnr);
        termin.privat = current.privat;
        if origin == Origin::Advoware
            && matches!(self.policy.content_mode, ContentMode::BusyOnly { .. })
        {
            // Google only shows a neutral title: take its times, keep Advoware's texts.
            termin.text.clone_from(&current.text);
            termin.notiz.clone_from(&current.notiz);
            termin.ort.clone_from(&current.ort);
        }
        let advoware_hash = match content_hash_termin(&termin) {
            Ok(h) => h,
            Err(err) => {
                self.skip(Item::Event(e.id.clone()), err);
                return;
            }
        };
        self.push(
            Action::UpdateAdvoware { frnr, termin },
            StateUpdate::Put(PairState {
                frnr,
                event_id: e.id.clone(),
                advoware_hash,
                google_hash: gh.to_owned(),
                origin,
            }),
        );
    }

    /// Rules 5 and 8: the appointment exists, its event is gone.
    fn deleted_in_google(&mut self, pair: &PairState, t: &AdvowareTermin, th: &str) {
        let a_changed = th != pair.advoware_hash;
        let delete_in_advoware =
            pair.origin == Origin::Google && self.policy.advoware_delete_allowed;
        if a_changed {
            // Modification beats deletion.
            if delete_in_advoware || !self.policy.recreate_deleted_in_google {
                self.push(
                    Action::Conflict {
                        frnr: pair.frnr,
                        event_id: pair.event_id.clone(),
                        resolution: Resolution::RecreatedInGoogle,
                    },
                    StateUpdate::Nothing,
                );
            }
            self.create_in_google(pair.frnr, t, th, pair.origin);
        } else if delete_in_advoware {
            self.push(
                Action::DeleteFromAdvoware { frnr: pair.frnr },
                StateUpdate::Forget {
                    frnr: pair.frnr,
                    tombstone: None,
                },
            );
        } else if self.policy.recreate_deleted_in_google {
            self.create_in_google(pair.frnr, t, th, pair.origin);
        } else {
            self.push(
                Action::ForgetPair {
                    frnr: pair.frnr,
                    event_id: Some(pair.event_id.clone()),
                },
                StateUpdate::Forget {
                    frnr: pair.frnr,
                    tombstone: Some(th.to_owned()),
                },
            );
        }
    }

    /// Rule 6: the event exists, its appointment is gone.
    fn deleted_in_advoware(&mut self, pair: &PairState, e: &GoogleEvent) {
        let Some((gh, _)) = self.hash_of(&e.id) else {
            return;
        };
        if let Some((frnr, t, th)) = self.take_pending_termin(&e.id, &gh) {
            self.adopt(frnr, t, &th, e, Origin::Google);
        } else if gh != pair.google_hash {
            // Modification beats deletion: the changed event comes back as a new appointment.
            self.push(
                Action::Conflict {
                    frnr: pair.frnr,
                    event_id: e.id.clone(),
                    resolution: Resolution::RecreatedInAdvoware,
                },
                // The old pair stays until the create succeeded (its state update replaces it),
                // so a failed create is retried rather than read as a deletion.
                StateUpdate::Nothing,
            );
            self.create_in_advoware(e, &gh);
        } else {
            self.push(
                Action::DeleteFromGoogle {
                    event_id: e.id.clone(),
                },
                StateUpdate::Forget {
                    frnr: pair.frnr,
                    tombstone: None,
                },
            );
        }
    }

    fn create_in_google(&mut self, frnr: FrNr, t: &AdvowareTermin, th: &str, origin: Origin) {
        let created = termin_to_event(t, &self.mode(origin))
            .and_then(|ev| content_hash_event(&ev).map(|h| (ev, h)));
        match created {
            Ok((event, google_hash)) => self.push(
                Action::CreateInGoogle { frnr, event },
                StateUpdate::PutCreatedEvent {
                    frnr,
                    advoware_hash: th.to_owned(),
                    google_hash,
                    origin,
                },
            ),
            Err(err) => self.skip(Item::Termin(Some(frnr)), err),
        }
    }

    fn create_in_advoware(&mut self, e: &GoogleEvent, gh: &str) {
        let created = event_to_termin(&e.data, &self.state.kuerzel).and_then(|mut t| {
            // A stale tag (rule 6) must not be sent as the new appointment's number.
            t.fr_nr = None;
            content_hash_termin(&t).map(|h| (t, h))
        });
        match created {
            Ok((termin, advoware_hash)) => self.steps.push(Step {
                before: Some(StateUpdate::Pending {
                    event_id: e.id.clone(),
                    google_hash: gh.to_owned(),
                }),
                action: Action::CreateInAdvoware {
                    event_id: e.id.clone(),
                    termin,
                },
                after: StateUpdate::PutCreatedTermin {
                    event_id: e.id.clone(),
                    advoware_hash,
                    google_hash: gh.to_owned(),
                    origin: Origin::Google,
                },
            }),
            Err(err) => self.skip(Item::Event(e.id.clone()), err),
        }
    }

    /// Pairs an appointment with an event found without the state; Advoware wins on content.
    fn adopt(&mut self, frnr: FrNr, t: &AdvowareTermin, th: &str, e: &GoogleEvent, origin: Origin) {
        let Some((gh, tag)) = self.hash_of(&e.id) else {
            return;
        };
        let target = termin_to_event(t, &self.mode(origin))
            .ok()
            .and_then(|ev| content_hash_event(&ev).ok());
        if target.as_deref() != Some(gh.as_str()) {
            self.update_google(frnr, t, th, e, origin);
            return;
        }
        let pair = PairState {
            frnr,
            event_id: e.id.clone(),
            advoware_hash: th.to_owned(),
            google_hash: gh,
            origin,
        };
        if tag == Some(frnr) {
            self.push(
                Action::RecordInSync {
                    frnr,
                    event_id: e.id.clone(),
                },
                StateUpdate::Put(pair),
            );
        } else {
            self.push(
                Action::UpdateGoogle {
                    event_id: e.id.clone(),
                    event: tagged(&e.data, frnr),
                },
                StateUpdate::Put(pair),
            );
        }
    }

    /// Rule 1 (and tombstones): appointments the state does not pair.
    fn new_in_advoware(&mut self) {
        let state = self.state;
        let unpaired: Vec<(FrNr, &'a AdvowareTermin, String)> = self
            .adv
            .iter()
            .filter(|(frnr, _)| !state.pairs.contains_key(*frnr) && !self.adopted.contains(*frnr))
            .filter_map(|(frnr, t)| t.as_ref().map(|t| (*frnr, t.t, t.hash.clone())))
            .collect();
        for (frnr, t, th) in unpaired {
            if state.tombstones.get(&frnr) == Some(&th) {
                // Deliberately not in Google, and unchanged since.
                continue;
            }
            if let Some(e) = self.take_tagged(frnr, &th) {
                self.adopt(frnr, t, &th, e, Origin::Advoware);
            } else if let Some(e) = self.take_pending(&th) {
                self.adopt(frnr, t, &th, e, Origin::Google);
            } else {
                self.create_in_google(frnr, t, &th, Origin::Advoware);
            }
        }
        // Tombstones of appointments that are gone.
        for frnr in state.tombstones.keys() {
            if !self.adv.contains_key(frnr) {
                self.push(
                    Action::ForgetPair {
                        frnr: *frnr,
                        event_id: None,
                    },
                    StateUpdate::Forget {
                        frnr: *frnr,
                        tombstone: None,
                    },
                );
            }
        }
    }

    /// Rule 2 (and duplicates): events neither paired nor adopted.
    fn new_in_google(&mut self) {
        let rest: Vec<(&'a GoogleEvent, Option<FrNr>, String)> = self
            .goo
            .iter()
            .filter(|(id, _)| !self.paired_ids.contains(*id) && !self.claimed.contains(*id))
            .filter_map(|(_, ev)| ev.as_ref().map(|ev| (ev.e, ev.tag, ev.hash.clone())))
            .collect();
        for (e, tag, gh) in rest {
            match tag {
                // Ours (it carries a frNr) but its appointment is gone or has another event: a
                // leftover or a duplicate. Unless the appointment is unreadable right now.
                Some(frnr) => {
                    if !matches!(self.adv.get(&frnr), Some(None)) {
                        self.push(
                            Action::DeleteFromGoogle {
                                event_id: e.id.clone(),
                            },
                            StateUpdate::Nothing,
                        );
                    }
                }
                None => self.create_in_advoware(e, &gh),
            }
        }
    }
}

/// `event` with [`FRNR_PROPERTY`] set to `frnr`.
pub fn tagged(event: &EventData, frnr: FrNr) -> EventData {
    let mut e = event.clone();
    e.private_properties
        .insert(FRNR_PROPERTY.to_owned(), frnr.to_string());
    e
}

/// Advoware's `zuletztGeaendertAm` (Europe/Berlin wall clock) as an instant.
fn parse_berlin(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(berlin_to_utc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::sync::calendar::state::Created;
    use bitbylaw_core::ids::Kuerzel;
    use serde_json::json;

    fn sb() -> Kuerzel {
        Kuerzel::new("SB").unwrap()
    }

    fn termin(frnr: u64, day: u32, title: &str) -> AdvowareTermin {
        serde_json::from_value(json!({
            "frNr": frnr, "kuerzel": "SB", "datum": format!("2026-02-{day:02}T00:00:00"),
            "uhrzeitVon": "10:00:00", "uhrzeitBis": "11:00:00", "text": title,
        }))
        .unwrap()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + minute * 60, 0).unwrap()
    }

    /// The event we would have written for `t`, with id `id`.
    fn event_of(t: &AdvowareTermin, id: &str) -> GoogleEvent {
        GoogleEvent {
            id: id.into(),
            updated: Some(at(0)),
            data: termin_to_event(t, &ContentMode::Full).unwrap(),
        }
    }

    /// A Google-created event (no frNr tag).
    fn google_only(id: &str, day: u32, title: &str) -> GoogleEvent {
        let mut e = event_of(&termin(1, day, title), id);
        e.data.private_properties.clear();
        e
    }

    fn pair(t: &AdvowareTermin, e: &GoogleEvent, origin: Origin) -> PairState {
        PairState {
            frnr: t.fr_nr.unwrap(),
            event_id: e.id.clone(),
            advoware_hash: content_hash_termin(t).unwrap(),
            google_hash: content_hash_event(&e.data).unwrap(),
            origin,
        }
    }

    fn state_of(pairs: &[PairState]) -> SyncState {
        let mut s = SyncState::new(sb());
        for p in pairs {
            s.pairs.insert(p.frnr, p.clone());
        }
        s
    }

    fn actions(p: &Plan) -> Vec<&Action> {
        p.actions().collect()
    }

    /// One synced appointment: its termin, event and state.
    fn synced() -> (AdvowareTermin, GoogleEvent, SyncState) {
        let t = termin(1, 3, "Anhörung");
        let e = event_of(&t, "e1");
        let s = state_of(&[pair(&t, &e, Origin::Advoware)]);
        (t, e, s)
    }

    #[test]
    fn rule1_new_in_advoware_is_created_in_google() {
        let t = termin(1, 3, "Anhörung");
        let p = plan(
            &SyncState::new(sb()),
            std::slice::from_ref(&t),
            &[],
            &Policy::default(),
        )
        .unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        let Action::CreateInGoogle { frnr, event } = &step.action else {
            panic!("{step:?}")
        };
        assert_eq!(*frnr, FrNr(1));
        assert_eq!(event.private_properties[FRNR_PROPERTY], "1");
        let mut s = SyncState::new(sb());
        s.apply(&step.after, Some(&Created::EventId("new".into())))
            .unwrap();
        assert_eq!(s.pairs[&FrNr(1)].event_id, "new");
        assert_eq!(
            s.pairs[&FrNr(1)].advoware_hash,
            content_hash_termin(&t).unwrap()
        );
    }

    #[test]
    fn rule1_tagged_event_without_state_is_adopted_advoware_winning() {
        let t = termin(1, 3, "Anhörung");
        let same = event_of(&t, "e1");
        let p = plan(
            &SyncState::new(sb()),
            std::slice::from_ref(&t),
            &[same],
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(p.writes(), 0);
        assert!(matches!(actions(&p)[..], [Action::RecordInSync { .. }]));

        let mut other = event_of(&termin(1, 4, "Alt"), "e1");
        other
            .data
            .private_properties
            .insert("foreign".into(), "x".into());
        let p = plan(
            &SyncState::new(sb()),
            std::slice::from_ref(&t),
            &[other],
            &Policy::default(),
        )
        .unwrap();
        let [Action::UpdateGoogle { event_id, event }] = &actions(&p)[..] else {
            panic!("{p:?}")
        };
        assert_eq!(event_id, "e1");
        assert_eq!(
            content_hash_event(event).unwrap(),
            content_hash_termin(&t).unwrap()
        );
        assert_eq!(event.private_properties["foreign"], "x");
    }

    #[test]
    fn duplicate_tagged_events_are_deleted() {
        let (t, e, s) = synced();
        let dup = event_of(&t, "e2");
        let p = plan(&s, &[t], &[e, dup], &Policy::default()).unwrap();
        assert_eq!(
            actions(&p),
            vec![&Action::DeleteFromGoogle {
                event_id: "e2".into()
            }]
        );
    }

    #[test]
    fn rule2_new_in_google_is_created_in_advoware() {
        let e = google_only("g1", 5, "Privat");
        let p = plan(
            &SyncState::new(sb()),
            &[],
            std::slice::from_ref(&e),
            &Policy::default(),
        )
        .unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        let Action::CreateInAdvoware { event_id, termin } = &step.action else {
            panic!("{step:?}")
        };
        assert_eq!(event_id, "g1");
        assert_eq!(termin.fr_nr, None);
        assert_eq!(termin.kuerzel, Some(sb()));
        assert_eq!(termin.text.as_deref(), Some("Privat"));
        assert!(matches!(step.before, Some(StateUpdate::Pending { .. })));
        // Next run: the pair is known, the event only lacks its tag.
        let mut s = SyncState::new(sb());
        s.apply(step.before.as_ref().unwrap(), None).unwrap();
        s.apply(&step.after, Some(&Created::FrNr(FrNr(77))))
            .unwrap();
        assert!(s.pending.is_empty());
        let mut created = termin.clone();
        created.fr_nr = Some(FrNr(77));
        let p = plan(&s, &[created], &[e], &Policy::default()).unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        let Action::UpdateGoogle { event, .. } = &step.action else {
            panic!("{step:?}")
        };
        assert_eq!(event.private_properties[FRNR_PROPERTY], "77");
        assert_eq!(step.after, StateUpdate::Nothing);
    }

    #[test]
    fn pending_creation_whose_state_write_was_lost_is_adopted() {
        let e = google_only("g1", 5, "Privat");
        let mut s = SyncState::new(sb());
        s.pending
            .insert("g1".into(), content_hash_event(&e.data).unwrap());
        let mut created = event_to_termin(&e.data, &sb()).unwrap();
        created.fr_nr = Some(FrNr(9));
        let p = plan(&s, &[created], &[e], &Policy::default()).unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        assert!(
            matches!(step.action, Action::UpdateGoogle { .. }),
            "{step:?}"
        );
        let StateUpdate::Put(pair) = &step.after else {
            panic!("{step:?}")
        };
        assert_eq!((pair.frnr, pair.origin), (FrNr(9), Origin::Google));
    }

    #[test]
    fn lost_state_write_of_a_rule6_recreation_is_adopted() {
        let (_, e, mut s) = synced();
        let changed = GoogleEvent {
            data: termin_to_event(&termin(1, 3, "Geändert"), &ContentMode::Full).unwrap(),
            ..e
        };
        let p = plan(&s, &[], std::slice::from_ref(&changed), &Policy::default()).unwrap();
        let step = &p.steps[1];
        let Action::CreateInAdvoware {
            termin: created, ..
        } = &step.action
        else {
            panic!("{p:?}")
        };
        // The create succeeded as frNr 2, then the process died before the state write.
        s.apply(step.before.as_ref().unwrap(), None).unwrap();
        let mut created = created.clone();
        created.fr_nr = Some(FrNr(2));
        let p = plan(&s, &[created], &[changed], &Policy::default()).unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        let Action::UpdateGoogle { event, .. } = &step.action else {
            panic!("{step:?}")
        };
        assert_eq!(event.private_properties[FRNR_PROPERTY], "2");
        s.apply(&step.after, None).unwrap();
        assert_eq!(s.pairs.keys().copied().collect::<Vec<_>>(), vec![FrNr(2)]);
        assert!(s.pending.is_empty());
    }

    #[test]
    fn rule3_one_sided_changes_propagate() {
        let (_, e, s) = synced();
        let changed = termin(1, 3, "Verlegt");
        let p = plan(
            &s,
            std::slice::from_ref(&changed),
            std::slice::from_ref(&e),
            &Policy::default(),
        )
        .unwrap();
        let [Action::UpdateGoogle { event, .. }] = &actions(&p)[..] else {
            panic!("{p:?}")
        };
        assert_eq!(event.summary.as_deref(), Some("Verlegt"));

        let (t, _, s) = synced();
        let edited = GoogleEvent {
            data: termin_to_event(&termin(1, 9, "In Google verlegt"), &ContentMode::Full).unwrap(),
            ..e
        };
        let p = plan(&s, &[t], &[edited], &Policy::default()).unwrap();
        let [Action::UpdateAdvoware { frnr, termin: new }] = &actions(&p)[..] else {
            panic!("{p:?}")
        };
        assert_eq!(*frnr, FrNr(1));
        assert_eq!(new.fr_nr, Some(FrNr(1)));
        assert_eq!(new.datum.as_deref(), Some("2026-02-09T00:00:00"));
    }

    fn both_changed(advoware_at: &str, google_at: i64) -> Plan {
        let (_, e, s) = synced();
        let mut t = termin(1, 3, "Advoware");
        t.zuletzt_geaendert_am = Some(advoware_at.into());
        let g = GoogleEvent {
            updated: Some(at(google_at)),
            data: termin_to_event(&termin(1, 3, "Google"), &ContentMode::Full).unwrap(),
            ..e
        };
        plan(&s, &[t], &[g], &Policy::default()).unwrap()
    }

    #[test]
    fn rule4_conflicts_last_change_wins_advoware_on_ties() {
        // at(0) = 2026-01-01T00:00Z = 01:00 in Berlin.
        let p = both_changed("2026-01-01T01:00:00", 1);
        assert!(matches!(
            actions(&p)[..],
            [
                Action::Conflict {
                    resolution: Resolution::GoogleWins,
                    ..
                },
                Action::UpdateAdvoware { .. }
            ]
        ));
        for (adv, goo) in [("2026-01-01T01:00:00", 0), ("2026-01-01T01:05:00", 1)] {
            let p = both_changed(adv, goo);
            assert!(
                matches!(
                    actions(&p)[..],
                    [
                        Action::Conflict {
                            resolution: Resolution::AdvowareWins,
                            ..
                        },
                        Action::UpdateGoogle { .. }
                    ]
                ),
                "{p:?}"
            );
            assert_eq!(p.conflicts(), 1);
        }
    }

    #[test]
    fn rule4_identical_changes_only_refresh_the_state() {
        let (_, e, s) = synced();
        let t = termin(1, 8, "Neu");
        let g = event_of(&t, &e.id);
        let p = plan(&s, &[t], &[g], &Policy::default()).unwrap();
        assert!(matches!(actions(&p)[..], [Action::RecordInSync { .. }]));
        assert_eq!(p.writes(), 0);
    }

    #[test]
    fn rule5_deleted_in_google_is_recreated_by_default() {
        let (t, _, s) = synced();
        let p = plan(&s, &[t], &[], &Policy::default()).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [Action::CreateInGoogle { frnr: FrNr(1), .. }]
        ));
    }

    #[test]
    fn rule5_without_recreate_the_pair_is_forgotten_until_advoware_changes() {
        let policy = Policy {
            recreate_deleted_in_google: false,
            ..Policy::default()
        };
        let (t, _, mut s) = synced();
        let p = plan(&s, std::slice::from_ref(&t), &[], &policy).unwrap();
        let [step] = p.steps.as_slice() else {
            panic!("{p:?}")
        };
        assert!(matches!(step.action, Action::ForgetPair { .. }));
        s.apply(&step.after, None).unwrap();
        // Unchanged: stays out of Google, run after run.
        assert_eq!(plan(&s, &[t], &[], &policy).unwrap(), Plan::default());
        // Changed in Advoware: modification beats deletion.
        let changed = termin(1, 3, "Neu");
        let p = plan(&s, &[changed], &[], &policy).unwrap();
        assert!(matches!(actions(&p)[..], [Action::CreateInGoogle { .. }]));
        // Deleted in Advoware: the tombstone goes.
        let p = plan(&s, &[], &[], &policy).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [Action::ForgetPair { event_id: None, .. }]
        ));
    }

    #[test]
    fn rule5_changed_in_advoware_always_recreates() {
        let policy = Policy {
            recreate_deleted_in_google: false,
            ..Policy::default()
        };
        let (_, _, s) = synced();
        let p = plan(&s, &[termin(1, 3, "Neu")], &[], &policy).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [
                Action::Conflict {
                    resolution: Resolution::RecreatedInGoogle,
                    ..
                },
                Action::CreateInGoogle { .. }
            ]
        ));
    }

    #[test]
    fn rule6_deleted_in_advoware_deletes_in_google_unless_changed_there() {
        let (_, e, s) = synced();
        let p = plan(&s, &[], std::slice::from_ref(&e), &Policy::default()).unwrap();
        assert_eq!(
            actions(&p),
            vec![&Action::DeleteFromGoogle {
                event_id: "e1".into()
            }]
        );
        let changed = GoogleEvent {
            data: termin_to_event(&termin(1, 3, "Geändert"), &ContentMode::Full).unwrap(),
            ..e
        };
        let p = plan(&s, &[], &[changed], &Policy::default()).unwrap();
        let [Action::Conflict {
            resolution: Resolution::RecreatedInAdvoware,
            ..
        }, Action::CreateInAdvoware { termin, .. }] = &actions(&p)[..]
        else {
            panic!("{p:?}")
        };
        assert_eq!(termin.fr_nr, None, "the stale frNr is not reused");
    }

    #[test]
    fn rule7_deleted_on_both_sides_is_forgotten() {
        let (_, _, s) = synced();
        let p = plan(&s, &[], &[], &Policy::default()).unwrap();
        assert_eq!(
            actions(&p),
            vec![&Action::ForgetPair {
                frnr: FrNr(1),
                event_id: Some("e1".into())
            }]
        );
    }

    #[test]
    fn rule8_google_created_appointments_are_deleted_in_advoware_only_when_allowed() {
        let t = termin(1, 3, "Aus Google");
        let e = event_of(&t, "e1");
        let s = state_of(&[pair(&t, &e, Origin::Google)]);
        let p = plan(&s, std::slice::from_ref(&t), &[], &Policy::default()).unwrap();
        assert!(matches!(actions(&p)[..], [Action::CreateInGoogle { .. }]));
        let allowed = Policy {
            advoware_delete_allowed: true,
            ..Policy::default()
        };
        let p = plan(&s, std::slice::from_ref(&t), &[], &allowed).unwrap();
        assert_eq!(
            actions(&p),
            vec![&Action::DeleteFromAdvoware { frnr: FrNr(1) }]
        );
        // Advoware-created appointments are never deleted in Advoware.
        let (t, _, s) = synced();
        let p = plan(&s, &[t], &[], &allowed).unwrap();
        assert!(matches!(actions(&p)[..], [Action::CreateInGoogle { .. }]));
    }

    #[test]
    fn rule9_an_empty_side_is_an_outage() {
        let ts: Vec<_> = (1..=5).map(|n| termin(n, 3, "x")).collect();
        let es: Vec<_> = ts
            .iter()
            .map(|t| event_of(t, &format!("e{}", t.fr_nr.unwrap())))
            .collect();
        let pairs: Vec<_> = ts
            .iter()
            .zip(&es)
            .map(|(t, e)| pair(t, e, Origin::Advoware))
            .collect();
        let s = state_of(&pairs);
        assert_eq!(
            plan(&s, &[], &es, &Policy::default()),
            Err(PlanError::SideLooksEmpty {
                side: Side::Advoware,
                known: 5
            })
        );
        assert_eq!(
            plan(&s, &ts, &[], &Policy::default()),
            Err(PlanError::SideLooksEmpty {
                side: Side::Google,
                known: 5
            })
        );
        // Below the threshold, or with the guard overridden, it is planned normally.
        let s4 = state_of(&pairs[..4]);
        assert!(plan(&s4, &[], &es[..4], &Policy::default()).is_ok());
        let off = Policy {
            empty_side_guard: false,
            ..Policy::default()
        };
        assert_eq!(plan(&s, &[], &es, &off).unwrap().writes(), 5);
    }

    #[test]
    fn rule10_no_change_means_no_steps() {
        let (t, e, s) = synced();
        assert_eq!(
            plan(&s, &[t], &[e], &Policy::default()).unwrap(),
            Plan::default()
        );
    }

    #[test]
    fn unmappable_items_are_skipped_and_their_pairs_kept() {
        let (mut t, e, s) = synced();
        t.datum = Some("kaputt".into());
        let p = plan(&s, &[t], std::slice::from_ref(&e), &Policy::default()).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [Action::Skip {
                item: Item::Termin(Some(FrNr(1))),
                reason: MappingError::InvalidDate { .. }
            }]
        ));
        let (t, _, s) = synced();
        let mut bad = e;
        bad.data.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=MO,TU".into()];
        let p = plan(&s, &[t], &[bad], &Policy::default()).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [Action::Skip {
                item: Item::Event(_),
                ..
            }]
        ));
        let mut no_nr = termin(1, 3, "x");
        no_nr.fr_nr = None;
        let p = plan(&SyncState::new(sb()), &[no_nr], &[], &Policy::default()).unwrap();
        assert!(matches!(
            actions(&p)[..],
            [Action::Skip {
                item: Item::Termin(None),
                ..
            }]
        ));
    }

    #[test]
    fn busy_only_keeps_advoware_texts_when_google_moves_the_time() {
        let policy = Policy {
            content_mode: ContentMode::BusyOnly {
                title: "belegt".into(),
            },
            ..Policy::default()
        };
        let t = termin(1, 3, "Mandant Müller");
        let e = GoogleEvent {
            id: "e1".into(),
            updated: None,
            data: termin_to_event(&t, &policy.content_mode).unwrap(),
        };
        assert_eq!(e.data.summary.as_deref(), Some("belegt"));
        let s = state_of(&[pair(&t, &e, Origin::Advoware)]);
        assert_eq!(
            plan(
                &s,
                std::slice::from_ref(&t),
                std::slice::from_ref(&e),
                &policy
            )
            .unwrap(),
            Plan::default()
        );
        let mut moved_t = termin(1, 4, "egal");
        moved_t.text = None;
        let moved = GoogleEvent {
            data: termin_to_event(&moved_t, &policy.content_mode).unwrap(),
            ..e
        };
        let p = plan(&s, &[t], &[moved], &policy).unwrap();
        let [Action::UpdateAdvoware { termin, .. }] = &actions(&p)[..] else {
            panic!("{p:?}")
        };
        assert_eq!(termin.text.as_deref(), Some("Mandant Müller"));
        assert_eq!(termin.datum.as_deref(), Some("2026-02-04T00:00:00"));
    }

    #[test]
    fn advoware_timestamps_are_berlin_wall_clock() {
        assert_eq!(
            parse_berlin("2026-07-01T12:00:00"),
            DateTime::from_timestamp(1_782_900_000, 0)
        );
        assert_eq!(
            parse_berlin("2026-01-01 01:00:00.5").map(|t| t.timestamp()),
            Some(1_767_225_600)
        );
        assert_eq!(parse_berlin("gestern"), None);
    }
}

/// Random worlds and random edits on both sides, synced through a tiny simulator of Advoware
/// and Google: the plan must converge in two rounds and keep what the policy says to keep.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod proptests {
    use super::*;
    use crate::sync::calendar::mapping::utc_to_berlin;
    use crate::sync::calendar::state::Created;
    use bitbylaw_core::ids::Kuerzel;
    use proptest::prelude::*;

    /// Both systems in memory; every write stamps the logical clock (a minute per write).
    #[derive(Debug, Clone)]
    struct World {
        adv: BTreeMap<FrNr, AdvowareTermin>,
        goo: BTreeMap<String, GoogleEvent>,
        clock: i64,
        next_frnr: u64,
        next_id: u64,
    }

    /// Winter dates only, so no local time falls into a DST change.
    fn content(seed: u16) -> AdvowareTermin {
        let day = 1 + u32::from(seed % 27);
        let hour = 8 + u32::from(seed / 27 % 9);
        AdvowareTermin {
            kuerzel: Kuerzel::new("SB").ok(),
            datum: Some(format!("2026-02-{day:02}T00:00:00")),
            uhrzeit_von: Some(format!("{hour:02}:00:00")),
            uhrzeit_bis: Some(format!("{hour:02}:30:00")),
            text: Some(format!("T{}", seed % 50)),
            ..AdvowareTermin::default()
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Edit {
        AdvCreate(u16),
        AdvUpdate(usize, u16),
        AdvDelete(usize),
        GooCreate(u16),
        GooUpdate(usize, u16),
        GooDelete(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<u16>().prop_map(Edit::AdvCreate),
            (any::<usize>(), any::<u16>()).prop_map(|(i, c)| Edit::AdvUpdate(i, c)),
            any::<usize>().prop_map(Edit::AdvDelete),
            any::<u16>().prop_map(Edit::GooCreate),
            (any::<usize>(), any::<u16>()).prop_map(|(i, c)| Edit::GooUpdate(i, c)),
            any::<usize>().prop_map(Edit::GooDelete),
        ]
    }

    /// What the edits touched, to check afterwards that one-sided edits survived.
    #[derive(Debug, Default)]
    struct Touched {
        adv: BTreeSet<FrNr>,
        goo: BTreeSet<String>,
    }

    impl World {
        fn new() -> Self {
            Self {
                adv: BTreeMap::new(),
                goo: BTreeMap::new(),
                clock: 0,
                next_frnr: 1,
                next_id: 1,
            }
        }

        fn tick(&mut self) -> DateTime<Utc> {
            self.clock += 1;
            DateTime::from_timestamp(1_767_225_600 + self.clock * 60, 0).unwrap()
        }

        fn write_adv(&mut self, frnr: FrNr, mut t: AdvowareTermin) {
            let now = self.tick();
            t.fr_nr = Some(frnr);
            t.zuletzt_geaendert_am =
                Some(utc_to_berlin(now).format("%Y-%m-%dT%H:%M:%S").to_string());
            self.adv.insert(frnr, t);
        }

        fn write_goo(&mut self, id: String, data: EventData) {
            let updated = Some(self.tick());
            self.goo
                .insert(id.clone(), GoogleEvent { id, updated, data });
        }

        fn new_frnr(&mut self) -> FrNr {
            self.next_frnr += 1;
            FrNr(self.next_frnr)
        }

        fn new_id(&mut self) -> String {
            self.next_id += 1;
            format!("ev{}", self.next_id)
        }

        fn edit(&mut self, e: Edit, touched: &mut Touched) {
            let nth_adv = |w: &Self, i: usize| w.adv.keys().nth(i % w.adv.len().max(1)).copied();
            let nth_goo = |w: &Self, i: usize| w.goo.keys().nth(i % w.goo.len().max(1)).cloned();
            match e {
                Edit::AdvCreate(c) => {
                    let frnr = self.new_frnr();
                    self.write_adv(frnr, content(c));
                    touched.adv.insert(frnr);
                }
                Edit::AdvUpdate(i, c) => {
                    if let Some(frnr) = nth_adv(self, i) {
                        self.write_adv(frnr, content(c));
                        touched.adv.insert(frnr);
                    }
                }
                Edit::AdvDelete(i) => {
                    if let Some(frnr) = nth_adv(self, i) {
                        self.adv.remove(&frnr);
                        touched.adv.insert(frnr);
                    }
                }
                Edit::GooCreate(c) => {
                    let id = self.new_id();
                    let data = termin_to_event(&content(c), &ContentMode::Full).unwrap();
                    self.write_goo(id.clone(), data);
                    touched.goo.insert(id);
                }
                Edit::GooUpdate(i, c) => {
                    if let Some(id) = nth_goo(self, i) {
                        let props = self.goo[&id].data.private_properties.clone();
                        let mut data = termin_to_event(&content(c), &ContentMode::Full).unwrap();
                        data.private_properties = props;
                        self.write_goo(id.clone(), data);
                        touched.goo.insert(id);
                    }
                }
                Edit::GooDelete(i) => {
                    if let Some(id) = nth_goo(self, i) {
                        self.goo.remove(&id);
                        touched.goo.insert(id);
                    }
                }
            }
        }

        fn plan(&self, state: &SyncState, policy: &Policy) -> Plan {
            let adv: Vec<_> = self.adv.values().cloned().collect();
            let goo: Vec<_> = self.goo.values().cloned().collect();
            plan(state, &adv, &goo, policy).unwrap()
        }

        /// Executes a plan like the real caller: state before, action, state after.
        fn apply(&mut self, state: &mut SyncState, plan: &Plan) -> Result<(), TestCaseError> {
            self.apply_until(state, plan, None)
        }

        /// Like [`World::apply`], but the process dies at step `crash.0`: before its action, or
        /// (`crash.1`) after the action but before the state write.
        fn apply_until(
            &mut self,
            state: &mut SyncState,
            plan: &Plan,
            crash: Option<(usize, bool)>,
        ) -> Result<(), TestCaseError> {
            for (i, step) in plan.steps.iter().enumerate() {
                if let Some(before) = &step.before {
                    state.apply(before, None).unwrap();
                }
                let crash_here = crash.filter(|(at, _)| *at == i);
                if matches!(crash_here, Some((_, false))) {
                    return Ok(());
                }
                let created = match &step.action {
                    Action::CreateInGoogle { event, .. } => {
                        let id = self.new_id();
                        self.write_goo(id.clone(), event.clone());
                        Some(Created::EventId(id))
                    }
                    Action::UpdateGoogle { event_id, event } => {
                        prop_assert!(
                            self.goo.contains_key(event_id),
                            "update of missing {}",
                            event_id
                        );
                        self.write_goo(event_id.clone(), event.clone());
                        None
                    }
                    Action::DeleteFromGoogle { event_id } => {
                        prop_assert!(self.goo.remove(event_id).is_some());
                        None
                    }
                    Action::CreateInAdvoware { termin, .. } => {
                        prop_assert_eq!(termin.fr_nr, None);
                        let frnr = self.new_frnr();
                        self.write_adv(frnr, termin.clone());
                        Some(Created::FrNr(frnr))
                    }
                    Action::UpdateAdvoware { frnr, termin } => {
                        prop_assert!(self.adv.contains_key(frnr));
                        self.write_adv(*frnr, termin.clone());
                        None
                    }
                    Action::DeleteFromAdvoware { frnr } => {
                        prop_assert!(self.adv.remove(frnr).is_some());
                        None
                    }
                    Action::Skip { .. } => {
                        prop_assert!(false, "nothing here is unmappable: {:?}", step);
                        None
                    }
                    Action::ForgetPair { .. }
                    | Action::RecordInSync { .. }
                    | Action::Conflict { .. } => None,
                };
                if crash_here.is_some() {
                    return Ok(());
                }
                state.apply(&step.after, created.as_ref()).unwrap();
            }
            Ok(())
        }

        /// Two plan/apply rounds, then the third plan must be empty and the world consistent.
        fn sync(&mut self, state: &mut SyncState, policy: &Policy) -> Result<(), TestCaseError> {
            for _ in 0..2 {
                let p = self.plan(state, policy);
                self.apply(state, &p)?;
            }
            let third = self.plan(state, policy);
            prop_assert_eq!(&third, &Plan::default(), "not converged: {:?}", state);
            self.check(state, policy)
        }

        fn check(&self, state: &SyncState, policy: &Policy) -> Result<(), TestCaseError> {
            for pair in state.pairs.values() {
                let t = self.adv.get(&pair.frnr);
                let e = self.goo.get(&pair.event_id);
                prop_assert!(t.is_some() && e.is_some(), "dangling pair {:?}", pair);
                if let (Some(t), Some(e)) = (t, e) {
                    prop_assert_eq!(
                        content_hash_termin(t).unwrap(),
                        content_hash_event(&e.data).unwrap()
                    );
                    prop_assert_eq!(
                        e.data.private_properties.get(FRNR_PROPERTY),
                        Some(&pair.frnr.to_string())
                    );
                }
            }
            for frnr in self.adv.keys() {
                let kept_out =
                    !policy.recreate_deleted_in_google && state.tombstones.contains_key(frnr);
                prop_assert!(
                    state.pairs.contains_key(frnr) || kept_out,
                    "{} not in Google",
                    frnr
                );
            }
            let mut tags = BTreeSet::new();
            for e in self.goo.values() {
                prop_assert!(
                    state.pair_of_event(&e.id).is_some(),
                    "{} not in Advoware",
                    e.id
                );
                let tag = e.data.private_properties.get(FRNR_PROPERTY).cloned();
                prop_assert!(tags.insert(tag), "duplicate {:?}", e);
            }
            prop_assert!(state.pending.is_empty());
            Ok(())
        }
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (any::<bool>(), any::<bool>()).prop_map(|(delete, recreate)| Policy {
            advoware_delete_allowed: delete,
            recreate_deleted_in_google: recreate,
            empty_side_guard: false,
            ..Policy::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_edits_converge_in_two_rounds(
            policy in policy(),
            initial in proptest::collection::vec(edit(), 0..12),
            edits in proptest::collection::vec(edit(), 0..16),
        ) {
            let mut world = World::new();
            let mut state = SyncState::new(Kuerzel::new("SB").unwrap());
            let mut ignored = Touched::default();
            for e in initial.iter().filter(|e| matches!(e, Edit::AdvCreate(_) | Edit::GooCreate(_))) {
                world.edit(*e, &mut ignored);
            }
            world.sync(&mut state, &policy)?;

            let before = world.clone();
            let state_before = state.clone();
            let mut touched = Touched::default();
            for e in &edits {
                world.edit(*e, &mut touched);
            }
            let edited = world.clone();
            world.sync(&mut state, &policy)?;

            // Nothing lost that the policy keeps: Advoware appointments survive unless the
            // policy allows deleting Google-created ones that were deleted in Google.
            for (frnr, t) in &edited.adv {
                let may_go = policy.advoware_delete_allowed
                    && state_before.pairs.get(frnr).is_some_and(|p| p.origin == Origin::Google);
                prop_assert!(may_go || world.adv.contains_key(frnr), "lost {:?}", t);
            }
            // Events the user created in Google reach Advoware.
            for (id, e) in &edited.goo {
                if !before.goo.contains_key(id) {
                    let h = content_hash_event(&e.data).unwrap();
                    prop_assert!(world.adv.values().any(|t| content_hash_termin(t).unwrap() == h));
                }
            }
            // One-sided edits win: an appointment edited only in Advoware keeps that content,
            // an event edited only in Google brings its content to Advoware.
            for pair in state_before.pairs.values() {
                let (a, g) = (touched.adv.contains(&pair.frnr), touched.goo.contains(&pair.event_id));
                match (edited.adv.get(&pair.frnr), edited.goo.get(&pair.event_id)) {
                    (Some(t), _) if a && !g => {
                        prop_assert_eq!(content_hash_termin(&world.adv[&pair.frnr]).unwrap(), content_hash_termin(t).unwrap());
                    }
                    (Some(_), Some(e)) if g && !a => {
                        prop_assert_eq!(content_hash_termin(&world.adv[&pair.frnr]).unwrap(), content_hash_event(&e.data).unwrap());
                    }
                    _ => {}
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The caller persists the state per step, so a run that dies anywhere (before an
        /// action, or after it but before its state write) is finished by the next runs without
        /// duplicates or losses.
        #[test]
        fn a_crashed_run_resumes_cleanly(
            policy in policy(),
            initial in proptest::collection::vec(edit(), 0..10),
            edits in proptest::collection::vec(edit(), 0..12),
            crash_at in any::<usize>(),
            lose_state in any::<bool>(),
        ) {
            let mut world = World::new();
            let mut state = SyncState::new(Kuerzel::new("SB").unwrap());
            let mut touched = Touched::default();
            for e in initial.iter().filter(|e| matches!(e, Edit::AdvCreate(_) | Edit::GooCreate(_))) {
                world.edit(*e, &mut touched);
            }
            world.sync(&mut state, &policy)?;
            for e in &edits {
                world.edit(*e, &mut touched);
            }
            let edited = world.clone();
            let mut reference = (world.clone(), state.clone());
            reference.0.sync(&mut reference.1, &policy)?;
            let p = world.plan(&state, &policy);
            let at = crash_at % p.steps.len().max(1);
            world.apply_until(&mut state, &p, Some((at, lose_state)))?;
            world.sync(&mut state, &policy)?;
            // Same contents as without the crash: nothing duplicated, nothing lost.
            let contents = |w: &World| {
                let mut v: Vec<String> =
                    w.adv.values().map(|t| content_hash_termin(t).unwrap()).collect();
                v.sort();
                v
            };
            prop_assert_eq!(contents(&world), contents(&reference.0));
            prop_assert_eq!(world.goo.len(), reference.0.goo.len());
            if !policy.advoware_delete_allowed {
                for frnr in edited.adv.keys() {
                    prop_assert!(world.adv.contains_key(frnr), "lost {}", frnr);
                }
            }
        }
    }
}
