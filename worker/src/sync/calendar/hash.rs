//! Content hashes for the three-way diff: the engine stores each side's hash after a sync and
//! treats a different hash on the next run as "changed on that side".
//!
//! Both hashes are SHA-256 (lower-case hex) over a canonical serialisation of the normalised
//! [`Appointment`]: title, description, location, all-day dates or UTC start/end (to the second),
//! and the series (frequency, interval, last occurrence date). So they ignore field order, spelling
//! (`09:30` vs `09:30:00`, `datumBis` between two occurrences) and everything not synced:
//! `frNr`, `kuerzel`, `privat`, `zuletztGeaendertAm`, Google `etag`/`updated`/`timeZone`/extended
//! properties. For a Google event written with [`ContentMode::Full`](super::ContentMode::Full) the
//! event hash equals the Termin hash; busy-only events hash their neutral title, which is fine
//! because each side is only ever compared with its own previous hash.

use sha2::{Digest, Sha256};

use super::mapping::{AdvowareTermin, Appointment, EventData, When};
use super::MappingError;

/// Bumped whenever the canonical form changes, so old stored hashes read as "changed" once
/// instead of colliding with a different meaning.
const CANONICAL_VERSION: &str = "calendar-v1";

/// Hash of the synced fields of an Advoware appointment.
pub fn content_hash_termin(termin: &AdvowareTermin) -> Result<String, MappingError> {
    Appointment::from_termin(termin).map(|a| hash_appointment(&a))
}

/// Hash of the synced fields of a Google event.
pub fn content_hash_event(event: &EventData) -> Result<String, MappingError> {
    Appointment::from_event(event).map(|a| hash_appointment(&a))
}

/// Hash of a normalised appointment. Fields are written as `name=<byte length>:<value>;` in a
/// fixed order, which needs no escaping and cannot be ambiguous.
pub fn hash_appointment(a: &Appointment) -> String {
    let (kind, start, end) = match a.when {
        When::AllDay { first, last } => ("allDay", first.to_string(), last.to_string()),
        When::Timed { start, end } => (
            "timed",
            start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
    };
    let (freq, interval, series_last) = match a.series {
        Some(s) => (
            s.freq.rrule_name().to_owned(),
            s.interval.to_string(),
            s.last.map_or_else(|| "open".to_owned(), |d| d.to_string()),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let fields: [(&str, &str); 10] = [
        ("version", CANONICAL_VERSION),
        ("title", &a.title),
        ("description", &a.description),
        ("location", &a.location),
        ("kind", kind),
        ("start", &start),
        ("end", &end),
        ("freq", &freq),
        ("interval", &interval),
        ("seriesLast", &series_last),
    ];
    let mut hasher = Sha256::new();
    for (name, value) in fields {
        hasher.update(format!("{name}={}:", value.len()).as_bytes());
        hasher.update(value.as_bytes());
        hasher.update(b";");
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::sync::calendar::{termin_to_event, ContentMode};
    use serde_json::json;

    fn termin(v: serde_json::Value) -> AdvowareTermin {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ignores_order_spelling_and_unsynced_fields() {
        let a = termin(
            json!({"frNr": 1, "datum": "2026-12-01T00:00:00", "uhrzeitVon": "09:30:00",
            "uhrzeitBis": "10:15:00", "text": "T", "privat": false, "zuletztGeaendertAm": "2026-11-20T16:02:11"}),
        );
        let b = termin(
            json!({"zuletztGeaendertAm": "2027-01-01T00:00:00", "privat": true, "text": "T",
            "uhrzeitBis": "10:15", "uhrzeitVon": "09:30", "datum": "2026-12-01", "frNr": 2, "notiz": ""}),
        );
        let h = content_hash_termin(&a).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(h, content_hash_termin(&b).unwrap());
        let mut event = termin_to_event(&a, &ContentMode::Full).unwrap();
        assert_eq!(content_hash_event(&event).unwrap(), h);
        event.private_properties.insert("other".into(), "x".into());
        assert_eq!(content_hash_event(&event).unwrap(), h);
        // Busy-only events hash what Google shows.
        let busy = termin_to_event(
            &a,
            &ContentMode::BusyOnly {
                title: "belegt".into(),
            },
        )
        .unwrap();
        assert_ne!(content_hash_event(&busy).unwrap(), h);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = termin(json!({"datum": "2026-12-01", "text": "ab", "notiz": "c"}));
        let b = termin(json!({"datum": "2026-12-01", "text": "a", "notiz": "bc"}));
        assert_ne!(
            content_hash_termin(&a).unwrap(),
            content_hash_termin(&b).unwrap()
        );
    }

    #[test]
    fn unmappable_input_is_an_error() {
        assert_eq!(
            content_hash_termin(&termin(json!({}))),
            Err(MappingError::MissingField("datum"))
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod proptests {
    use super::*;
    use crate::sync::calendar::mapping::proptests::valid_termin;
    use crate::sync::calendar::{event_to_termin, termin_to_event, ContentMode};
    use bitbylaw_core::ids::Kuerzel;
    use proptest::prelude::*;

    /// One edit of a synced field that must change the appointment's meaning.
    fn mutate(t: &AdvowareTermin, which: u8) -> AdvowareTermin {
        let mut m = t.clone();
        let add = |s: &Option<String>| Some(format!("{}x", s.clone().unwrap_or_default()));
        let shift_date = |s: &Option<String>| {
            s.as_deref()
                .and_then(|v| v.get(..10))
                .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .and_then(|d| d.succ_opt())
                .map(|d| d.format("%Y-%m-%dT00:00:00").to_string())
        };
        let recurring = t.turnus.unwrap_or(0) > 0;
        let all_day = t.dauertermin.unwrap_or(false);
        match which % 7 {
            0 => m.text = add(&t.text),
            1 => m.notiz = add(&t.notiz),
            2 => m.ort = add(&t.ort),
            3 => m.datum = shift_date(&t.datum),
            4 => m.dauertermin = Some(!all_day),
            5 if recurring => m.turnus = t.turnus.map(|n| n + 1),
            5 => m.datum_bis = shift_date(&t.datum_bis),
            _ if recurring => m.turnus_art = t.turnus_art.map(|a| a % 4 + 1),
            _ if all_day => m.datum_bis = shift_date(&t.datum_bis),
            // Timed: the end moves five minutes later (generated ends stop at 23:55).
            _ => {
                m.uhrzeit_bis = t
                    .uhrzeit_bis
                    .as_deref()
                    .and_then(|v| chrono::NaiveTime::parse_from_str(v, "%H:%M:%S").ok())
                    .map(|x| x + chrono::TimeDelta::minutes(5))
                    .filter(|y| *y > chrono::NaiveTime::MIN)
                    .map(|y| y.format("%H:%M:%S").to_string())
                    .or_else(|| t.uhrzeit_bis.clone());
            }
        }
        m
    }

    proptest! {
        #[test]
        fn hashes_survive_round_trips(t in valid_termin()) {
            let h = content_hash_termin(&t).unwrap();
            let event = termin_to_event(&t, &ContentMode::Full).unwrap();
            prop_assert_eq!(&content_hash_event(&event).unwrap(), &h);
            let back = event_to_termin(&event, &Kuerzel::new("SB").unwrap()).unwrap();
            prop_assert_eq!(&content_hash_termin(&back).unwrap(), &h);
            let mut noise = back.clone();
            noise.zuletzt_geaendert_am = Some("2030-01-01T00:00:00".into());
            noise.privat = Some(true);
            prop_assert_eq!(&content_hash_termin(&noise).unwrap(), &h);
        }

        #[test]
        fn any_synced_change_changes_the_hash(t in valid_termin(), which in 0u8..7) {
            prop_assume!(super::super::mapping::proptests::times_exist(&t));
            let m = mutate(&t, which);
            prop_assume!(m != t);
            prop_assume!(super::super::mapping::proptests::times_exist(&m));
            let before = Appointment::from_termin(&t).unwrap();
            let after = Appointment::from_termin(&m).unwrap();
            prop_assert_ne!(&before, &after, "edit {} did not change the meaning", which);
            prop_assert_ne!(content_hash_termin(&t).unwrap(), content_hash_termin(&m).unwrap());
        }
    }
}
