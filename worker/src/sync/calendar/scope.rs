//! Which appointments and events one sync run is about, and the Google-side event mirror.
//!
//! Advoware is listed for a date window (default −30 … +365 days), but Google's incremental
//! sync cannot be combined with a time filter, so the Google side is always the whole calendar.
//! Without care, an appointment that simply left the window (time passed) would look deleted in
//! Advoware and its Google event would be deleted. [`scope`] therefore narrows both the Google
//! events and the state's pairs to what the window covers:
//!
//! - a Google event is in scope when it overlaps the window, or when it belongs (by pair or by
//!   its `frNr` tag) to an appointment Advoware listed;
//! - a pair is in scope when Advoware listed its appointment, when its event is in scope, or when
//!   its event is gone from Google altogether (then there is nothing left to protect).
//!
//! Out-of-scope pairs are not shown to the planner and so are neither changed nor forgotten.
//! What remains ambiguous — a pair whose appointment Advoware did not list while its event is in
//! scope — is what [`deletion_suspects`] returns: the engine confirms each with a direct GET
//! before the planner may treat it as deleted.

use std::collections::{BTreeMap, BTreeSet};

use bitbylaw_core::ids::FrNr;
use chrono::{Days, NaiveDate};

use super::diff::GoogleEvent;
use super::mapping::{utc_to_berlin, AdvowareTermin, Appointment, EventData, When, FRNR_PROPERTY};
use super::state::SyncState;
use super::MappingError;

/// Both ends inclusive, Europe/Berlin dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
}

impl Window {
    /// `today − past_days … today + future_days`.
    pub fn around(today: NaiveDate, past_days: u32, future_days: u32) -> Self {
        Self {
            from: today
                .checked_sub_days(Days::new(past_days.into()))
                .unwrap_or(NaiveDate::MIN),
            to: today
                .checked_add_days(Days::new(future_days.into()))
                .unwrap_or(NaiveDate::MAX),
        }
    }
}

/// One entry of Google's incremental event list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventChange {
    /// A live event (new or changed).
    Live(GoogleEvent),
    /// A deleted event (`status: "cancelled"`).
    Cancelled(String),
    /// A live event the client could not read (no start, …); kept out of the mirror.
    Unreadable {
        /// Event id.
        id: String,
        /// Why.
        reason: MappingError,
    },
}

/// All pages of one `events.list` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventChanges {
    /// In Google's order.
    pub changes: Vec<EventChange>,
    /// The token for the next incremental list.
    pub next_sync_token: String,
}

/// Applies one list result to the event mirror (`id → event`). A full list replaces it.
pub fn apply_changes(
    mirror: &mut BTreeMap<String, GoogleEvent>,
    changes: &[EventChange],
    full: bool,
) {
    if full {
        mirror.clear();
    }
    for c in changes {
        match c {
            EventChange::Live(e) => {
                mirror.insert(e.id.clone(), e.clone());
            }
            EventChange::Cancelled(id) | EventChange::Unreadable { id, .. } => {
                mirror.remove(id);
            }
        }
    }
}

/// The Berlin days an event covers, `None` for the last day of an open-ended series.
fn event_days(e: &EventData) -> Result<(NaiveDate, Option<NaiveDate>), MappingError> {
    let a = Appointment::from_event(e)?;
    let (first, last) = match a.when {
        When::AllDay { first, last } => (first, last),
        When::Timed { start, end } => (utc_to_berlin(start).date(), utc_to_berlin(end).date()),
    };
    Ok(match a.series {
        None => (first, Some(last)),
        Some(s) => (first, s.last.map(|l| l.max(last))),
    })
}

/// Whether the event overlaps the window. Unreadable events count as inside (the planner then
/// reports them instead of silently ignoring them).
pub fn event_overlaps(e: &EventData, w: &Window) -> bool {
    match event_days(e) {
        Ok((first, last)) => first <= w.to && last.is_none_or(|l| l >= w.from),
        Err(_) => true,
    }
}

/// The `frNr` an event is tagged with, if readable.
pub fn event_tag(e: &EventData) -> Option<FrNr> {
    e.private_properties
        .get(FRNR_PROPERTY)
        .and_then(|raw| raw.trim().parse().ok())
}

/// The state and events one run plans with.
#[derive(Debug, Clone)]
pub struct Scoped {
    /// The state restricted to in-scope pairs (tombstones and pending creations kept whole).
    pub state: SyncState,
    /// In-scope events.
    pub google: Vec<GoogleEvent>,
    /// Pairs left out (their appointment lies outside the window).
    pub pairs_out_of_scope: usize,
    /// Events left out.
    pub events_out_of_scope: usize,
}

/// Narrows state and events to the window; see the module docs for the rules.
pub fn scope(
    state: &SyncState,
    advoware: &[AdvowareTermin],
    google: &[GoogleEvent],
    w: &Window,
) -> Scoped {
    let listed: BTreeSet<FrNr> = advoware.iter().filter_map(|t| t.fr_nr).collect();
    let pair_of_event: BTreeMap<&str, FrNr> = state
        .pairs
        .values()
        .map(|p| (p.event_id.as_str(), p.frnr))
        .collect();
    let mut in_scope_ids = BTreeSet::new();
    let mut events = Vec::new();
    let mut events_out = 0;
    for e in google {
        let belongs = pair_of_event
            .get(e.id.as_str())
            .is_some_and(|f| listed.contains(f))
            || event_tag(&e.data).is_some_and(|f| listed.contains(&f));
        if belongs || event_overlaps(&e.data, w) {
            in_scope_ids.insert(e.id.as_str());
            events.push(e.clone());
        } else {
            events_out += 1;
        }
    }
    let present: BTreeSet<&str> = google.iter().map(|e| e.id.as_str()).collect();
    let mut scoped = state.clone();
    let before = scoped.pairs.len();
    scoped.pairs.retain(|frnr, p| {
        listed.contains(frnr)
            || in_scope_ids.contains(p.event_id.as_str())
            || !present.contains(p.event_id.as_str())
    });
    Scoped {
        pairs_out_of_scope: before - scoped.pairs.len(),
        state: scoped,
        google: events,
        events_out_of_scope: events_out,
    }
}

/// Appointments that would be treated as deleted in Advoware (in scope, not listed): paired
/// ones and ones whose `frNr` an in-scope event carries. The engine GETs each to tell "deleted"
/// from "listed elsewhere / moved out of the window".
pub fn deletion_suspects(scoped: &Scoped, advoware: &[AdvowareTermin]) -> BTreeSet<FrNr> {
    let listed: BTreeSet<FrNr> = advoware.iter().filter_map(|t| t.fr_nr).collect();
    scoped
        .state
        .pairs
        .keys()
        .copied()
        .chain(scoped.google.iter().filter_map(|e| event_tag(&e.data)))
        .filter(|f| !listed.contains(f))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::sync::calendar::mapping::EventTime;
    use crate::sync::calendar::state::{Origin, PairState};
    use bitbylaw_core::ids::Kuerzel;
    use chrono::{TimeZone, Utc};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn event(id: &str, day: NaiveDate, tag: Option<u64>, rrule: Option<&str>) -> GoogleEvent {
        let start = Utc.from_utc_datetime(&day.and_hms_opt(9, 0, 0).unwrap());
        GoogleEvent {
            id: id.into(),
            updated: None,
            data: EventData {
                summary: Some("x".into()),
                description: None,
                location: None,
                start: EventTime::DateTime {
                    utc: start,
                    tz: "Europe/Berlin".into(),
                },
                end: EventTime::DateTime {
                    utc: start + chrono::TimeDelta::hours(1),
                    tz: "Europe/Berlin".into(),
                },
                recurrence: rrule.map(|r| vec![r.to_string()]).unwrap_or_default(),
                private_properties: tag
                    .map(|t| [(FRNR_PROPERTY.to_string(), t.to_string())].into())
                    .unwrap_or_default(),
            },
        }
    }

    fn termin(frnr: u64) -> AdvowareTermin {
        AdvowareTermin {
            fr_nr: Some(FrNr(frnr)),
            ..Default::default()
        }
    }

    fn state(pairs: &[(u64, &str)]) -> SyncState {
        let mut s = SyncState::new(Kuerzel::new("SB").unwrap());
        for (f, id) in pairs {
            s.pairs.insert(
                FrNr(*f),
                PairState {
                    frnr: FrNr(*f),
                    event_id: (*id).into(),
                    advoware_hash: "a".into(),
                    google_hash: "g".into(),
                    origin: Origin::Advoware,
                },
            );
        }
        s
    }

    #[test]
    fn window_bounds_are_inclusive_and_series_extend_it() {
        let w = Window::around(d(2026, 11, 23), 30, 365);
        assert_eq!((w.from, w.to), (d(2026, 10, 24), d(2027, 11, 23)));
        assert!(event_overlaps(
            &event("a", d(2026, 10, 24), None, None).data,
            &w
        ));
        assert!(!event_overlaps(
            &event("b", d(2026, 10, 23), None, None).data,
            &w
        ));
        assert!(!event_overlaps(
            &event("c", d(2027, 11, 24), None, None).data,
            &w
        ));
        // a weekly series that started long ago and never ends reaches into the window
        let open = event("d", d(2020, 1, 6), None, Some("RRULE:FREQ=WEEKLY"));
        assert!(event_overlaps(&open.data, &w));
        // one that ended before the window does not
        let ended = event("e", d(2020, 1, 6), None, Some("RRULE:FREQ=WEEKLY;COUNT=3"));
        assert!(!event_overlaps(&ended.data, &w));
    }

    #[test]
    fn pairs_that_left_the_window_are_out_of_scope_not_deleted() {
        let w = Window::around(d(2026, 11, 23), 30, 365);
        // 1: listed, event in window; 2: appointment left the window (not listed), event too;
        // 3: not listed, event in window → suspect; 4: event gone from Google, not listed.
        let s = state(&[(1, "e1"), (2, "e2"), (3, "e3"), (4, "e4")]);
        let google = vec![
            event("e1", d(2026, 12, 1), Some(1), None),
            event("e2", d(2026, 9, 1), Some(2), None),
            event("e3", d(2026, 12, 2), Some(3), None),
            // an old event tagged with a listed frNr (user moved it back in time): in scope
            event("e5", d(2025, 1, 1), Some(1), None),
        ];
        let advoware = vec![termin(1)];
        let sc = scope(&s, &advoware, &google, &w);
        let ids: Vec<&str> = sc.google.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e3", "e5"]);
        assert_eq!(
            sc.state.pairs.keys().copied().collect::<Vec<_>>(),
            [FrNr(1), FrNr(3), FrNr(4)]
        );
        assert_eq!((sc.pairs_out_of_scope, sc.events_out_of_scope), (1, 1));
        assert_eq!(
            deletion_suspects(&sc, &advoware)
                .into_iter()
                .collect::<Vec<_>>(),
            [FrNr(3), FrNr(4)]
        );
    }

    #[test]
    fn mirror_applies_changes_and_full_lists_replace_it() {
        let mut m = BTreeMap::new();
        let a = event("a", d(2026, 12, 1), None, None);
        let b = event("b", d(2026, 12, 2), None, None);
        apply_changes(
            &mut m,
            &[EventChange::Live(a.clone()), EventChange::Live(b.clone())],
            true,
        );
        assert_eq!(m.len(), 2);
        apply_changes(&mut m, &[EventChange::Cancelled("a".into())], false);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b"]);
        apply_changes(&mut m, &[EventChange::Live(a)], true);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a"]);
    }
}
