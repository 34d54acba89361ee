//! 3CX call journaling against the fake EspoCRM and a real `redis-server`: inbound held (parent
//! Contact, assigned user), inbound missed (call-back Task), outbound, not answered; a
//! redelivered report stays one Call (also after a crash between create and record); bad
//! bodies through the worker binary land in the dead-letter stream naming the field, with
//! nothing written.
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

mod common;

use std::time::Duration;

use std::sync::Arc;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake, NOTIZEN, NOTIZEN_PATH};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::advoware::{
    AdvowareClient, ClientSettings as AdvowareClientSettings,
};
use bitbylaw_worker::clients::espocrm::{ClientSettings, EspoCrmClient};
use bitbylaw_worker::clients::http::ReqwestTransport;
use bitbylaw_worker::config::CallNoteSettings;
use bitbylaw_worker::config::{EspoCrmSettings, Secret, ThreeCxSettings};
use bitbylaw_worker::handlers::leads::engine::EngineError;
use bitbylaw_worker::handlers::leads::store::LeadStore;
use bitbylaw_worker::handlers::telephony::journal::CallNotes;
use bitbylaw_worker::handlers::telephony::journal::{Journal, Outcome};
use bitbylaw_worker::handlers::telephony::lookup;
use bitbylaw_worker::intake::signature::LOOKUP_TOPIC;
use bitbylaw_worker::keys;
use bitbylaw_worker::sync::contact::Region;
use bitbylaw_worker::sync::telephony::parse;
use common::{gateway_request, now_secs, signed_lookup, wait_for, RedisServer, Worker, SECRET};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::AsyncCommands as _;
use serde_json::{json, Value};

struct Env {
    redis: RedisServer,
    fake: EspoCrmFake,
    espo: EspoCrmClient,
    store: LeadStore<MultiplexedConnection>,
    index: ConnectionManager,
    settings: ThreeCxSettings,
    contact_id: String,
}

async fn env() -> Env {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default())
        .await
        .expect("espocrm fake");
    let espo = EspoCrmClient::new(
        ClientSettings::from_settings(&EspoCrmSettings {
            api_base_url: Some(fake.api_url()),
            api_key: Some(Secret::new(fake.config().api_key.clone())),
            timeout: Some(Duration::from_secs(5)),
            page_size: None,
        })
        .expect("settings"),
    )
    .expect("client");
    // Stored nationally in the CRM: found by the E.164 number 3CX reports.
    let contact = fake
        .insert(
            "Contact",
            json!({"firstName": "Max", "lastName": "Mustermann", "phoneNumber": "051112345"}),
        )
        .expect("contact");
    let mut settings = ThreeCxSettings::default();
    settings.agents.insert("201".into(), "userAgent201".into());
    settings
        .agents
        .insert("sb@example-kanzlei.de".into(), "userSb".into());
    let store = LeadStore::with_keys(redis.conn().await, keys::call);
    let index = redis::Client::open(redis.url())
        .expect("url")
        .get_connection_manager()
        .await
        .expect("manager");
    Env {
        redis,
        fake,
        espo,
        store,
        index,
        settings,
        contact_id: contact["id"].as_str().expect("id").to_owned(),
    }
}

fn example() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/3cx-reportcall.json"))
        .expect("example body")
}

impl Env {
    async fn run(&self, body: &Value) -> Outcome {
        self.journal(body, None).await.expect("journaled")
    }

    /// The same with the Advoware call note switched on.
    async fn run_noted(&self, body: &Value, notes: &CallNotes) -> Result<Outcome, EngineError> {
        self.journal(body, Some(notes)).await
    }

    async fn journal(
        &self,
        body: &Value,
        notes: Option<&CallNotes>,
    ) -> Result<Outcome, EngineError> {
        let report = parse(body, Region::DE).expect("valid body");
        Journal {
            crm: &self.espo,
            store: &self.store,
            index: Some(self.index.clone()),
            settings: &self.settings,
            notes,
        }
        .process(&report.key(), &report, chrono::Utc::now())
        .await
    }
}

/// The fake Advoware with one Beteiligter, a `CBeteiligte` linked to it under a number of its
/// own, and the note side pointed at the fake (client timeout 2 s).
async fn noted(env: &Env) -> (AdvowareFake, i64, CallNotes, Value) {
    let aw = advoware::start(AdvowareConfig::default())
        .await
        .expect("advoware fake");
    let bet_nr = aw.insert_beteiligter(json!({"name": "Vermieter GmbH"}));
    env.fake
        .insert(
            "CBeteiligte",
            json!({"firmenname": "Vermieter GmbH", "phoneNumber": "+49305550100", "betnr": bet_nr}),
        )
        .expect("beteiligter");
    let client = AdvowareClient::new(
        AdvowareClientSettings::from_settings(&common::sides::advoware_settings(&aw))
            .expect("settings"),
        env.index.clone(),
        Arc::new(ReqwestTransport::new(Duration::from_secs(2)).expect("http")),
    );
    let notes = CallNotes {
        client,
        settings: CallNoteSettings {
            path: NOTIZEN_PATH.into(),
            text_field: "text".into(),
            date_field: "datum".into(),
        },
    };
    let mut body = example();
    body["Number"] = json!("+49305550100");
    body["EntityId"] = json!("");
    (aw, bet_nr, notes, body)
}

/// Issue 14's optional note: a call with a Beteiligter linked to Advoware leaves one note on it
/// (text with the call's marker, start in Berlin time); a redelivery adds none; a call matched to
/// a Contact leaves none.
#[tokio::test]
async fn a_call_with_a_linked_beteiligter_leaves_one_note_in_advoware() {
    let env = env().await;
    let (aw, bet_nr, notes, body) = noted(&env).await;
    let out = env.run_noted(&body, &notes).await.expect("journaled");
    assert_eq!(out.advoware_note, "written");
    let stored = aw.notizen(bet_nr);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let key = parse(&body, Region::DE).expect("valid").key();
    let text = stored[0]["text"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("[3cx:{key}]")), "{text}");
    assert_eq!(stored[0]["datum"], "2026-11-23T14:02:00");
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(call["parentType"], "CBeteiligte");

    assert!(
        env.run_noted(&body, &notes)
            .await
            .expect("again")
            .already_done
    );
    assert_eq!(aw.notizen(bet_nr).len(), 1, "a redelivery adds no note");

    let out = env
        .run_noted(&example(), &notes)
        .await
        .expect("contact call");
    assert_eq!(out.advoware_note, "none");
    assert_eq!(aw.writes(NOTIZEN), 1, "a Contact's call leaves no note");
}

/// Refused (503) → nothing written, the retry posts; no answer (timeout) or a crash after the
/// intent → never posted again, recorded `uncertain`.
#[tokio::test]
async fn a_note_is_posted_at_most_once_and_a_refused_one_is_retried() {
    let env = env().await;
    let (aw, bet_nr, notes, body) = noted(&env).await;
    aw.controls()
        .fail_next_on("/api/v1/advonet/Beteiligte", 1, 503, None);
    let err = env.run_noted(&body, &notes).await.expect_err("503");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        env.fake.all("Call").len(),
        1,
        "the Call is written and kept"
    );
    let out = env.run_noted(&body, &notes).await.expect("retried");
    assert_eq!(out.advoware_note, "written");
    assert_eq!(aw.notizen(bet_nr).len(), 1);

    // No answer within the client's timeout: the POST may have been carried out.
    let mut slow = body.clone();
    slow["CallStartTimeUTC"] = json!("2026-11-23T16:00:00Z");
    slow["CallEndTimeUTC"] = json!("2026-11-23T16:05:00Z");
    aw.controls().set_latency(Duration::from_secs(5));
    let posts = aw
        .controls()
        .requests_to("/api/v1/advonet/Beteiligte")
        .len();
    let out = env.run_noted(&slow, &notes).await.expect("journaled");
    assert_eq!(out.advoware_note, "uncertain");
    aw.controls().set_latency(Duration::ZERO);
    assert_eq!(
        aw.controls()
            .requests_to("/api/v1/advonet/Beteiligte")
            .len(),
        posts + 1
    );
    // (The fake drops a request whose client went away; a real Advoware may have stored it,
    // which is why it is never sent twice.)
    let key = parse(&slow, Region::DE).expect("valid").key();
    let mut c = env.redis.conn().await;
    let _: () = c.hdel(keys::call(&key), "done").await.unwrap();
    let _: () = c.hdel(keys::call(&key), "note").await.unwrap();
    env.run_noted(&slow, &notes).await.expect("rerun");
    assert_eq!(
        aw.controls()
            .requests_to("/api/v1/advonet/Beteiligte")
            .len(),
        posts + 1,
        "never posted a second time"
    );

    // A crash between the intent and the POST: the next run does not post either.
    let mut crashed = body.clone();
    crashed["CallStartTimeUTC"] = json!("2026-11-23T17:00:00Z");
    crashed["CallEndTimeUTC"] = json!("2026-11-23T17:05:00Z");
    let key = parse(&crashed, Region::DE).expect("valid").key();
    let _: () = c.hset(keys::call(&key), "note_intent", 1).await.unwrap();
    let out = env.run_noted(&crashed, &notes).await.expect("journaled");
    assert_eq!(out.advoware_note, "uncertain");
    assert_eq!(
        aw.controls()
            .requests_to("/api/v1/advonet/Beteiligte")
            .len(),
        posts + 1
    );
    assert_eq!(aw.notizen(bet_nr).len(), 1);
}

#[tokio::test]
async fn inbound_held_call_is_journaled_on_the_contact() {
    let env = env().await;
    let mut body = example();
    body["RecordingUrl"] = json!("https://ralup.my3cx.de/rec/1.wav");
    body["Summary"] = json!("Frage zur Nebenkostenabrechnung");
    let out = env.run(&body).await;
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(call["status"], "Held");
    assert_eq!(call["direction"], "Inbound");
    assert_eq!(call["dateStart"], "2026-11-23 13:02:00");
    assert_eq!(call["dateEnd"], "2026-11-23 13:06:21");
    // EspoCRM derives `duration` from dateStart/dateEnd (ringing included); talk time in the text.
    assert_eq!(call["duration"], 261);
    assert_eq!(call["name"], "Anruf von Max Mustermann");
    assert_eq!(call["parentType"], "Contact");
    assert_eq!(call["parentId"], env.contact_id.as_str());
    // Agent by extension first.
    assert_eq!(call["assignedUserId"], "userAgent201");
    let d = call["description"].as_str().unwrap();
    assert!(d.contains("Gesprächsdauer: 00:04:12"), "{d}");
    assert!(d.contains("https://ralup.my3cx.de/rec/1.wav") && d.contains("Nebenkostenabrechnung"));
    assert!(env.fake.all("Task").is_empty());
    // The lookup index now knows the number.
    let m = lookup::index_get(env.index.clone(), "+4951112345")
        .await
        .unwrap()
        .expect("indexed");
    assert_eq!((m.entity, m.id()), ("Contact", env.contact_id.as_str()));
}

/// 3CX names the record our lookup answered (`EntityId`): the Call goes there even when a
/// Contact has the same number, while the index keeps the lookup's priority (the Contact).
#[tokio::test]
async fn the_entity_3cx_names_is_the_parent_and_the_index_keeps_the_priority() {
    let env = env().await;
    let lead = env
        .fake
        .insert(
            "Lead",
            json!({"lastName": "Mustermann", "phoneNumber": "+4951112345"}),
        )
        .expect("lead");
    let mut body = example();
    body["EntityId"] = lead["id"].clone();
    let out = env.run(&body).await;
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(call["parentType"], "Lead");
    assert_eq!(call["parentId"], lead["id"]);
    let m = lookup::index_get(env.index.clone(), "+4951112345")
        .await
        .unwrap()
        .expect("indexed");
    assert_eq!((m.entity, m.id()), ("Contact", env.contact_id.as_str()));
}

#[tokio::test]
async fn missed_inbound_call_gets_a_callback_task_and_not_answered_outbound_does_not() {
    let env = env().await;
    let mut missed = example();
    missed["CallType"] = json!("Missed");
    missed["Agent"] = json!("299"); // unknown extension: the e-mail decides
    missed["Duration"] = json!("");
    missed["CallEstablishedTimeUTC"] = json!("");
    let out = env.run(&missed).await;
    assert!(out.task);
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(call["status"], "Not Held");
    assert_eq!(call["name"], "Verpasster Anruf von Max Mustermann");
    let tasks = env.fake.all("Task");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["assignedUserId"], "userSb");
    assert_eq!(
        tasks[0]["parentId"],
        env.contact_id.as_str(),
        "{tasks:?} {call:?}"
    );
    assert_eq!(tasks[0]["status"], "Not Started");

    let mut not_answered = example();
    not_answered["CallType"] = json!("Notanswered");
    not_answered["CallDirection"] = json!("Outbound");
    not_answered["CallStartTimeUTC"] = json!("2026-11-23T15:00:00Z");
    not_answered["CallEndTimeUTC"] = json!("2026-11-23T15:00:30Z");
    not_answered["CallEstablishedTimeUTC"] = json!("");
    not_answered["Duration"] = json!("00:00:00");
    let out = env.run(&not_answered).await;
    assert!(!out.task);
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(
        (call["status"].as_str(), call["direction"].as_str()),
        (Some("Not Held"), Some("Outbound"))
    );
    assert_eq!(env.fake.all("Task").len(), 1);
}

#[tokio::test]
async fn outbound_call_to_an_unknown_number_has_no_parent() {
    let env = env().await;
    let mut out_call = example();
    out_call["CallType"] = json!("Outbound");
    out_call["CallDirection"] = json!("Outbound");
    out_call["Number"] = json!("0049 30 9876543");
    out_call["Name"] = json!("");
    out_call["EntityId"] = json!("");
    let out = env.run(&out_call).await;
    let call = env.fake.get("Call", &out.call_id).expect("call");
    assert_eq!(call["status"], "Held");
    assert_eq!(call["direction"], "Outbound");
    assert_eq!(call["name"], "Anruf an +49309876543");
    assert!(call.get("parentId").is_none_or(Value::is_null));
}

#[tokio::test]
async fn a_redelivered_report_stays_one_call_also_after_a_crash_before_the_record() {
    let env = env().await;
    let mut missed = example();
    missed["CallType"] = json!("Missed");
    missed["CallEstablishedTimeUTC"] = json!("");
    missed["Duration"] = json!("");
    let first = env.run(&missed).await;
    let again = env.run(&missed).await;
    assert!(again.already_done);
    assert_eq!(again.call_id, first.call_id);
    // A crash after both creates, before their steps were recorded: only `intent` survives.
    let key = keys::call(&parse(&missed, Region::DE).unwrap().key());
    let mut c = env.redis.conn().await;
    let _: i64 = c.hdel(&key, &["record", "followup", "done"]).await.unwrap();
    let resumed = env.run(&missed).await;
    assert_eq!(resumed.call_id, first.call_id);
    assert_eq!(env.fake.all("Call").len(), 1);
    assert_eq!(env.fake.all("Task").len(), 1);
}

async fn dlq(redis: &RedisServer) -> Vec<String> {
    let mut c = redis.conn().await;
    let r: redis::streams::StreamRangeReply = c.xrange_all("bbl:dlq").await.unwrap();
    r.ids
        .iter()
        .map(|e| e.get::<String>("error").unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn reports_through_the_worker_and_bad_bodies_to_the_dead_letter_stream() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    let w = Worker::spawn(
        &redis.url(),
        &[("ESPOCRM_API_BASE_URL", &api), ("ESPOCRM_API_KEY", &key)],
        &[],
    );
    let topic = "telephony.call.reported";
    let post = |id: &str, body: Value| {
        gateway_request(
            &w.base,
            topic,
            id,
            &serde_json::to_vec(&body).unwrap(),
            now_secs(),
            SECRET,
        )
        .send()
    };
    assert_eq!(post("ev1", example()).await.unwrap().status().as_u16(), 202);
    wait_for("the call", Duration::from_secs(20), || async {
        (fake.all("Call").len() == 1).then_some(())
    })
    .await;
    // The same report again under another event id (3CX retried): no second Call.
    assert_eq!(post("ev2", example()).await.unwrap().status().as_u16(), 202);
    let writes_before = fake.total_writes();
    let mut no_start = example();
    no_start.as_object_mut().unwrap().remove("CallStartTimeUTC");
    let mut bad_type = example();
    bad_type["CallType"] = json!("Sideways");
    let mut bad_duration = example();
    bad_duration["Duration"] = json!("vier Minuten");
    let bad = [
        ("bad1", no_start, "CallStartTimeUTC"),
        ("bad2", bad_type, "CallType"),
        ("bad3", bad_duration, "Duration"),
    ];
    for (id, body, _) in &bad {
        assert_eq!(post(id, body.clone()).await.unwrap().status().as_u16(), 202);
    }
    let dead = wait_for("three dead letters", Duration::from_secs(20), || async {
        let d = dlq(&redis).await;
        (d.len() == 3).then_some(d)
    })
    .await;
    for (_, _, field) in &bad {
        assert!(
            dead.iter()
                .any(|e| e.contains(&format!("ReportCall body: {field} "))),
            "{field}: {dead:?}"
        );
    }
    let done: i64 = redis
        .conn()
        .await
        .exists(keys::call(&parse(&example(), Region::DE).unwrap().key()))
        .await
        .unwrap();
    assert_eq!(done, 1);
    assert_eq!(fake.all("Call").len(), 1);
    assert_eq!(fake.total_writes(), writes_before);
    assert!(!w.log_text().contains("Mustermann"));
}

/// The note through the real binary: with `THREECX_ADVOWARE_NOTE_PATH` set, a reported call of
/// a Beteiligter linked to Advoware leaves one note there (redeliveries: the journal tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_leaves_a_call_note_in_advoware_when_configured() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let aw = advoware::start(AdvowareConfig::default()).await.unwrap();
    let bet_nr = aw.insert_beteiligter(json!({"name": "Vermieter GmbH"}));
    fake.insert(
        "CBeteiligte",
        json!({"firmenname": "Vermieter GmbH", "phoneNumber": "+49305550100", "betnr": bet_nr}),
    )
    .unwrap();
    let mut vars = common::advoware_env(&aw);
    vars.extend(common::espocrm_env(&fake));
    vars.push(("THREECX_ADVOWARE_NOTE_PATH".into(), NOTIZEN_PATH.into()));
    let w = Worker::spawn(&redis.url(), &common::env_refs(&vars), &["--no-schedules"]);
    let mut body = example();
    body["Number"] = json!("+49305550100");
    body["EntityId"] = json!("");
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(
        common::post_event_as(&w.base, "telephony.call.reported", "ev1", &bytes).await,
        202
    );
    wait_for("the note", Duration::from_secs(20), || async {
        (aw.notizen(bet_nr).len() == 1).then_some(())
    })
    .await;
    assert_eq!(aw.writes(NOTIZEN), 1);
    let calls = fake.all("Call");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["parentType"], "CBeteiligte");
}

async fn lookup_json(base: &str, phone: &str) -> Value {
    let r = signed_lookup(base, phone, LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{phone}");
    r.json().await.unwrap()
}

/// Issue 14: the lookup answers personal data, so only a forward signed by Kong's filter (topic
/// `threecx.lookup`, over path and query) is served: unsigned, wrongly signed, signed for another
/// number or topic, or with a repeated gateway header → 401 and EspoCRM is never asked.
#[tokio::test]
async fn unsigned_or_wrongly_signed_lookup_is_401_and_looks_nothing_up() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let contact = fake
        .insert(
            "Contact",
            json!({"firstName": "Max", "lastName": "Geheimkontakt", "phoneNumber": "+49301234567"}),
        )
        .unwrap();
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    let w = Worker::spawn(
        &redis.url(),
        &[("ESPOCRM_API_BASE_URL", &api), ("ESPOCRM_API_KEY", &key)],
        &[],
    );
    let phone = "+49301234567";
    let unsigned = reqwest::Client::new()
        .get(format!("{}/3cx/lookup", w.base))
        .query(&[("phone", phone)]);
    // Signed for another number, then sent with this one.
    let other = signed_lookup(&w.base, "+49407654321", LOOKUP_TOPIC, SECRET)
        .build()
        .unwrap();
    let swapped = reqwest::Client::new()
        .get(format!("{}/3cx/lookup", w.base))
        .query(&[("phone", phone)])
        .headers(other.headers().clone());
    let cases = [
        ("unsigned", unsigned),
        (
            "wrong secret",
            signed_lookup(&w.base, phone, LOOKUP_TOPIC, "another-secret-0123456789"),
        ),
        (
            "event topic",
            signed_lookup(&w.base, phone, "telephony.call.reported", SECRET),
        ),
        ("other number", swapped),
        (
            "repeated signature",
            signed_lookup(&w.base, phone, LOOKUP_TOPIC, SECRET)
                .header("x-gateway-signature", "v1=00"),
        ),
    ];
    for (what, req) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{what}: {body}");
        assert!(!body.to_string().contains("Geheimkontakt"), "{what}");
    }
    assert!(
        fake.controls().requests().is_empty(),
        "nothing looked up for a refused request"
    );
    let ok = lookup_json(&w.base, phone).await;
    assert_eq!(ok["contacts"][0]["EntityId"], contact["id"], "{ok}");
}

/// The lookup through the worker binary: every number format finds the record, Contact wins
/// over CBeteiligte over Lead, a cold hit fills the index (then served without EspoCRM), no
/// match and unusable numbers answer the empty answer; nothing personal in the log.
#[tokio::test]
async fn lookup_formats_priority_index_and_empty_answer() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    // Same number on a Lead (oldest), a CBeteiligte and a Contact: the Contact is answered.
    fake.insert(
        "Lead",
        json!({"firstName": "Lea", "lastName": "Leadfrau", "phoneNumber": "+49301234567"}),
    )
    .unwrap();
    let bet = fake
        .insert(
            "CBeteiligte",
            json!({"name": "Beteiligte GmbH", "phoneNumber": "0301234567"}),
        )
        .unwrap();
    let contact = fake
        .insert(
            "Contact",
            json!({"firstName": "Max", "lastName": "Geheimkontakt", "accountName": "Kanzlei Kunde AG",
                   "emailAddress": "max@kunde.example", "phoneNumber": "004930 1234567".replace(' ', "")}),
        )
        .unwrap();
    // Only a CBeteiligte with this one (no first name: the name is the last name).
    fake.insert(
        "CBeteiligte",
        json!({"name": "Nur Beteiligter", "phoneNumber": "+4917655501234"}),
    )
    .unwrap();
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    let w = Worker::spawn(
        &redis.url(),
        &[
            ("ESPOCRM_API_BASE_URL", &api),
            ("ESPOCRM_API_KEY", &key),
            ("THREECX_CRM_URL", "https://crm.example.de"),
            ("THREECX_DIAL_PREFIX", "9"),
            ("THREECX_LOOKUP_DEADLINE_MS", "300"),
        ],
        &[],
    );
    let cid = contact["id"].as_str().unwrap();
    let first = lookup_json(&w.base, "+49 30 1234567").await;
    let c = &first["contacts"][0];
    assert_eq!(c["EntityType"], "Contact", "{first}");
    assert_eq!(c["EntityId"], cid);
    assert_eq!(c["ContactID"], cid);
    assert_eq!(c["FirstName"], "Max");
    assert_eq!(c["LastName"], "Geheimkontakt");
    assert_eq!(c["CompanyName"], "Kanzlei Kunde AG");
    assert_eq!(c["Email"], "max@kunde.example");
    // 3CX accepts a match only with its searched number: echoed as sent.
    assert_eq!(c["PhoneBusiness"], "+49 30 1234567");
    assert_eq!(c["PhoneMobile"], "");
    assert_eq!(
        c["ContactUrl"],
        format!("https://crm.example.de/#Contact/view/{cid}")
    );
    // The cold hit filled the index: every spelling is answered without asking EspoCRM.
    fake.controls().clear_requests();
    for form in [
        "030/1234567",
        "0049301234567",
        "+49 (0)30 1234567",
        "9030 1234567",
        "sip:+49301234567@pbx",
        "030 1234567 x201",
    ] {
        let mut want = first.clone();
        want["contacts"][0]["PhoneBusiness"] = json!(form);
        assert_eq!(lookup_json(&w.base, form).await, want, "{form}");
    }
    assert!(fake.controls().requests().is_empty());
    // The CBeteiligte is answered where no Contact has the number.
    fake.edit("Contact", cid, json!({"phoneNumber": "+49 40 1"}))
        .unwrap();
    let mut c2 = redis.conn().await;
    let _: i64 = c2.del("bbl:phone:+49301234567").await.unwrap();
    let b = lookup_json(&w.base, "030 1234567").await;
    assert_eq!(b["contacts"][0]["EntityId"], bet["id"], "{b}");
    let mobile = lookup_json(&w.base, "0176 55501234").await;
    let m = &mobile["contacts"][0];
    assert_eq!(
        (m["EntityType"].as_str(), m["LastName"].as_str()),
        (Some("CBeteiligte"), Some("Nur Beteiligter"))
    );
    assert_eq!(m["PhoneMobile"], "0176 55501234");
    assert_eq!(m["PhoneBusiness"], "");
    for none in ["+49 40 999999", "201", "anonymous", ""] {
        assert_eq!(
            lookup_json(&w.base, none).await,
            json!({"contacts": []}),
            "{none}"
        );
    }
    // EspoCRM too slow: "no match" rather than a 3CX timeout.
    fake.controls().set_latency(Duration::from_secs(3));
    assert_eq!(
        lookup_json(&w.base, "+49 89 7654321").await,
        json!({"contacts": []})
    );
    fake.controls().set_latency(Duration::ZERO);
    let log = w.log_text();
    assert!(
        !log.contains("Geheimkontakt") && !log.contains("1234567"),
        "{log}"
    );
}

/// `bitbylaw-worker threecx template`: well-formed XML with the structure of FACTS §4 — the key
/// as a per-request `x-api-key` header with `Authentication Type="No"`, the lookup scenario on
/// `[Number]` with every output and a rule, the `ReportCall` scenario posting every variable as
/// JSON to `/3cx/calls`.
#[test]
fn the_generated_template_carries_every_scenario_and_output() {
    let out = std::process::Command::new(common::bin())
        .env_clear()
        .args([
            "threecx",
            "template",
            "--base-url",
            "https://api.bitbylaw.com/",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let crm = doc.root_element();
    assert_eq!(crm.tag_name().name(), "Crm");
    for a in ["Name", "Version", "Country"] {
        assert!(crm.attribute(a).is_some(), "Crm@{a}");
    }
    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
        n.children()
            .find(|c| c.has_tag_name(name))
            .unwrap_or_else(|| panic!("<{name}> missing"))
    }
    let number = child(crm, "Number");
    assert!(number.attribute("Prefix").is_some() && number.attribute("MaxLength").is_some());
    assert!(child(crm, "Connection")
        .attribute("MaxConcurrentRequests")
        .is_some());
    assert_eq!(child(crm, "Authentication").attribute("Type"), Some("No"));
    let params: Vec<&str> = child(crm, "Parameters")
        .children()
        .filter_map(|p| p.attribute("Name"))
        .collect();
    assert!(params.contains(&"ApiKey"));
    let scenarios: Vec<_> = child(crm, "Scenarios")
        .children()
        .filter(|c| c.has_tag_name("Scenario"))
        .collect();
    let lookup = scenarios
        .iter()
        .find(|s| s.attribute("Id") == Some(""))
        .expect("lookup scenario");
    let req = child(*lookup, "Request");
    assert_eq!(
        req.attribute("Url"),
        Some("https://api.bitbylaw.com/3cx/lookup?phone=[Number]")
    );
    assert_eq!(req.attribute("RequestType"), Some("Get"));
    assert_eq!(req.attribute("ResponseType"), Some("Json"));
    let key = child(child(req, "Headers"), "Value");
    assert_eq!(
        (key.attribute("Key"), key.text()),
        (Some("x-api-key"), Some("[ApiKey]"))
    );
    assert_eq!(
        child(child(*lookup, "Rules"), "Rule").attribute("Type"),
        Some("Any")
    );
    let outputs: Vec<&str> = child(*lookup, "Outputs")
        .children()
        .filter_map(|o| o.attribute("Type"))
        .collect();
    for o in [
        "ContactID",
        "FirstName",
        "LastName",
        "CompanyName",
        "Email",
        "PhoneBusiness",
        "PhoneMobile",
        "ContactUrl",
        "EntityType",
        "EntityId",
    ] {
        assert!(outputs.contains(&o), "output {o}");
    }
    let report = scenarios
        .iter()
        .find(|s| s.attribute("Id") == Some("ReportCall"))
        .expect("ReportCall scenario");
    let req = child(*report, "Request");
    assert_eq!(
        req.attribute("Url"),
        Some("https://api.bitbylaw.com/3cx/calls")
    );
    assert_eq!(req.attribute("RequestType"), Some("Post"));
    assert_eq!(req.attribute("RequestEncoding"), Some("Json"));
    assert!(req.attribute("SkipIf").is_some());
    assert_eq!(
        child(child(req, "Headers"), "Value").text(),
        Some("[ApiKey]")
    );
    let posted: Vec<(&str, &str)> = child(req, "PostValues")
        .children()
        .filter_map(|v| Some((v.attribute("Key")?, v.text()?)))
        .collect();
    // Every key of the example body, plus V20's recording, transcription and summary.
    let mut want: Vec<String> = example().as_object().unwrap().keys().cloned().collect();
    want.extend(["RecordingUrl", "Transcription", "Summary"].map(String::from));
    for k in &want {
        assert!(
            posted
                .iter()
                .any(|(key, text)| key == k && *text == format!("[{k}]")),
            "ReportCall value {k}"
        );
    }
    // A base URL that is not one is refused.
    let bad = std::process::Command::new(common::bin())
        .env_clear()
        .args(["threecx", "template", "--base-url", "api.bitbylaw.com"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
