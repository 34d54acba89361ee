//! Both sides of the Beteiligte sync through their traits, against the fake EspoCRM, the fake
//! Advoware and a real `redis-server` (Advoware token cache): a person typed into EspoCRM is
//! mapped, created in Advoware, read back equal; a read-modify-write PUT keeps Advoware fields
//! the sync does not own; 404s are `None`; errors keep their retry class.
#![allow(clippy::expect_used)] // In tests a failed expect is a failed test.

use std::time::Duration;

use bitbylaw_core::ids::{BetNr, EspoId};
use bitbylaw_fakes::advoware::{self, AdvowareConfig, BETEILIGTE};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use bitbylaw_worker::clients::espocrm::{
    ClientSettings, EspoCrmClient, ListQuery, NewNotification, Where,
};
use bitbylaw_worker::config::{EspoCrmSettings, Secret};
use bitbylaw_worker::handlers::beteiligte::sides::{AdvowareSide, EspoSide, SideError};
use bitbylaw_worker::sync::beteiligte::{
    advoware_to_stammdaten, espo_to_stammdaten, to_advoware, to_espo_patch, StatusUpdate,
    SyncStatus,
};
use serde_json::json;

mod common;

use common::sides::{advoware_client, advoware_settings};
use common::RedisServer;

#[tokio::test]
async fn person_from_espocrm_reaches_advoware_and_back_unchanged() {
    let redis = RedisServer::start(false);
    let aw_fake = advoware::start(AdvowareConfig::default())
        .await
        .expect("advoware fake");
    let espo_fake = espocrm::start(EspoCrmConfig::default())
        .await
        .expect("espocrm fake");
    let aw = advoware_client(&advoware_settings(&aw_fake), redis.conn().await);
    let espo = EspoCrmClient::new(
        ClientSettings::from_settings(&EspoCrmSettings {
            api_base_url: Some(espo_fake.api_url()),
            api_key: Some(Secret::new(espo_fake.config().api_key.clone())),
            timeout: Some(Duration::from_secs(5)),
            page_size: None,
        })
        .expect("settings"),
    )
    .expect("client");

    let typed = espo_fake
        .insert(
            "CBeteiligte",
            json!({"firstName": "Erika", "lastName": "Mustermann", "salutationName": "Ms.",
                   "titel": "Dr.", "dateOfBirth": "1964-08-12", "syncStatus": "pending_sync"}),
        )
        .expect("insert");
    let id = EspoId::new(typed["id"].as_str().expect("id")).expect("espo id");

    // The 15-minute check's query finds it.
    let pending = EspoSide::list(
        &espo,
        &ListQuery::new().filter(Where::is_in(
            "syncStatus",
            ["pending_sync", "dirty", "failed"],
        )),
    )
    .await
    .expect("list");
    assert_eq!(pending.len(), 1);

    let record = EspoSide::get(&espo, &id)
        .await
        .expect("get")
        .expect("exists");
    let data = espo_to_stammdaten(&record).expect("maps");
    let created = AdvowareSide::create(&aw, &to_advoware(None, &data))
        .await
        .expect("create");
    let bet_nr = created.bet_nr.expect("betNr");
    assert_eq!(aw_fake.writes(BETEILIGTE), 1);
    let stored = aw_fake.beteiligter(bet_nr.get() as i64).expect("stored");
    assert_eq!(stored["vorname"], "Erika");
    assert_eq!(stored["anrede"], "Frau");
    assert_eq!(stored["geburtsdatum"], "1964-08-12T00:00:00");

    // Write-back of betnr and status in one partial PUT.
    let mut patch = serde_json::to_value(StatusUpdate::clean(
        created.row_id.as_deref().expect("rowId"),
        chrono::Utc::now(),
    ))
    .expect("patch");
    patch["betnr"] = json!(bet_nr.get());
    let after = EspoSide::update(&espo, &id, &patch)
        .await
        .expect("write-back");
    assert_eq!(after.sync_status, Some(SyncStatus::Clean));
    assert_eq!(after.betnr, Some(bet_nr));

    // Advoware side read back maps to the same master data, and to the same EspoCRM attributes.
    let read = AdvowareSide::get(&aw, bet_nr)
        .await
        .expect("get")
        .expect("exists");
    let back = advoware_to_stammdaten(&read).expect("maps back");
    assert_eq!(back, data);
    assert_eq!(to_espo_patch(&back), to_espo_patch(&data));

    // A user adds a field the sync does not own; a read-modify-write PUT keeps it.
    assert!(aw_fake.edit_beteiligter(
        bet_nr.get() as i64,
        json!({"kurzname": "MUST", "titel": "Prof."})
    ));
    let current = AdvowareSide::get(&aw, bet_nr)
        .await
        .expect("get")
        .expect("exists");
    let replaced = AdvowareSide::replace(&aw, bet_nr, &to_advoware(Some(&current), &data))
        .await
        .expect("replace");
    assert_eq!(replaced.titel.as_deref(), Some("Dr."));
    assert_eq!(replaced.other.get("kurzname"), Some(&json!("MUST")));
    assert_ne!(replaced.row_id, current.row_id, "every write moves rowId");

    // Gone on either side is None, not an error.
    assert!(AdvowareSide::get(&aw, BetNr(999_999))
        .await
        .expect("404")
        .is_none());
    let missing = EspoId::new("0000000000000000a").expect("id");
    assert!(EspoSide::get(&espo, &missing).await.expect("404").is_none());

    // Errors keep their retry class; a 404 on update carries its status.
    let err = EspoSide::update(&espo, &missing, &json!({"syncStatus": "dirty"}))
        .await
        .expect_err("404 on update");
    assert!(
        matches!(
            err,
            SideError::Failed {
                status: Some(404),
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    espo_fake.fail_next(1, 503, Some(3));
    let err = EspoSide::get(&espo, &id).await.expect_err("503");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let err = AdvowareSide::create(&aw, &Default::default())
        .await
        .expect_err("Advoware 400 without a name");
    assert!(!err.is_retryable(), "{err:?}");

    EspoSide::notify(
        &espo,
        &NewNotification {
            kind: "Message".into(),
            message: "Beteiligter synchronisiert".into(),
            user_id: "admin1".into(),
            related_type: Some("CBeteiligte".into()),
            related_id: Some(id.to_string()),
            data: None,
        },
    )
    .await
    .expect("notify");
    assert_eq!(espo_fake.all("Notification").len(), 1);
}

/// Issue 11 leftover: the Beteiligte paths are `[advoware.paths]` settings, not constants. A
/// configured template (here with an extra query parameter the fake ignores) is what goes on the
/// wire for the GET, the POST and the PUT.
#[tokio::test]
async fn configured_beteiligte_paths_are_the_ones_used() {
    let redis = RedisServer::start(false);
    let aw_fake = advoware::start(AdvowareConfig::default())
        .await
        .expect("advoware fake");
    let mut settings = advoware_settings(&aw_fake);
    settings.paths.beteiligte_get = "api/v1/advonet/Beteiligte/{betnr}?via=get".into();
    settings.paths.beteiligte_create = "api/v1/advonet/Beteiligte?via=create".into();
    settings.paths.beteiligte_update = "api/v1/advonet/Beteiligte/{betnr}?via=update".into();
    let aw = advoware_client(&settings, redis.conn().await);

    let espo: bitbylaw_worker::sync::beteiligte::EspoBeteiligte =
        serde_json::from_value(json!({"id": "konfig1", "firstName": "Karl", "lastName": "Konfig"}))
            .expect("espo record");
    let data = espo_to_stammdaten(&espo).expect("maps");
    let created = AdvowareSide::create(&aw, &to_advoware(None, &data))
        .await
        .expect("create");
    let bet_nr = created.bet_nr.expect("betNr");
    let current = AdvowareSide::get(&aw, bet_nr)
        .await
        .expect("get")
        .expect("exists");
    AdvowareSide::replace(&aw, bet_nr, &current)
        .await
        .expect("replace");

    let seen: Vec<(String, String, Option<String>)> = aw_fake
        .controls()
        .requests_to("/api/v1/advonet/Beteiligte")
        .into_iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.query_param("via")))
        .collect();
    let one = format!("/api/v1/advonet/Beteiligte/{bet_nr}");
    assert_eq!(
        seen,
        vec![
            (
                "POST".into(),
                "/api/v1/advonet/Beteiligte".into(),
                Some("create".into())
            ),
            ("GET".into(), one.clone(), Some("get".into())),
            ("PUT".into(), one, Some("update".into())),
        ]
    );

    // A GET template the fake does not serve with a 405 is a configuration error naming the
    // setting, never "deleted in Advoware".
    settings.paths.beteiligte_get = "api/v1/advonet/Beteiligte?betnr={betnr}".into();
    let aw = advoware_client(&settings, redis.conn().await);
    let counted = || bitbylaw_worker::clients::advoware::ENDPOINT_MISMATCHES.get();
    let before = counted();
    let err = AdvowareSide::get(&aw, bet_nr).await.expect_err("mismatch");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(
        err.to_string().contains("ADVOWARE_PATH_BETEILIGTE_GET"),
        "{err}"
    );
    // Counted for `advoware_endpoint_mismatches` (other tests of this binary may count too).
    assert!(counted() > before);
}

/// Issue 12 groundwork: the Kommunikation plan's writes through the real client against the
/// fake Advoware — a POST carries the marker, a removal in EspoCRM turns the entry into a slot
/// (kommKz kept, the user's text kept), and the slot is reused for the next e-mail.
#[tokio::test]
async fn kommunikation_plans_apply_to_advoware_through_the_configured_paths() {
    use bitbylaw_worker::sync::beteiligte::kommunikation::{
        base_from_markers, diff, AdvowareKomm, EspoKind, EspoKomm, KommKz,
    };
    use bitbylaw_worker::sync::beteiligte::ConflictPolicy;
    use bitbylaw_worker::sync::contact::Region;

    let redis = RedisServer::start(false);
    let aw_fake = advoware::start(AdvowareConfig::default())
        .await
        .expect("advoware fake");
    let aw = advoware_client(&advoware_settings(&aw_fake), redis.conn().await);
    let bet_nr = aw_fake.insert_beteiligter(json!({"name": "Komm", "vorname": "Karla"}));
    let nr = BetNr(u64::try_from(bet_nr).expect("betNr"));
    let read = |fake: &advoware::AdvowareFake| -> Vec<AdvowareKomm> {
        let b = fake.beteiligter(bet_nr).expect("stored");
        serde_json::from_value(b["kommunikation"].clone()).unwrap_or_default()
    };
    let mail = |v: &str| EspoKomm {
        kind: EspoKind::Email,
        value: v.into(),
        primary: true,
        opt_out: false,
        invalid: false,
    };
    // Apply a plan with the client, as the handler will.
    let apply = |plan: bitbylaw_worker::sync::beteiligte::kommunikation::Plan| {
        let aw = &aw;
        async move {
            for post in &plan.advoware_posts {
                aw.create_kommunikation(
                    nr,
                    &json!({"kommKz": post.kommkz, "tlf": post.tlf,
                            "bemerkung": post.bemerkung, "online": post.online}),
                )
                .await
                .expect("POST");
            }
            for put in &plan.advoware_puts {
                aw.update_kommunikation(
                    nr,
                    put.id,
                    &json!({"tlf": put.tlf, "bemerkung": put.bemerkung}),
                )
                .await
                .expect("PUT");
            }
        }
    };
    let sync = |espo: &[EspoKomm], adv: &[AdvowareKomm]| {
        diff(
            espo,
            adv,
            &base_from_markers(adv),
            ConflictPolicy::EspocrmWins,
            Region::DE,
        )
    };

    let espo = vec![mail("karla@example.de")];
    apply(sync(&espo, &read(&aw_fake))).await;
    let adv = read(&aw_fake);
    assert_eq!(adv.len(), 1, "{adv:?}");
    assert_eq!(adv[0].kommkz, KommKz::EmailGeschaeftlich);
    assert!(sync(&espo, &adv).is_empty(), "in sync after one run");

    // A user adds a note in Advoware; EspoCRM removes the address: a slot, note kept.
    let id = adv[0].id;
    aw.update_kommunikation(
        nr,
        id,
        &json!({"bemerkung": format!("{} privat", adv[0].bemerkung.clone().unwrap_or_default())}),
    )
    .await
    .expect("user note");
    apply(sync(&[], &read(&aw_fake))).await;
    let adv = read(&aw_fake);
    assert_eq!(adv[0].tlf, "");
    assert_eq!(adv[0].bemerkung.as_deref(), Some("[ESPOCRM-SLOT:4] privat"));
    assert_eq!(adv[0].kommkz, KommKz::EmailGeschaeftlich);

    // The next address reuses the slot: no POST.
    let writes = aw_fake.writes(advoware::KOMMUNIKATIONEN);
    let espo = vec![mail("neu@example.de")];
    let plan = sync(&espo, &adv);
    assert!(plan.advoware_posts.is_empty(), "{plan:?}");
    apply(plan).await;
    let adv = read(&aw_fake);
    assert_eq!(
        (adv.len(), adv[0].id, adv[0].tlf.as_str()),
        (1, id, "neu@example.de")
    );
    assert_eq!(aw_fake.writes(advoware::KOMMUNIKATIONEN), writes + 1);
    assert!(sync(&espo, &adv).is_empty());
}
