//! The 3CX lookup index filled outside of calls (issue 14): a lead written by the leads handler
//! is answered warm by the lookup with zero EspoCRM requests, and the nightly full refresh pages
//! Contacts, CBeteiligte and Leads into the index with the lookup's priority.
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

mod common;

use std::time::Duration;

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::{ClientSettings, EspoCrmClient};
use bitbylaw_worker::config::{EspoCrmSettings, Secret};
use bitbylaw_worker::handlers::telephony::{index, lookup};
use bitbylaw_worker::intake::signature::LOOKUP_TOPIC;
use bitbylaw_worker::sync::contact::Region;
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

#[tokio::test]
async fn a_lookup_after_a_lead_sync_is_answered_warm_without_espocrm() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    let w = Worker::spawn(
        &redis.url(),
        &[("ESPOCRM_API_BASE_URL", &api), ("ESPOCRM_API_KEY", &key)],
        &[],
    );
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
    let conn = manager(&redis).await;
    let stats = index::refresh(&crm, conn.clone(), Region::DE)
        .await
        .unwrap();
    assert_eq!(stats.indexed, 6, "{stats:?}");
    assert_eq!(stats.unusable, 1, "{stats:?}");
    let get = |n: &'static str| {
        let conn = conn.clone();
        async move { lookup::index_get(conn, n).await.unwrap().expect(n) }
    };
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
    // A later lead write does not displace the Contact of the same number.
    let lead_match = bitbylaw_worker::handlers::telephony::matching::Match {
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

/// The Beteiligte sync reads each `CBeteiligte` through [`IndexingEspo`]: the party goes under
/// its number into the index with that read — no extra EspoCRM request — and never displaces a
/// Contact already indexed for the same number.
#[tokio::test]
async fn the_beteiligte_sync_indexes_the_parties_it_reads() {
    use bitbylaw_core::ids::EspoId;
    use bitbylaw_worker::handlers::beteiligte::sides::EspoSide;
    use bitbylaw_worker::handlers::beteiligte::IndexingEspo;
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let crm = crm(&fake, None);
    let conn = manager(&redis).await;
    let bet = fake
        .insert(
            "CBeteiligte",
            json!({"firmenname": "Muster GmbH", "phoneNumber": "0511 444555"}),
        )
        .unwrap();
    let side = IndexingEspo {
        inner: &crm,
        index: Some(conn.clone()),
        region: Region::DE,
    };
    let id = EspoId::new(bet["id"].as_str().unwrap()).unwrap();
    fake.controls().clear_requests();
    let got = side.get(&id).await.unwrap().expect("record");
    assert_eq!(got.phone_number.as_deref(), Some("0511 444555"));
    assert_eq!(
        fake.controls().requests().len(),
        1,
        "one read, nothing extra"
    );
    let m = lookup::index_get(conn.clone(), "+49511444555")
        .await
        .unwrap()
        .expect("indexed");
    assert_eq!((m.entity, m.id()), ("CBeteiligte", id.as_str()));
    // A Contact indexed for a number keeps it.
    let contact = bitbylaw_worker::handlers::telephony::matching::Match {
        entity: "Contact",
        record: json!({"id": "contact00000000001", "lastName": "Kontakt"}),
    };
    lookup::index_put(conn.clone(), "+49511444555", &contact)
        .await
        .unwrap();
    side.get(&id).await.unwrap();
    let m = lookup::index_get(conn, "+49511444555")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.entity, "Contact");
}
