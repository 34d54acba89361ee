//! The document sync (issue 15) through the repository's kong.yaml in gateway mode with the built
//! filters, the real worker and real Redis, against the EspoCRM and xAI fakes: a signed entity
//! link hook puts the case's document into the case's collection; a forged one is answered 401 at
//! the edge and leaves xAI untouched; a signed entity create hook gets a new case its collection,
//! and EspoCRM's redelivery of it creates no second one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, espocrm, vermieterhelden, xai};
use common::*;
use serde_json::{json, Value};

const CASE: &str = "Raeumungsklage";
const DOC: &str = "CDokumente";

/// Polls `probe` until it yields a value (a sync runs asynchronously behind the 202).
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_link_and_entity_create_hooks_through_kong_reach_xai() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let xai = xai::start(xai::XaiConfig::default()).await.unwrap();
    let (_worker, worker_url) = spawn_worker(
        &redis.url(),
        &[
            ("ESPOCRM_API_BASE_URL", espo.api_url()),
            ("ESPOCRM_API_KEY", espo.config().api_key.clone()),
            ("XAI_FILES_BASE_URL", xai.files_url()),
            ("XAI_MANAGEMENT_BASE_URL", xai.management_url()),
            ("XAI_API_KEY", xai.config().api_key.clone()),
            (
                "XAI_MANAGEMENT_API_KEY",
                xai.config().management_key.clone(),
            ),
        ],
    )
    .await;
    let hooks = placeholder_hooks();
    let config = render(&vars(
        &adv,
        &worker_url,
        &hooks,
        &vermieterhelden::generate_secret(),
    ));
    let gw = deployed_gateway(config, free_port()).await;
    let hook = |name: &str| hooks[&format!("ESPOCRM_WEBHOOK_ENTITY_{name}")].clone();
    let link_url = format!("{}/vmh/webhook/entity/link", gw.base_url());

    // A case with its document, as EspoCRM holds them.
    let insert = |entity: &str, record: Value| -> String {
        espo.insert(entity, record).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let content = b"%PDF-1.7 Klageschrift e2e".to_vec();
    let case = insert(
        CASE,
        json!({"name": "Räumung Lindenweg 5", "status": "Offen"}),
    );
    let att = espo.insert_attachment("application/pdf", content.clone());
    let doc = insert(
        DOC,
        json!({"name": "Klageschrift.pdf", "dokumentId": att, "fileStatus": "new"}),
    );
    assert!(espo.relate(DOC, &doc, "raeumungsklagen", &case));
    let body = json!([{"id": case, "entityType": CASE, "link": "dokumente", "foreignId": doc}]);

    // Forged: a link of another case, under the link webhook's id with another secret → 401 at
    // the edge; that case never gets a collection, its document is never uploaded.
    let forged_case = insert(
        CASE,
        json!({"name": "Räumung Gefälscht 1", "status": "Offen"}),
    );
    let forged_att = espo.insert_attachment("application/pdf", b"forged".to_vec());
    let forged_doc = insert(
        DOC,
        json!({"name": "Fake.pdf", "dokumentId": forged_att, "fileStatus": "new"}),
    );
    assert!(espo.relate(DOC, &forged_doc, "raeumungsklagen", &forged_case));
    let r = espocrm::send_webhook(
        &link_url,
        &hook("LINK_ID"),
        "not-the-webhook-secret",
        &json!([{"id": forged_case, "entityType": CASE}]),
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_signature", "{v}");

    // Genuine.
    let r = espocrm::send_webhook(
        &link_url,
        &hook("LINK_ID"),
        &hook("LINK_SECRET"),
        &body,
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let (collection, file) = eventually("the document in the case's collection", || {
        let d = espo.get(DOC, &doc)?;
        (d["xaiSyncStatus"] == "clean").then_some(())?;
        let c = espo.get(CASE, &case)?["xaiCollectionId"]
            .as_str()?
            .to_owned();
        let f = d["xaiId"].as_str()?.to_owned();
        Some((c, f))
    })
    .await;
    assert_eq!(xai.members(&collection), vec![file.clone()]);
    assert_eq!(xai.file(&file).unwrap().content, content);
    let c = xai.counters();
    assert_eq!(
        (c.collection_creates, c.uploads, c.adds),
        (1, 1, 1),
        "{c:?}"
    );

    // A forged create hook for a new case changes nothing; the genuine one gets it its collection
    // (EspoCRM's own create webhook: the record, no `entityType`).
    let create_url = format!("{}/vmh/webhook/entity/create", gw.base_url());
    let case2 = insert(
        CASE,
        json!({"name": "Räumung Lindenweg 7", "status": "Offen"}),
    );
    let created = json!([{"id": case2, "name": "Räumung Lindenweg 7", "status": "Offen"}]);
    let r = espocrm::send_webhook(
        &create_url,
        &hook("LINK_ID"),
        &hook("LINK_SECRET"),
        &created,
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401, "the link webhook is not bound to create");
    for _ in 0..2 {
        // The second delivery is EspoCRM's redelivery of the same batch.
        let r = espocrm::send_webhook(
            &create_url,
            &hook("CREATE_ID"),
            &hook("CREATE_SECRET"),
            &created,
            espocrm::SignatureStyle::Current,
        )
        .await
        .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
    let collection2 = eventually("the new case's collection", || {
        Some(
            espo.get(CASE, &case2)?["xaiCollectionId"]
                .as_str()?
                .to_owned(),
        )
    })
    .await;
    assert_eq!(
        xai.collection(&collection2).unwrap().name,
        format!("{CASE} {case2}")
    );
    let all = xai.collections();
    assert_eq!(
        all.len(),
        2,
        "one collection per case, none from a forgery: {all:?}"
    );
    assert_eq!(xai.counters().uploads, 1);
    assert!(espo.get(CASE, &forged_case).unwrap()["xaiCollectionId"].is_null());
    assert!(espo.get(DOC, &forged_doc).unwrap()["xaiId"].is_null());
    assert!(all.iter().all(|c| !c.name.contains(&forged_case)));
}
