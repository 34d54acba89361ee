//! The 3CX lookup index filled outside of calls (issue 14): a lead written by the leads handler
//! is answered warm by the lookup with zero EspoCRM requests, and the nightly full refresh pages
//! Contacts, CBeteiligte and Leads into the index with the lookup's priority.
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

mod common;

use std::time::Duration;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::{ClientSettings, EspoCrmClient};
use bitbylaw_worker::config::{EspoCrmSettings, Secret};
use bitbylaw_worker::handlers::telephony::matching::Match;
use bitbylaw_worker::handlers::telephony::{index, lookup};
use bitbylaw_worker::intake::signature::LOOKUP_TOPIC;
use bitbylaw_worker::sync::contact::Region;
use common::sides::{advoware_client, advoware_settings, Aw};
use common::{gateway_request, now_secs, signed_lookup, wait_for, RedisServer, Worker, SECRET};
use serde_json::{json, Value};

fn crm(fake: &EspoCrmFake, page_size: Option<usize>) -> EspoCrmClient {
    EspoCrmClient::new(
        ClientSettings::from_settings(&EspoCrmSettings {
            api_base_url: Some(fake.api_url()),
            api_key: Some(Secret::new(fake.config().api_key.clone())),
            timeout: Some(Duration::from_secs(5)),
            page_size,
        })
        .unwrap(),
    )
    .unwrap()
}

async fn manager(redis: &RedisServer) -> redis::aio::ConnectionManager {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap()
}

/// A record as EspoCRM holds it: `phoneNumberData[]` (`(number, type)`, the first primary) and
/// `phoneNumber`, the primary's value.
fn with_numbers(mut record: Value, numbers: &[(&str, &str)]) -> Value {
    let data: Vec<Value> = numbers
        .iter()
        .enumerate()
        .map(|(i, (n, t))| json!({"phoneNumber": n, "type": t, "primary": i == 0}))
        .collect();
    record["phoneNumber"] = json!(numbers.first().map(|(n, _)| *n));
    record["phoneNumberData"] = json!(data);
    record
}

/// The worker with only EspoCRM configured (the lookup and the leads handler).
fn espo_worker(redis: &RedisServer, fake: &EspoCrmFake) -> Worker {
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    Worker::spawn(
        &redis.url(),
        &[("ESPOCRM_API_BASE_URL", &api), ("ESPOCRM_API_KEY", &key)],
        &[],
    )
}

/// The index entry of `e164`, which must exist.
async fn indexed(conn: &redis::aio::ConnectionManager, e164: &str) -> Match {
    lookup::index_get(conn.clone(), e164)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{e164} is not indexed"))
}

fn contact(id: &str) -> Match {
    Match {
        entity: "Contact",
        record: json!({"id": id, "lastName": "Kontakt"}),
    }
}

/// Both fakes, Redis and the real clients for a Beteiligte run.
struct Parties {
    redis: RedisServer,
    espo: EspoCrmFake,
    advoware: AdvowareFake,
    aw: Aw,
    crm: EspoCrmClient,
    conn: redis::aio::ConnectionManager,
}

async fn parties() -> Parties {
    let redis = RedisServer::start(false);
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let advoware = advoware::start(AdvowareConfig::default()).await.unwrap();
    let aw = advoware_client(&advoware_settings(&advoware), redis.conn().await);
    let crm = crm(&espo, None);
    let conn = manager(&redis).await;
    Parties {
        redis,
        espo,
        advoware,
        aw,
        crm,
        conn,
    }
}

#[tokio::test]
async fn a_lookup_after_a_lead_sync_is_answered_warm_without_espocrm() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let w = espo_worker(&redis, &fake);
    let lead = json!({
        "schema_version": "1", "event": "lead.created", "lead_type": "mieter",
        "contact": {"first_name": "Erika", "last_name": "Musterfrau",
                    "email": "erika@privat-example.de", "phone": "0176 5550 123"},
        "message": "Kündigung erhalten"
    });
    let status = gateway_request(
        &w.base,
        "leads.vermieterhelden.received",
        "msg_index_1",
        &serde_json::to_vec(&lead).unwrap(),
        now_secs(),
        SECRET,
    )
    .send()
    .await
    .unwrap()
    .status();
    assert_eq!(status.as_u16(), 202);
    let lead_id = wait_for("the lead in EspoCRM", Duration::from_secs(20), || async {
        fake.all("Lead")
            .first()
            .and_then(|l| l["id"].as_str().map(str::to_owned))
    })
    .await;
    // The handler indexes after writing; wait for the entry, then count EspoCRM requests.
    let mut conn = manager(&redis).await;
    wait_for("the index entry", Duration::from_secs(10), || {
        let conn = conn.clone();
        async move {
            lookup::index_get(conn, "+491765550123")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    fake.controls().clear_requests();
    let r = signed_lookup(&w.base, "0176 5550123", LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let c = &v["contacts"][0];
    assert_eq!(c["EntityType"], "Lead", "{v}");
    assert_eq!(c["EntityId"], lead_id.as_str());
    assert_eq!(c["LastName"], "Musterfrau");
    assert_eq!(c["PhoneMobile"], "0176 5550123");
    assert!(
        fake.controls().requests().is_empty(),
        "a warm lookup asks EspoCRM nothing"
    );
    let _ = redis::cmd("PING").query_async::<String>(&mut conn).await;
}

#[tokio::test]
async fn the_full_refresh_indexes_every_person_with_the_lookups_priority() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let crm = crm(&fake, Some(2));
    // One number on a Lead and a Contact: the Contact wins, as in the lookup.
    let lead = fake
        .insert(
            "Lead",
            json!({"lastName": "Lead-Person", "phoneNumber": "030 1234567"}),
        )
        .unwrap();
    let contact = fake
        .insert(
            "Contact",
            json!({"lastName": "Kontakt", "phoneNumber": "+49 30 1234567"}),
        )
        .unwrap();
    let bet = fake
        .insert(
            "CBeteiligte",
            json!({"lastName": "Partei", "phoneNumber": "0511 98765"}),
        )
        .unwrap();
    for i in 0..3 {
        // More than a page of leads (page size 2).
        fake.insert(
            "Lead",
            json!({"lastName": format!("L{i}"), "phoneNumber": format!("0221 55500{i}")}),
        )
        .unwrap();
    }
    fake.insert(
        "Lead",
        json!({"lastName": "Kaputt", "phoneNumber": "keine"}),
    )
    .unwrap();
    fake.insert("Lead", json!({"lastName": "Ohne"})).unwrap();
    // A second number counts as well.
    let second = fake
        .insert(
            "Lead",
            with_numbers(
                json!({"lastName": "Zwei"}),
                &[("0341 100200", "Office"), ("0341 100201", "Fax")],
            ),
        )
        .unwrap();
    let conn = manager(&redis).await;
    let stats = index::refresh(&crm, conn.clone(), Region::DE)
        .await
        .unwrap();
    assert_eq!(stats.indexed, 8, "{stats:?}");
    assert_eq!(stats.unusable, 1, "{stats:?}");
    let get = |n: &'static str| indexed(&conn, n);
    let m = get("+49301234567").await;
    assert_eq!(
        (m.entity, m.id()),
        ("Contact", contact["id"].as_str().unwrap())
    );
    let m = get("+4951198765").await;
    assert_eq!(
        (m.entity, m.id()),
        ("CBeteiligte", bet["id"].as_str().unwrap())
    );
    let m = get("+49221555002").await;
    assert_eq!(m.entity, "Lead");
    assert_eq!(
        get("+49341100201").await.id(),
        second["id"].as_str().unwrap()
    );
    // A later lead write does not displace the Contact of the same number.
    let lead_match = Match {
        entity: "Lead",
        record: json!({"id": lead["id"], "lastName": "Lead-Person"}),
    };
    assert!(
        !index::put_preferring(conn.clone(), "+49301234567", &lead_match)
            .await
            .unwrap()
    );
    assert_eq!(get("+49301234567").await.entity, "Contact");
}

/// Every entry of `phoneNumberData[]` counts, not only the primary `phoneNumber`: a record's
/// second number is answered warm after the full refresh (zero EspoCRM requests), and a
/// record not yet indexed is found cold by its second number (EspoCRM's filter on
/// `phoneNumber` covers all numbers of a record) and indexed under it.
#[tokio::test]
async fn a_records_second_number_is_answered_warm_after_the_refresh_and_found_cold() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let crm = crm(&fake, None);
    let contact = fake
        .insert(
            "Contact",
            with_numbers(
                json!({"firstName": "Zora", "lastName": "Zweitnummer"}),
                &[
                    ("030 999000", "Office"),
                    ("0171 8889990", "Mobile"),
                    ("kein Anschluss", "Other"),
                ],
            ),
        )
        .unwrap();
    let conn = manager(&redis).await;
    let stats = index::refresh(&crm, conn.clone(), Region::DE)
        .await
        .unwrap();
    assert_eq!((stats.records, stats.indexed, stats.unusable), (1, 2, 1));
    // Added after the refresh: only a cold lookup can find it.
    let lead = fake
        .insert(
            "Lead",
            with_numbers(
                json!({"lastName": "Spät"}),
                &[("0221 123123", "Office"), ("+49221456456", "Home")],
            ),
        )
        .unwrap();
    let w = espo_worker(&redis, &fake);
    fake.controls().clear_requests();
    let v: Value = signed_lookup(&w.base, "+49 171 8889990", LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["contacts"][0]["EntityId"], contact["id"], "{v}");
    assert_eq!(v["contacts"][0]["PhoneMobile"], "+49 171 8889990");
    assert!(
        fake.controls().requests().is_empty(),
        "warm: no EspoCRM request"
    );

    let v: Value = signed_lookup(&w.base, "0221456456", LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["contacts"][0]["EntityType"], "Lead", "{v}");
    assert_eq!(v["contacts"][0]["EntityId"], lead["id"]);
    assert_eq!(v["contacts"][0]["PhoneBusiness"], "0221456456");
    assert!(
        !fake.controls().requests().is_empty(),
        "cold: EspoCRM searched"
    );
    assert_eq!(
        indexed(&conn, "+49221456456").await.id(),
        lead["id"].as_str().unwrap(),
        "indexed by the cold lookup"
    );
}

/// The Beteiligte sync reads each `CBeteiligte` through [`index::beteiligte_sides`]: the party
/// goes under every one of its numbers into the index with that read — no extra EspoCRM
/// request — and never displaces a Contact already indexed for the same number.
#[tokio::test]
async fn the_beteiligte_sync_indexes_the_parties_it_reads() {
    use bitbylaw_core::ids::EspoId;
    use bitbylaw_worker::handlers::beteiligte::sides::EspoSide;
    let p = parties().await;
    let bet = p
        .espo
        .insert(
            "CBeteiligte",
            with_numbers(
                json!({"firmenname": "Muster GmbH", "emailAddressData": [
                    {"emailAddress": "info@muster.example", "primary": true}]}),
                &[("0511 444555", "Office"), ("0176 4445556", "Mobile")],
            ),
        )
        .unwrap();
    let id = EspoId::new(bet["id"].as_str().unwrap()).unwrap();
    let sides = index::beteiligte_sides(&p.crm, &p.aw, Some(p.conn.clone()), Region::DE, &id);
    p.espo.controls().clear_requests();
    let got = sides.espo.get(&id).await.unwrap().expect("record");
    assert_eq!(got.phone_number.as_deref(), Some("0511 444555"));
    assert_eq!(
        p.espo.controls().requests().len(),
        1,
        "one read, nothing extra"
    );
    for number in ["+49511444555", "+491764445556"] {
        let m = indexed(&p.conn, number).await;
        assert_eq!((m.entity, m.id()), ("CBeteiligte", id.as_str()));
        assert_eq!(m.record["emailAddress"], "info@muster.example");
    }
    // A Contact indexed for a number keeps it.
    lookup::index_put(
        p.conn.clone(),
        "+49511444555",
        &contact("contact00000000001"),
    )
    .await
    .unwrap();
    sides.espo.get(&id).await.unwrap();
    assert_eq!(indexed(&p.conn, "+49511444555").await.entity, "Contact");
}

/// A number held only in Advoware's `kommunikation[]` of a synced Beteiligter (FACTS §1: it comes
/// inside `GET Beteiligte`; Advoware has no search) is answered warm by `/3cx/lookup` after one
/// Beteiligte run, pointing at the linked `CBeteiligte`; e-mail entries are not numbers, and a
/// Contact indexed for one of the numbers keeps it.
#[tokio::test]
async fn a_number_only_in_advoware_kommunikation_is_answered_warm_after_a_beteiligte_run() {
    use bitbylaw_core::ids::EspoId;
    use bitbylaw_worker::handlers::beteiligte::engine::{Engine, EngineSettings};
    use bitbylaw_worker::handlers::beteiligte::store::BeteiligteStore;
    let p = parties().await;
    let bet_nr = p.advoware.insert_beteiligter(json!({
        "name": "Partei", "vorname": "Paula",
        "kommunikation": [
            {"kommKz": 1, "tlf": "0511 7654321", "bemerkung": "Kanzlei", "online": false},
            {"kommKz": 3, "tlf": "+49 171 2223334", "bemerkung": null, "online": false},
            {"kommKz": 4, "tlf": "paula@example.de", "bemerkung": null, "online": true},
        ]
    }));
    let row_id = p.advoware.beteiligter(bet_nr).unwrap()["rowId"].clone();
    let bet = p
        .espo
        .insert(
            "CBeteiligte",
            json!({"firstName": "Paula", "lastName": "Partei", "betnr": bet_nr,
                   "syncStatus": "pending_sync", "advowareRowId": row_id}),
        )
        .unwrap();
    let id = EspoId::new(bet["id"].as_str().unwrap()).unwrap();
    // A Contact already owns the mobile number.
    lookup::index_put(
        p.conn.clone(),
        "+491712223334",
        &contact("contact00000000002"),
    )
    .await
    .unwrap();
    let sides = index::beteiligte_sides(&p.crm, &p.aw, Some(p.conn.clone()), Region::DE, &id);
    let store = BeteiligteStore::new(p.redis.conn().await);
    let engine = Engine {
        espo: &sides.espo,
        advoware: &sides.advoware,
        store: &store,
        settings: &EngineSettings::default(),
    };
    engine
        .sync_one(&id, p.espo.clock().now())
        .await
        .expect("sync run");
    let m = indexed(&p.conn, "+495117654321").await;
    assert_eq!((m.entity, m.id()), ("CBeteiligte", id.as_str()));
    assert_eq!(indexed(&p.conn, "+491712223334").await.entity, "Contact");
    // Renamed in Advoware: the next run rewrites the entry it wrote.
    p.advoware
        .edit_beteiligter(bet_nr, json!({"name": "Parteineu"}));
    p.espo.clock().advance_secs(60);
    engine
        .sync_one(&id, p.espo.clock().now())
        .await
        .expect("second run");
    assert_eq!(
        indexed(&p.conn, "+495117654321").await.record["lastName"],
        "Parteineu"
    );

    let w = espo_worker(&p.redis, &p.espo);
    p.espo.controls().clear_requests();
    let r = signed_lookup(&w.base, "0511/7654321", LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let c = &v["contacts"][0];
    assert_eq!(c["EntityType"], "CBeteiligte", "{v}");
    assert_eq!(c["EntityId"], id.as_str());
    assert_eq!(
        (&c["FirstName"], &c["LastName"]),
        (&json!("Paula"), &json!("Parteineu"))
    );
    assert_eq!(c["PhoneBusiness"], "0511/7654321");
    assert!(
        c["ContactUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#CBeteiligte/view/{}", id.as_str())),
        "{v}"
    );
    assert!(
        p.espo.controls().requests().is_empty(),
        "a warm lookup asks EspoCRM nothing"
    );
}
