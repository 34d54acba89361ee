//! The calendar sync end to end in process: the real Advoware and Google clients against the
//! stateful fakes over loopback, a real `redis-server` for state, mirror, locks and the shared
//! Google budget (issue #6).
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bitbylaw_core::ids::Kuerzel;
use bitbylaw_fakes::advoware::AdvowareFake;
use bitbylaw_fakes::google_calendar::{GoogleCalendarFake, RateLimit};
use bitbylaw_worker::config::CalendarSettings;
use bitbylaw_worker::handlers::calendar::engine::{Engine, RunOptions, SyncError, SyncReport};
use bitbylaw_worker::handlers::calendar::run_options;
use bitbylaw_worker::handlers::calendar::store::{least_recently_synced, CalendarStore};
use bitbylaw_worker::sync::calendar::diff::{PlanError, Side};
use bitbylaw_worker::sync::calendar::mapping::{AdvowareTermin, ContentMode};
use bitbylaw_worker::sync::calendar::{content_hash_event, content_hash_termin, FRNR_PROPERTY};
use chrono::{Days, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde_json::{json, Value};

mod common;

use common::sides::{adate, day, kz, Aw, Gc, Sides};
use common::RedisServer;

struct H {
    _redis: RedisServer,
    advoware: AdvowareFake,
    google: GoogleCalendarFake,
    conn: MultiplexedConnection,
    aw: Arc<Aw>,
    gc: Arc<Gc>,
    settings: CalendarSettings,
}

impl H {
    async fn new() -> H {
        Self::with(CalendarSettings::default(), 60_000).await
    }

    async fn with(settings: CalendarSettings, requests_per_minute: u32) -> H {
        let Sides {
            redis,
            advoware,
            google,
            conn,
            aw,
            gc,
        } = Sides::start(requests_per_minute).await;
        H {
            _redis: redis,
            advoware,
            google,
            conn,
            aw,
            gc,
            settings,
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine {
            advoware: self.aw.as_ref(),
            google: self.gc.as_ref(),
            settings: &self.settings,
        }
    }

    fn opts(&self, k: &str) -> RunOptions {
        run_options(&self.settings, &kz(k), &json!({}))
    }

    async fn sync_with(&self, k: &str, opts: &RunOptions) -> Result<SyncReport, SyncError> {
        let mut store = CalendarStore::new(self.conn.clone(), kz(k));
        self.engine()
            .sync_employee(&mut store, &kz(k), opts, &mut |_| {})
            .await
    }

    async fn sync(&self, k: &str) -> SyncReport {
        let opts = self.opts(k);
        match self.sync_with(k, &opts).await {
            Ok(r) => r,
            Err(e) => panic!("sync of {k} failed: {e}"),
        }
    }

    /// The employee's calendar id as recorded by the sync.
    async fn cal(&self, k: &str) -> String {
        let mut c = self.conn.clone();
        c.hget(format!("bbl:cal:{k}:meta"), "calendar_id")
            .await
            .unwrap()
    }

    /// The live Google event tagged with `frnr`.
    fn event_of(&self, cal: &str, frnr: u64) -> Option<Value> {
        self.google
            .live_events(cal)
            .into_iter()
            .find(|e| tag_of(e) == Some(frnr))
    }

    fn termine_of(&self, k: &str) -> Vec<Value> {
        self.advoware
            .termine()
            .into_iter()
            .filter(|t| t["kuerzel"] == k)
            .collect()
    }

    fn add(&self, k: &str, t: Value) -> u64 {
        let mut t = t;
        t["kuerzel"] = json!(k);
        u64::try_from(self.advoware.insert_termin(t)).unwrap()
    }

    /// Asserts both sides hold the same appointments, each exactly once.
    async fn assert_converged(&self, k: &str) {
        let cal = self.cal(k).await;
        let events = self.google.live_events(&cal);
        let termine = self.termine_of(k);
        let mut c = self.conn.clone();
        let pairs: BTreeMap<String, String> =
            c.hgetall(format!("bbl:cal:{k}:pairs")).await.unwrap();
        assert_eq!(
            pairs.len(),
            termine.len(),
            "one pair per appointment: {pairs:?}"
        );
        let paired_events: BTreeSet<String> = pairs
            .values()
            .map(|p| {
                serde_json::from_str::<Value>(p).unwrap()["eventId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(paired_events.len(), events.len(), "one event per pair");
        for t in &termine {
            let termin: AdvowareTermin = serde_json::from_value(t.clone()).unwrap();
            let frnr = termin.fr_nr.unwrap();
            let p: Value = serde_json::from_str(&pairs[&frnr.to_string()]).unwrap();
            let event_id = p["eventId"].as_str().unwrap();
            let ev = events
                .iter()
                .find(|e| e["id"] == event_id)
                .unwrap_or_else(|| panic!("event of frNr {frnr} missing"));
            let data = bitbylaw_worker::clients::google::event_from_api(
                &serde_json::from_value(ev.clone()).unwrap(),
            )
            .unwrap()
            .data;
            assert_eq!(
                content_hash_termin(&termin).unwrap(),
                content_hash_event(&data).unwrap(),
                "content of frNr {frnr} differs: {t} vs {ev}"
            );
        }
    }
}

fn tag_of(e: &Value) -> Option<u64> {
    e["extendedProperties"]["private"][FRNR_PROPERTY]
        .as_str()
        .and_then(|s| s.parse().ok())
}

fn timed(d: NaiveDate, von: &str, bis: &str, text: &str) -> Value {
    json!({"datum": adate(d), "uhrzeitVon": von, "datumBis": adate(d), "uhrzeitBis": bis,
           "text": text, "notiz": "", "ort": "", "dauertermin": 0, "turnus": 0, "turnusArt": 0})
}

fn user_event(d: NaiveDate, summary: &str) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": format!("{}T14:00:00+00:00", d.format("%Y-%m-%d")), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("{}T15:00:00+00:00", d.format("%Y-%m-%d")), "timeZone": "Europe/Berlin"},
    })
}

fn writes(r: &SyncReport, k: &str) -> usize {
    r.writes.get(k).copied().unwrap_or(0)
}

#[tokio::test]
async fn first_sync_copies_both_ways_and_a_resync_writes_nothing() {
    let h = H::new().await;
    h.add(
        "SB",
        timed(day(3), "09:30:00", "10:15:00", "Mandantengespräch"),
    );
    h.add(
        "SB",
        json!({"datum": adate(day(10)), "uhrzeitVon": "00:00:00", "datumBis": adate(day(12)),
               "uhrzeitBis": "23:59:00", "text": "Urlaub", "dauertermin": 1}),
    );
    h.add(
        "SB",
        json!({"datum": adate(day(1)), "uhrzeitVon": "08:00:00", "datumBis": adate(day(60)),
               "uhrzeitBis": "08:30:00", "text": "Wochenbesprechung", "turnus": 1, "turnusArt": 2}),
    );
    // The user already uses the calendar: an event of theirs must reach Advoware.
    let cal = h.google.add_calendar("Advoware SB");
    h.google
        .user_insert_event(&cal, user_event(day(5), "Gerichtstermin (aus Google)"))
        .unwrap();

    let first = h.sync("SB").await;
    assert_eq!(
        h.cal("SB").await,
        cal,
        "the existing calendar is found by name"
    );
    assert_eq!(writes(&first, "create_google"), 3, "{first:?}");
    assert_eq!(writes(&first, "create_advoware"), 1, "{first:?}");
    assert!(first.full_google_list);
    let from_google: Vec<Value> = h
        .termine_of("SB")
        .into_iter()
        .filter(|t| t["text"] == "Gerichtstermin (aus Google)")
        .collect();
    assert_eq!(from_google.len(), 1);
    h.assert_converged("SB").await;

    h.google.reset_calls();
    let before = h.advoware.requests().len();
    let second = h.sync("SB").await;
    assert_eq!(second.total_writes(), 0, "{second:?}");
    assert!(!second.full_google_list, "the resync is incremental");
    let calls = h.google.calls(&cal);
    assert_eq!((calls.lists, calls.writes), (1, 0), "{calls:?}");
    let advoware_calls: Vec<_> = h.advoware.requests()[before..]
        .iter()
        .filter(|r| !r.path.ends_with("/Token"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(advoware_calls.len(), 1, "{advoware_calls:?}");
}

#[tokio::test]
async fn edits_and_deletions_follow_the_policy() {
    let h = H::new().await;
    let a = h.add("SB", timed(day(2), "09:00:00", "10:00:00", "A"));
    let b = h.add("SB", timed(day(3), "09:00:00", "10:00:00", "B"));
    let c = h.add("SB", timed(day(4), "09:00:00", "10:00:00", "C"));
    let d = h.add("SB", timed(day(5), "09:00:00", "10:00:00", "D"));
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    let event_of = |frnr: u64| h.event_of(&cal, frnr);

    // Advoware edit → Google; Google edit → Advoware.
    h.advoware.edit_termin(
        a as i64,
        json!({"text": "A (verlegt)", "uhrzeitVon": "11:00:00", "uhrzeitBis": "12:00:00"}),
    );
    let eb = event_of(b).unwrap();
    h.google
        .user_patch_event(
            &cal,
            eb["id"].as_str().unwrap(),
            json!({"summary": "B aus Google", "location": "Saal 3"}),
        )
        .unwrap();
    // Deleted in Google → recreated (Advoware is the system of record).
    let ec = event_of(c).unwrap();
    h.google
        .user_delete_event(&cal, ec["id"].as_str().unwrap())
        .unwrap();
    // Deleted in Advoware → deleted in Google.
    h.advoware.remove_termin(d as i64);

    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "update_google"), 1, "{r:?}");
    assert_eq!(writes(&r, "update_advoware"), 1, "{r:?}");
    assert_eq!(writes(&r, "create_google"), 1, "{r:?}");
    assert_eq!(writes(&r, "delete_google"), 1, "{r:?}");
    assert_eq!(event_of(a).unwrap()["summary"], "A (verlegt)");
    let tb = h.advoware.termin(b as i64).unwrap();
    assert_eq!(
        (tb["text"].as_str(), tb["ort"].as_str()),
        (Some("B aus Google"), Some("Saal 3"))
    );
    assert!(event_of(c).is_some(), "recreated");
    assert!(event_of(d).is_none(), "deleted");
    h.assert_converged("SB").await;

    // An event created in Google and then deleted there stays in Advoware (no Advoware
    // deletions by default) and is not duplicated.
    let e = h
        .google
        .user_insert_event(&cal, user_event(day(6), "nur Google"))
        .unwrap();
    h.sync("SB").await;
    let created: Vec<Value> = h
        .termine_of("SB")
        .into_iter()
        .filter(|t| t["text"] == "nur Google")
        .collect();
    assert_eq!(created.len(), 1);
    h.google
        .user_delete_event(&cal, e["id"].as_str().unwrap())
        .unwrap();
    h.sync("SB").await;
    assert_eq!(
        h.termine_of("SB")
            .iter()
            .filter(|t| t["text"] == "nur Google")
            .count(),
        1,
        "nothing is deleted in Advoware unless allowed"
    );
    let third = h.sync("SB").await;
    assert_eq!(third.total_writes(), 0, "{third:?}");
}

/// Issue 16 item 10: the deletion check reads one appointment as FACTS §1 says (`?frnr=`); the
/// fake, like Advoware's documentation, has no GET on `Termine/{frNr}` (405). A deleted
/// appointment used to fail the whole run of its employee, every time.
#[tokio::test]
async fn a_deleted_appointment_no_longer_blocks_its_employees_sync() {
    let h = H::new().await;
    let keep = h.add("SB", timed(day(2), "09:00:00", "10:00:00", "bleibt"));
    let gone = h.add("SB", timed(day(3), "09:00:00", "10:00:00", "entfällt"));
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    h.advoware.remove_termin(gone as i64);
    h.advoware.controls().clear_requests();

    let r = h.sync("SB").await;
    assert_eq!(r.deletion_checks, 1, "{r:?}");
    assert_eq!(writes(&r, "delete_google"), 1, "{r:?}");
    assert!(h.event_of(&cal, gone).is_none());
    assert!(h.event_of(&cal, keep).is_some());
    let check = h
        .advoware
        .requests()
        .into_iter()
        .find(|q| q.query_param("frnr").is_some())
        .expect("the deletion check");
    assert_eq!(
        (check.method.as_str(), check.path.as_str()),
        ("GET", "/api/v1/advonet/Termine")
    );
    assert_eq!(check.query_param("frnr"), Some(gone.to_string()));
    h.assert_converged("SB").await;
}

/// Issue 16 item 10: a single read configured in a form this Advoware does not have (405) is a
/// configuration error naming the path — the suspect pair is left alone, everything else of the
/// employee's calendar still syncs, and the run succeeds.
#[tokio::test]
async fn a_misconfigured_single_read_is_a_config_error_not_a_failed_sync() {
    let h = H::new().await;
    let gone = h.add("SB", timed(day(2), "09:00:00", "10:00:00", "entfällt"));
    h.sync("SB").await;
    let cal = h.cal("SB").await;

    let mut settings = common::sides::advoware_settings(&h.advoware);
    settings.paths.termin_get = "api/v1/advonet/Termine/{frnr}".into();
    let aw = common::sides::advoware_client(&settings, h.conn.clone());
    let engine = Engine {
        advoware: &aw,
        google: h.gc.as_ref(),
        settings: &h.settings,
    };
    h.advoware.remove_termin(gone as i64);
    let new = h.add("SB", timed(day(4), "09:00:00", "10:00:00", "neu"));
    let mut store = CalendarStore::new(h.conn.clone(), kz("SB"));
    let r = engine
        .sync_employee(&mut store, &kz("SB"), &h.opts("SB"), &mut |_| {})
        .await
        .expect("the run succeeds");
    assert_eq!(r.endpoint_mismatches, 1, "{r:?}");
    assert!(
        r.summary().contains("endpoint_mismatches=1"),
        "{}",
        r.summary()
    );
    assert_eq!(
        writes(&r, "delete_google"),
        0,
        "unconfirmed: left alone {r:?}"
    );
    assert!(h.event_of(&cal, gone).is_some());
    assert!(h.event_of(&cal, new).is_some(), "the rest still syncs");
    let refused = h
        .advoware
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.path == format!("/api/v1/advonet/Termine/{gone}"))
        .count();
    assert_eq!(refused, 1);

    // The client's error names the path and the setting to fix.
    let err = aw.get_termin(gone as i64).await.expect_err("405");
    let text = err.to_string();
    for needle in [
        "405",
        &format!("GET api/v1/advonet/Termine/{gone}"),
        "advoware.paths.termin_get",
        "ADVOWARE_PATH_TERMIN_GET",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
    assert!(!err.is_retryable());

    // With the documented form the deletion goes through.
    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "delete_google"), 1, "{r:?}");
    assert!(h.event_of(&cal, gone).is_none());
}

#[tokio::test]
async fn advoware_deletions_of_google_created_appointments_when_allowed() {
    let settings = CalendarSettings {
        advoware_delete_allowed: true,
        recreate_deleted_in_google: false,
        ..CalendarSettings::default()
    };
    let h = H::with(settings, 60_000).await;
    let own = h.add(
        "SB",
        timed(day(2), "09:00:00", "10:00:00", "Advoware-Termin"),
    );
    let cal = h.google.add_calendar("Advoware SB");
    let e = h
        .google
        .user_insert_event(&cal, user_event(day(6), "aus Google"))
        .unwrap();
    h.sync("SB").await;
    assert_eq!(h.termine_of("SB").len(), 2);
    h.google
        .user_delete_event(&cal, e["id"].as_str().unwrap())
        .unwrap();
    let own_event = h
        .google
        .live_events(&cal)
        .into_iter()
        .find(|e| e["summary"] == "Advoware-Termin")
        .unwrap();
    h.google
        .user_delete_event(&cal, own_event["id"].as_str().unwrap())
        .unwrap();
    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "delete_advoware"), 1, "{r:?}");
    assert_eq!(
        writes(&r, "create_google"),
        0,
        "not recreated by this policy: {r:?}"
    );
    let left: Vec<Value> = h.termine_of("SB");
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0]["frNr"],
        json!(own),
        "Advoware's own appointment is never deleted"
    );
    let again = h.sync("SB").await;
    assert_eq!(again.total_writes(), 0, "the tombstone holds: {again:?}");
}

#[tokio::test]
async fn recurring_all_day_multi_day_and_dst_cases_survive_the_round_trip() {
    let h = H::new().await;
    // The next spring and autumn DST changes (last Sundays of March/October) after today:
    // both always lie within the +365-day window.
    let this_year = chrono::Datelike::year(&day(0));
    let last_sunday = |year: i32, month: u32| {
        let mut d = NaiveDate::from_ymd_opt(year, month, 31).unwrap();
        while chrono::Datelike::weekday(&d) != chrono::Weekday::Sun {
            d = d.pred_opt().unwrap();
        }
        d
    };
    let next = |month: u32| {
        let d = last_sunday(this_year, month);
        if d > day(0) {
            d
        } else {
            last_sunday(this_year + 1, month)
        }
    };
    let (spring, autumn) = (next(3), next(10));
    assert!(spring <= day(365) && autumn <= day(365));
    let mut originals = vec![
        timed(day(7), "23:30:00", "23:59:00", "spät"),
        json!({"datum": adate(day(8)), "uhrzeitVon": "22:00:00", "datumBis": adate(day(9)),
               "uhrzeitBis": "02:00:00", "text": "über Mitternacht"}),
        json!({"datum": adate(day(20)), "datumBis": adate(day(24)), "uhrzeitVon": "00:00:00",
               "uhrzeitBis": "23:59:00", "text": "Urlaub mehrtägig", "dauertermin": 1}),
        json!({"datum": adate(day(14)), "uhrzeitVon": "00:00:00", "datumBis": adate(day(14)),
               "uhrzeitBis": "23:59:00", "text": "ganztägig", "dauertermin": 1}),
        json!({"datum": adate(day(2)), "uhrzeitVon": "09:00:00", "datumBis": adate(day(100)),
               "uhrzeitBis": "09:30:00", "text": "jede zweite Woche", "turnus": 2, "turnusArt": 2}),
        json!({"datum": adate(day(3)), "uhrzeitVon": "07:00:00", "datumBis": adate(day(9)),
               "uhrzeitBis": "07:15:00", "text": "täglich", "turnus": 1, "turnusArt": 1}),
        json!({"datum": adate(day(4)), "uhrzeitVon": "12:00:00", "datumBis": adate(day(300)),
               "uhrzeitBis": "13:00:00", "text": "monatlich", "turnus": 1, "turnusArt": 3}),
        json!({"datum": adate(day(5)), "uhrzeitVon": "10:00:00", "datumBis": adate(day(5)),
               "uhrzeitBis": "11:00:00", "text": "jährlich offen", "turnus": 1, "turnusArt": 4}),
    ];
    originals.push(timed(spring, "01:30:00", "03:30:00", "Sommerzeit-Wechsel"));
    originals.push(timed(autumn, "01:30:00", "03:30:00", "Winterzeit-Wechsel"));
    for o in &originals {
        h.add("SB", o.clone());
    }
    let first = h.sync("SB").await;
    assert_eq!(
        writes(&first, "create_google"),
        originals.len(),
        "{first:?}"
    );
    assert_eq!(first.skipped, 0, "{first:?}");
    h.assert_converged("SB").await;

    // Google → Advoware: a colleague copies every event into their own calendar by hand (no
    // frNr tag); the sync creates them in Advoware, which must give the same appointments.
    let cal_sb = h.cal("SB").await;
    let cal_ab = h.google.add_calendar("Advoware AB");
    for e in h.google.live_events(&cal_sb) {
        let mut copy = json!({});
        for f in [
            "summary",
            "description",
            "location",
            "start",
            "end",
            "recurrence",
        ] {
            if !e[f].is_null() {
                copy[f] = e[f].clone();
            }
        }
        h.google.user_insert_event(&cal_ab, copy).unwrap();
    }
    let r = h.sync("AB").await;
    assert_eq!(writes(&r, "create_advoware"), originals.len(), "{r:?}");
    let hashes = |k: &str| -> BTreeSet<String> {
        h.termine_of(k)
            .into_iter()
            .map(|t| content_hash_termin(&serde_json::from_value(t).unwrap()).unwrap())
            .collect()
    };
    assert_eq!(
        hashes("SB"),
        hashes("AB"),
        "Advoware → Google → Advoware changed something"
    );
    let again = h.sync("AB").await;
    assert_eq!(again.total_writes(), 0, "{again:?}");
}

#[tokio::test]
async fn conflicts_go_to_the_later_change_and_advoware_wins_ties() {
    let h = H::new().await;
    let a = h.add("SB", timed(day(2), "09:00:00", "10:00:00", "A"));
    let b = h.add("SB", timed(day(3), "09:00:00", "10:00:00", "B"));
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    let event_of = |frnr: u64| h.event_of(&cal, frnr).unwrap();
    // A: Advoware first, Google a minute later → Google wins.
    h.advoware
        .edit_termin(a as i64, json!({"text": "A Advoware"}));
    h.google.clock().advance_secs(60);
    h.google
        .user_patch_event(
            &cal,
            event_of(a)["id"].as_str().unwrap(),
            json!({"summary": "A Google"}),
        )
        .unwrap();
    // B: Google first, Advoware a minute later (both clocks moved) → Advoware wins.
    h.google
        .user_patch_event(
            &cal,
            event_of(b)["id"].as_str().unwrap(),
            json!({"summary": "B Google"}),
        )
        .unwrap();
    h.advoware.clock().advance_secs(120);
    h.advoware
        .edit_termin(b as i64, json!({"text": "B Advoware"}));

    let r = h.sync("SB").await;
    assert_eq!(r.conflicts, 2, "{r:?}");
    assert_eq!(h.advoware.termin(a as i64).unwrap()["text"], "A Google");
    assert_eq!(event_of(b)["summary"], "B Advoware");
    h.assert_converged("SB").await;
}

#[tokio::test]
async fn an_expired_sync_token_means_one_full_list_and_no_duplicates() {
    let h = H::new().await;
    for i in 0..4 {
        h.add(
            "SB",
            timed(day(2 + i), "09:00:00", "10:00:00", &format!("T{i}")),
        );
    }
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    let some = h.google.live_events(&cal)[0].clone();
    h.google
        .user_patch_event(
            &cal,
            some["id"].as_str().unwrap(),
            json!({"description": "nach 410"}),
        )
        .unwrap();
    h.google.invalidate_sync_tokens();
    let r = h.sync("SB").await;
    assert!(r.full_google_list, "{r:?}");
    assert_eq!(writes(&r, "update_advoware"), 1, "{r:?}");
    assert_eq!(writes(&r, "create_google"), 0, "{r:?}");
    assert_eq!(h.google.live_events(&cal).len(), 4);
    h.assert_converged("SB").await;
    let again = h.sync("SB").await;
    assert!(
        !again.full_google_list && again.total_writes() == 0,
        "{again:?}"
    );
}

#[tokio::test]
async fn google_quota_errors_back_off_for_everyone_and_the_sync_completes() {
    let h = H::new().await;
    for i in 0..3 {
        h.add(
            "SB",
            timed(day(2 + i), "09:00:00", "10:00:00", &format!("T{i}")),
        );
    }
    h.google.rate_limit_next(2, RateLimit::TooManyRequests429);
    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "create_google"), 3, "{r:?}");
    // The two 429s were waited out (the shared backoff key itself is checked in
    // tests/google_client.rs); the run still created everything exactly once.
    h.assert_converged("SB").await;

    // Quota errors that do not stop: the run fails retryably and loses nothing.
    h.add("SB", timed(day(9), "09:00:00", "10:00:00", "später"));
    h.google.rate_limit_next(100, RateLimit::Forbidden403);
    let opts = h.opts("SB");
    let err = h.sync_with("SB", &opts).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    h.google.rate_limit_next(0, RateLimit::Forbidden403);
    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "create_google"), 1, "{r:?}");
    h.assert_converged("SB").await;
}

#[tokio::test]
async fn an_empty_side_is_an_outage_until_forced() {
    let h = H::new().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(h.add(
            "SB",
            timed(day(2 + i), "09:00:00", "10:00:00", &format!("T{i}")),
        ));
    }
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    for id in &ids {
        h.advoware.remove_termin(*id as i64);
    }
    let opts = h.opts("SB");
    match h.sync_with("SB", &opts).await {
        Err(SyncError::Plan(PlanError::SideLooksEmpty { side, known })) => {
            assert_eq!((side, known), (Side::Advoware, 6));
        }
        other => panic!("expected the empty-side guard, got {other:?}"),
    }
    assert_eq!(h.google.live_events(&cal).len(), 6, "nothing deleted");
    let forced = RunOptions {
        force: true,
        ..h.opts("SB")
    };
    let r = h.sync_with("SB", &forced).await.unwrap();
    assert_eq!(writes(&r, "delete_google"), 6, "{r:?}");
    assert!(h.google.live_events(&cal).is_empty());
}

#[tokio::test]
async fn appointments_leaving_the_window_are_kept_not_deleted() {
    let settings = CalendarSettings {
        window_past_days: 5,
        ..CalendarSettings::default()
    };
    let h = H::with(settings, 60_000).await;
    h.add("SB", timed(day(-3), "09:00:00", "10:00:00", "bald alt"));
    h.add("SB", timed(day(3), "09:00:00", "10:00:00", "neu"));
    h.sync("SB").await;
    let cal = h.cal("SB").await;
    assert_eq!(h.google.live_events(&cal).len(), 2);
    // Time passes: the appointment leaves the window on the Advoware side.
    let narrower = CalendarSettings {
        window_past_days: 1,
        ..CalendarSettings::default()
    };
    let h2 = Engine {
        advoware: h.aw.as_ref(),
        google: h.gc.as_ref(),
        settings: &narrower,
    };
    let mut store = CalendarStore::new(h.conn.clone(), kz("SB"));
    let r = h2
        .sync_employee(&mut store, &kz("SB"), &h.opts("SB"), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(r.total_writes(), 0, "{r:?}");
    assert_eq!(h.google.live_events(&cal).len(), 2, "the old event stays");
    // Deleting it in Advoware later is still noticed: the GET confirms the deletion.
    let mut moved = h
        .google
        .live_events(&cal)
        .into_iter()
        .find(|e| e["summary"] == "bald alt")
        .unwrap();
    // The user moves the old event into the window; Advoware still has it (outside).
    moved["start"]["dateTime"] = json!(format!("{}T08:00:00+00:00", day(4).format("%Y-%m-%d")));
    moved["end"]["dateTime"] = json!(format!("{}T09:00:00+00:00", day(4).format("%Y-%m-%d")));
    h.google
        .user_patch_event(
            &cal,
            moved["id"].as_str().unwrap(),
            json!({"start": moved["start"], "end": moved["end"]}),
        )
        .unwrap();
    let r = h2
        .sync_employee(&mut store, &kz("SB"), &h.opts("SB"), &mut |_| {})
        .await
        .unwrap();
    assert!(r.deletion_checks >= 1, "{r:?}");
    assert_eq!(
        writes(&r, "create_advoware"),
        0,
        "no duplicate in Advoware: {r:?}"
    );
    assert_eq!(writes(&r, "delete_google"), 0, "{r:?}");
    assert_eq!(h.termine_of("SB").len(), 2);
}

#[tokio::test]
async fn busy_only_calendars_show_no_client_details() {
    let settings = CalendarSettings {
        busy_only: vec!["SB".into()],
        ..CalendarSettings::default()
    };
    let h = H::with(settings, 60_000).await;
    let mut t = timed(day(2), "09:00:00", "10:00:00", "Müller ./. Schmidt");
    t["notiz"] = json!("vertraulich");
    t["ort"] = json!("Kanzlei");
    h.add("SB", t);
    let r = h.sync("SB").await;
    assert_eq!(writes(&r, "create_google"), 1);
    let cal = h.cal("SB").await;
    let e = &h.google.live_events(&cal)[0];
    assert_eq!(e["summary"], "Termin (belegt)");
    assert!(e["description"].is_null() || e["description"] == "");
    assert!(e["location"].is_null() || e["location"] == "");
    let again = h.sync("SB").await;
    assert_eq!(again.total_writes(), 0, "{again:?}");
    assert_eq!(
        h.termine_of("SB")[0]["text"],
        "Müller ./. Schmidt",
        "Advoware keeps the real title"
    );
    // A request for full content cannot widen the configured privacy setting (issue 16, item 3).
    let asked_full = run_options(&h.settings, &kz("SB"), &json!({"full_content": true}));
    let r = h.sync_with("SB", &asked_full).await.unwrap();
    assert_eq!(r.total_writes(), 0, "{r:?}");
    let e = &h.google.live_events(&cal)[0];
    assert_eq!(e["summary"], "Termin (belegt)");
    assert!(e["location"].is_null() || e["location"] == "");
    // Taking the employee off the busy-only list (configuration) rewrites the event once.
    let open = CalendarSettings::default();
    let full = run_options(&open, &kz("SB"), &json!({}));
    let r = h.sync_with("SB", &full).await.unwrap();
    assert!(r.content_mode_changed, "{r:?}");
    assert_eq!(writes(&r, "update_google"), 1, "{r:?}");
    let e = &h.google.live_events(&cal)[0];
    assert_eq!(
        (e["summary"].as_str(), e["location"].as_str()),
        (Some("Müller ./. Schmidt"), Some("Kanzlei"))
    );
    let r = h.sync_with("SB", &full).await.unwrap();
    assert_eq!(r.total_writes(), 0, "{r:?}");
}

#[test]
fn a_request_narrows_but_never_widens_the_busy_only_setting() {
    let protected = CalendarSettings {
        busy_only: vec!["SB".into()],
        ..CalendarSettings::default()
    };
    let busy = |s: &CalendarSettings, k: &str, p: Value| {
        matches!(
            run_options(s, &kz(k), &p).content_mode,
            ContentMode::BusyOnly { .. }
        )
    };
    for payload in [
        json!({}),
        json!({"full_content": true}),
        json!({"full_content": false}),
        json!({"full_content": "yes"}),
    ] {
        assert!(busy(&protected, "SB", payload.clone()), "{payload}");
        assert!(busy(&protected, "sb", payload.clone()), "{payload}");
    }
    assert!(!busy(&protected, "AB", json!({})));
    assert!(!busy(&protected, "AB", json!({"full_content": true})));
    assert!(busy(&protected, "AB", json!({"full_content": false})));
}

#[tokio::test]
async fn a_crash_in_the_middle_resumes_without_duplicates() {
    let h = H::new().await;
    for i in 0..10 {
        h.add(
            "SB",
            timed(day(2 + i), "09:00:00", "10:00:00", &format!("T{i}")),
        );
    }
    let cal = h.google.add_calendar("Advoware SB");
    h.sync("SB").await;
    // Drop half the pairs, as if the process had died after each Google create but before its
    // state write.
    let mut c = h.conn.clone();
    let pairs: BTreeMap<String, String> = c.hgetall("bbl:cal:SB:pairs").await.unwrap();
    for field in pairs.keys().take(5) {
        let _: () = c.hdel("bbl:cal:SB:pairs", field).await.unwrap();
    }
    let r = h.sync("SB").await;
    assert_eq!(
        writes(&r, "create_google"),
        0,
        "tagged events are adopted, not duplicated: {r:?}"
    );
    assert_eq!(h.google.live_events(&cal).len(), 10);
    h.assert_converged("SB").await;
}

/// Random appointment sets and random edits on both sides converge within two syncs, with
/// every appointment exactly once on each side.
#[tokio::test]
async fn random_edits_on_both_sides_converge_within_two_syncs() {
    let h = H::new().await;
    let cases: u64 = std::env::var("CALENDAR_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 0..cases {
        let k = format!("P{seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(0..10);
        for i in 0..n {
            h.add(&k, random_termin(&mut rng, &format!("{k}-{i}")));
        }
        let cal = h.google.add_calendar(&format!("Advoware {k}"));
        for i in 0..rng.random_range(0..4) {
            h.google
                .user_insert_event(
                    &cal,
                    user_event(day(rng.random_range(0..200)), &format!("{k}-g{i}")),
                )
                .unwrap();
        }
        h.sync(&k).await;
        for round in 0..3 {
            for _ in 0..rng.random_range(1..6) {
                random_edit(&h, &k, &cal, &mut rng, round).await;
            }
            h.advoware.clock().advance_secs(5);
            h.google.clock().advance_secs(7);
            h.sync(&k).await;
            let second = h.sync(&k).await;
            let third = h.sync(&k).await;
            assert_eq!(
                third.total_writes(),
                0,
                "seed {seed} round {round}: not converged after two syncs ({second:?} then {third:?})"
            );
            h.assert_converged(&k).await;
        }
    }
}

fn random_termin(rng: &mut StdRng, text: &str) -> Value {
    let start = day(rng.random_range(-20..300));
    match rng.random_range(0..4) {
        0 => {
            let end = start + Days::new(rng.random_range(0..3));
            json!({"datum": adate(start), "uhrzeitVon": "00:00:00", "datumBis": adate(end),
                   "uhrzeitBis": "23:59:00", "text": text, "dauertermin": 1})
        }
        1 => {
            let end = start + Days::new(rng.random_range(10..200));
            json!({"datum": adate(start), "uhrzeitVon": "08:00:00", "datumBis": adate(end),
                   "uhrzeitBis": "09:00:00", "text": text, "turnus": rng.random_range(1..3),
                   "turnusArt": rng.random_range(1..5)})
        }
        _ => {
            let h1 = rng.random_range(6..20);
            timed(
                start,
                &format!("{h1:02}:15:00"),
                &format!("{:02}:45:00", h1 + 1),
                text,
            )
        }
    }
}

async fn random_edit(h: &H, k: &str, cal: &str, rng: &mut StdRng, round: usize) {
    let termine = h.termine_of(k);
    let events = h.google.live_events(cal);
    match rng.random_range(0..6) {
        0 if !termine.is_empty() => {
            let t = &termine[rng.random_range(0..termine.len())];
            h.advoware.edit_termin(
                t["frNr"].as_i64().unwrap(),
                json!({"text": format!("aw-edit-{round}-{}", rng.random::<u16>())}),
            );
        }
        1 if !events.is_empty() => {
            let e = &events[rng.random_range(0..events.len())];
            h.google
                .user_patch_event(
                    cal,
                    e["id"].as_str().unwrap(),
                    json!({"description": format!("g-edit-{round}-{}", rng.random::<u16>())}),
                )
                .unwrap();
        }
        2 if !termine.is_empty() => {
            let t = &termine[rng.random_range(0..termine.len())];
            h.advoware.remove_termin(t["frNr"].as_i64().unwrap());
        }
        3 if !events.is_empty() => {
            let e = &events[rng.random_range(0..events.len())];
            h.google
                .user_delete_event(cal, e["id"].as_str().unwrap())
                .unwrap();
        }
        4 => {
            let text = format!("{k}-new-{round}-{}", rng.random::<u16>());
            h.add(k, random_termin(rng, &text));
        }
        _ => {
            h.google
                .user_insert_event(
                    cal,
                    user_event(day(rng.random_range(0..200)), &format!("{k}-gnew-{round}")),
                )
                .unwrap();
        }
    }
}

#[tokio::test]
async fn employees_are_ordered_least_recently_synced_first() {
    let h = H::new().await;
    let mut c = h.conn.clone();
    let _: () = c.zadd("bbl:cal:last_sync", "SB", 300).await.unwrap();
    let _: () = c.zadd("bbl:cal:last_sync", "CD", 100).await.unwrap();
    let ks = ["SB", "AB", "CD", "ZZ"].map(kz).to_vec();
    let ordered = least_recently_synced(&mut c, ks).await.unwrap();
    let names: Vec<&str> = ordered.iter().map(Kuerzel::as_str).collect();
    assert_eq!(
        names,
        ["AB", "ZZ", "CD", "SB"],
        "never synced first, then oldest"
    );
    // A sync moves the employee to the back.
    h.add("AB", timed(day(1), "09:00:00", "10:00:00", "x"));
    h.sync("AB").await;
    let ordered = least_recently_synced(&mut c, ["SB", "AB", "CD"].map(kz).to_vec())
        .await
        .unwrap();
    assert_eq!(ordered.last().map(Kuerzel::as_str), Some("AB"));
}
