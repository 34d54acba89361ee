//! The Beteiligte engine (one run for one record) against the fake EspoCRM, the fake Advoware
//! and a real `redis-server`: create once (also when the write-back fails), both directions,
//! zero writes when nothing changed, conflict policies, 404 in Advoware, bad data up to
//! `permanently_failed`, an Advoware 400.
#![allow(clippy::expect_used)] // In tests a failed expect is a failed test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bitbylaw_core::ids::EspoId;
use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake, BETEILIGTE};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::{
    ClientSettings, EspoCrmClient, ListQuery, NewNotification,
};
use bitbylaw_worker::config::{EspoCrmSettings, Secret};
use bitbylaw_worker::handlers::beteiligte::engine::{Engine, EngineSettings, Outcome};
use bitbylaw_worker::handlers::beteiligte::sides::{AdvowareSide, EspoSide, SideError, System};
use bitbylaw_worker::handlers::beteiligte::store::BeteiligteStore;
use bitbylaw_worker::sync::beteiligte::{AdvowareBeteiligter, ConflictPolicy, EspoBeteiligte};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

mod common;

use common::sides::{advoware_client, advoware_settings, Aw};
use common::RedisServer;

struct Env {
    _redis: RedisServer,
    aw_fake: AdvowareFake,
    espo_fake: EspoCrmFake,
    aw: Aw,
    espo: EspoCrmClient,
    store: BeteiligteStore<MultiplexedConnection>,
    settings: EngineSettings,
}

async fn env() -> Env {
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
    let store = BeteiligteStore::new(redis.conn().await);
    Env {
        _redis: redis,
        aw_fake,
        espo_fake,
        aw,
        espo,
        store,
        settings: EngineSettings {
            notify_user_id: Some("admin1".into()),
            ..EngineSettings::default()
        },
    }
}

impl Env {
    async fn run_with(&self, espo: &dyn EspoSide, id: &EspoId) -> Result<Outcome, String> {
        self.run_sides(espo, &self.aw, id).await
    }

    async fn run_sides(
        &self,
        espo: &dyn EspoSide,
        advoware: &dyn AdvowareSide,
        id: &EspoId,
    ) -> Result<Outcome, String> {
        let engine = Engine {
            espo,
            advoware,
            store: &self.store,
            settings: &self.settings,
        };
        // The fake EspoCRM's clock moves on, as time does between webhooks.
        self.espo_fake.clock().advance_secs(60);
        engine
            .sync_one(id, self.espo_fake.clock().now())
            .await
            .map_err(|e| e.to_string())
    }

    async fn run(&self, id: &EspoId) -> Result<Outcome, String> {
        self.run_with(&self.espo, id).await
    }

    fn person(&self, extra: Value) -> EspoId {
        let mut record = json!({"firstName": "Erika", "lastName": "Mustermann",
            "salutationName": "Ms.", "dateOfBirth": "1964-08-12", "syncStatus": "pending_sync"});
        if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        let stored = self
            .espo_fake
            .insert("CBeteiligte", record)
            .expect("insert");
        EspoId::new(stored["id"].as_str().expect("id")).expect("espo id")
    }

    fn espo_record(&self, id: &EspoId) -> Value {
        self.espo_fake
            .get("CBeteiligte", id.as_str())
            .expect("record")
    }

    fn writes(&self) -> (usize, usize) {
        (
            self.espo_fake.writes("CBeteiligte"),
            self.aw_fake.writes(BETEILIGTE),
        )
    }

    async fn synced_person(&self) -> (EspoId, i64) {
        let id = self.person(json!({}));
        let Ok(Outcome::Created(b)) = self.run(&id).await else {
            panic!("not created");
        };
        (id, b.get() as i64)
    }
}

#[tokio::test]
async fn create_writes_back_and_a_second_run_writes_nothing() {
    let env = env().await;
    let id = env.person(json!({}));
    let outcome = env.run(&id).await.expect("run");
    let Outcome::Created(bet_nr) = outcome else {
        panic!("{outcome:?}");
    };
    let aw = env
        .aw_fake
        .beteiligter(bet_nr.get() as i64)
        .expect("in Advoware");
    assert_eq!(
        (aw["name"].as_str(), aw["vorname"].as_str()),
        (Some("Mustermann"), Some("Erika"))
    );
    let espo = env.espo_record(&id);
    assert_eq!(espo["betnr"], json!(bet_nr.get()));
    assert_eq!(espo["syncStatus"], "clean");
    assert_eq!(espo["advowareRowId"], aw["rowId"]);
    assert_eq!(espo["syncRetryCount"], 0);
    assert!(espo["advowareLastSync"].is_string());

    // The webhook of our own write-back queues another run: it must write nothing anywhere.
    let before = env.writes();
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::NoChange { bookkeeping: false })
    );
    assert_eq!(env.writes(), before);
    assert_eq!(
        env.aw_fake.writes(BETEILIGTE),
        1,
        "exactly one Advoware create"
    );
}

/// The real client, but the write-back carrying `betnr` fails once (EspoCRM down after the
/// Advoware create).
struct FailingWriteBack<'a> {
    inner: &'a EspoCrmClient,
    armed: AtomicBool,
}

impl EspoSide for FailingWriteBack<'_> {
    fn get<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBeteiligte>, SideError>> {
        EspoSide::get(self.inner, id)
    }
    fn update<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<EspoBeteiligte, SideError>> {
        if patch.get("betnr").is_some() && self.armed.swap(false, Ordering::SeqCst) {
            return Box::pin(async {
                Err(SideError::Failed {
                    system: System::EspoCrm,
                    message: "injected: EspoCRM unavailable".into(),
                    retryable: true,
                    retry_after: None,
                    status: Some(503),
                })
            });
        }
        EspoSide::update(self.inner, id, patch)
    }
    fn list<'a>(
        &'a self,
        q: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<EspoBeteiligte>, SideError>> {
        EspoSide::list(self.inner, q)
    }
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), SideError>> {
        EspoSide::notify(self.inner, n)
    }
}

#[tokio::test]
async fn failed_write_back_is_resumed_without_a_second_create() {
    let env = env().await;
    let id = env.person(json!({}));
    let failing = FailingWriteBack {
        inner: &env.espo,
        armed: AtomicBool::new(true),
    };
    let err = env
        .run_with(&failing, &id)
        .await
        .expect_err("write-back fails");
    assert!(err.contains("injected"), "{err}");
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 1);
    let espo = env.espo_record(&id);
    assert_eq!(espo["syncStatus"], "failed");
    assert_eq!(espo["syncRetryCount"], 1);
    assert!(espo.get("betnr").is_none_or(Value::is_null));

    let outcome = env.run_with(&failing, &id).await.expect("retry");
    let Outcome::Created(bet_nr) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        env.aw_fake.writes(BETEILIGTE),
        1,
        "the retry adopted the first create"
    );
    assert!(env.aw_fake.beteiligter(bet_nr.get() as i64).is_some());
    let espo = env.espo_record(&id);
    assert_eq!(
        (espo["betnr"].clone(), espo["syncStatus"].clone()),
        (json!(bet_nr.get()), json!("clean"))
    );
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::NoChange { bookkeeping: false })
    );
}

/// The real client, but the answer to one create is lost after Advoware stored the record
/// (timeout, connection reset, worker killed before Redis heard of it).
struct LostCreateAnswer<'a> {
    inner: &'a Aw,
    armed: AtomicBool,
}

impl AdvowareSide for LostCreateAnswer<'_> {
    fn get(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
    ) -> BoxFuture<'_, Result<Option<AdvowareBeteiligter>, SideError>> {
        AdvowareSide::get(self.inner, bet_nr)
    }
    fn create<'a>(
        &'a self,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        Box::pin(async move {
            let created = AdvowareSide::create(self.inner, b).await?;
            if self.armed.swap(false, Ordering::SeqCst) {
                return Err(SideError::Unanswered {
                    system: System::Advoware,
                    message: "injected: connection lost before the answer".into(),
                });
            }
            Ok(created)
        })
    }
    fn replace<'a>(
        &'a self,
        bet_nr: bitbylaw_core::ids::BetNr,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        AdvowareSide::replace(self.inner, bet_nr, b)
    }
}

#[tokio::test]
async fn a_lost_create_answer_is_never_posted_again_and_a_person_resolves_it() {
    let env = env().await;
    let id = env.person(json!({}));
    let lossy = LostCreateAnswer {
        inner: &env.aw,
        armed: AtomicBool::new(true),
    };
    let err = env
        .run_sides(&env.espo, &lossy, &id)
        .await
        .expect_err("no answer");
    assert!(err.contains("injected"), "{err}");
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 1, "Advoware stored it");

    // The retry cannot know the betNr and must not guess by posting again.
    assert_eq!(
        env.run_sides(&env.espo, &lossy, &id).await,
        Ok(Outcome::CreateUncertain)
    );
    assert_eq!(env.run(&id).await, Ok(Outcome::CreateUncertain));
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 1, "no second Beteiligter");
    let espo = env.espo_record(&id);
    assert_eq!(espo["syncStatus"], "failed");
    assert!(
        espo["syncErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("ohne Antwort")),
        "{espo}"
    );
    let notes = env.espo_fake.all("Notification");
    assert_eq!(
        notes
            .iter()
            .filter(|n| n["message"]
                .as_str()
                .is_some_and(|m| m.contains("ohne Antwort")))
            .count(),
        1,
        "notified once, not on every run: {notes:?}"
    );

    // A person finds the record in Advoware and links it: the next run adopts it.
    // (The fake numbers from 50001.)
    let bet_nr = 50_001;
    assert!(env.aw_fake.beteiligter(bet_nr).is_some());
    env.espo_fake
        .edit("CBeteiligte", id.as_str(), json!({"betnr": bet_nr}));
    let outcome = env.run(&id).await.expect("linked by hand");
    assert!(matches!(outcome, Outcome::NoChange { .. }), "{outcome:?}");
    assert_eq!(env.espo_record(&id)["syncStatus"], "clean");
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 1);
}

#[tokio::test]
async fn a_refused_create_is_simply_retried() {
    let env = env().await;
    let id = env.person(json!({}));
    env.aw_fake
        .controls()
        .fail_next_method_on("POST", "/api/v1/advonet/Beteiligte", 1, 503, None);
    let err = env.run(&id).await.expect_err("503");
    assert!(err.contains("503"), "{err}");
    let outcome = env.run(&id).await.expect("retry");
    assert!(matches!(outcome, Outcome::Created(_)), "{outcome:?}");
    assert_eq!(env.espo_record(&id)["syncStatus"], "clean");
}

#[tokio::test]
async fn changes_flow_both_ways_and_settle() {
    let env = env().await;
    let (id, bet_nr) = env.synced_person().await;

    // A user edits EspoCRM → Advoware gets it, keeping fields the sync does not own.
    assert!(env
        .aw_fake
        .edit_beteiligter(bet_nr, json!({"kurzname": "MUST"})));
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::NoChange { bookkeeping: true }),
        "rowId moved"
    );
    env.espo_fake.edit(
        "CBeteiligte",
        id.as_str(),
        json!({"firstName": "Erika-Maria", "titel": "Dr."}),
    );
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::WroteAdvoware { conflict: None })
    );
    let aw = env.aw_fake.beteiligter(bet_nr).expect("aw");
    assert_eq!(
        (aw["vorname"].as_str(), aw["titel"].as_str()),
        (Some("Erika-Maria"), Some("Dr."))
    );
    assert_eq!(aw["kurzname"], "MUST");
    let before = env.writes();
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::NoChange { bookkeeping: false })
    );
    assert_eq!(env.writes(), before);

    // A user edits Advoware → EspoCRM gets it, in one write.
    assert!(env.aw_fake.edit_beteiligter(
        bet_nr,
        json!({"name": "Musterfrau", "geburtsdatum": "1965-01-02T00:00:00"})
    ));
    let espo_writes = env.espo_fake.writes("CBeteiligte");
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::WroteEspocrm { conflict: None })
    );
    assert_eq!(env.espo_fake.writes("CBeteiligte"), espo_writes + 1);
    let espo = env.espo_record(&id);
    assert_eq!(
        (espo["lastName"].as_str(), espo["dateOfBirth"].as_str()),
        (Some("Musterfrau"), Some("1965-01-02"))
    );
    assert_eq!(
        espo["advowareRowId"],
        env.aw_fake.beteiligter(bet_nr).expect("aw")["rowId"]
    );
    let before = env.writes();
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::NoChange { bookkeeping: false })
    );
    assert_eq!(env.writes(), before);
}

#[tokio::test]
async fn conflict_espocrm_wins_by_default_and_manual_leaves_it() {
    let mut env = env().await;
    let (id, bet_nr) = env.synced_person().await;
    env.espo_fake
        .edit("CBeteiligte", id.as_str(), json!({"lastName": "Espo"}));
    assert!(env
        .aw_fake
        .edit_beteiligter(bet_nr, json!({"name": "Advo"})));
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::WroteAdvoware {
            conflict: Some(vec!["lastName"])
        })
    );
    assert_eq!(env.aw_fake.beteiligter(bet_nr).expect("aw")["name"], "Espo");
    let notes = env.espo_fake.all("Notification");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["userId"], "admin1");
    assert_eq!(notes[0]["relatedId"], id.as_str());
    assert!(notes[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("lastName")));

    env.settings.conflict_policy = ConflictPolicy::Manual;
    env.espo_fake
        .edit("CBeteiligte", id.as_str(), json!({"firstName": "E"}));
    assert!(env
        .aw_fake
        .edit_beteiligter(bet_nr, json!({"vorname": "A"})));
    let aw_writes = env.aw_fake.writes(BETEILIGTE);
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::ConflictLeft(vec!["firstName"]))
    );
    assert_eq!(env.aw_fake.writes(BETEILIGTE), aw_writes);
    assert_eq!(env.espo_record(&id)["syncStatus"], "conflict");
    assert_eq!(env.espo_fake.all("Notification").len(), 2);
    // The echo of our own `conflict` write changes nothing and notifies nobody again.
    let before = env.writes();
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::ConflictLeft(vec!["firstName"]))
    );
    assert_eq!(env.writes(), before);
    assert_eq!(env.espo_fake.all("Notification").len(), 2);
}

#[tokio::test]
async fn missing_in_advoware_is_marked_and_never_recreated() {
    let env = env().await;
    let id = env.person(json!({"betnr": 999_999, "syncStatus": "clean"}));
    assert_eq!(env.run(&id).await, Ok(Outcome::DeletedInAdvoware));
    let espo = env.espo_record(&id);
    assert_eq!(espo["syncStatus"], "deleted_in_advoware");
    assert!(espo["advowareDeletedAt"].is_string());
    assert_eq!(env.espo_fake.all("Notification").len(), 1);
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::Skipped("deleted in Advoware"))
    );
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 0);
}

#[tokio::test]
async fn bad_data_fails_with_reason_until_permanently_failed() {
    let env = env().await;
    let id = env.person(json!({"lastName": null}));
    for attempt in 1..=4 {
        let outcome = env.run(&id).await.expect("run");
        assert!(
            matches!(&outcome, Outcome::InvalidData(m) if m.contains("lastName")),
            "{outcome:?}"
        );
        let espo = env.espo_record(&id);
        assert_eq!(
            (espo["syncStatus"].as_str(), espo["syncRetryCount"].as_i64()),
            (Some("failed"), Some(attempt))
        );
        assert!(espo["syncErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("lastName")));
    }
    env.run(&id).await.expect("fifth");
    assert_eq!(env.espo_record(&id)["syncStatus"], "permanently_failed");
    assert_eq!(env.espo_fake.all("Notification").len(), 1);
    assert_eq!(
        env.run(&id).await,
        Ok(Outcome::Skipped("permanently failed"))
    );
    assert_eq!(env.aw_fake.writes(BETEILIGTE), 0);
}

#[tokio::test]
async fn advoware_400_is_permanent_and_recorded() {
    let env = env().await;
    let id = env.person(json!({}));
    // Mint the token first, so the injected failure hits the Beteiligte call.
    let _ = bitbylaw_worker::handlers::beteiligte::sides::AdvowareSide::get(
        &env.aw,
        bitbylaw_core::ids::BetNr(1),
    )
    .await;
    env.aw_fake.fail_next(1, 400, None);
    let engine = Engine {
        espo: &env.espo,
        advoware: &env.aw,
        store: &env.store,
        settings: &env.settings,
    };
    let err = engine
        .sync_one(&id, chrono::Utc::now())
        .await
        .expect_err("400");
    assert!(!err.is_retryable(), "{err}");
    let espo = env.espo_record(&id);
    assert_eq!(espo["syncStatus"], "failed");
    assert!(
        espo["syncErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("400")),
        "{espo}"
    );
    assert!(espo.get("betnr").is_none_or(Value::is_null));
}

// ----- property: generated persons and companies, typed as people type them, converge

mod converge {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn word() -> impl Strategy<Value = String> {
        "[A-ZÄÖÜ][a-zäöüß]{1,10}( [A-Z][a-z]{1,8})?"
    }

    fn spaced(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        (s, 0usize..2, 0usize..2)
            .prop_map(|(s, l, r)| format!("{}{s}{}", " ".repeat(l), " ".repeat(r)))
    }

    /// A `CBeteiligte` as typed into the CRM: odd spellings and blanks included.
    fn espo_record() -> impl Strategy<Value = Value> {
        let person = (
            spaced(word()),
            proptest::option::of(spaced(word())),
            proptest::option::of(proptest::sample::select(vec!["Mr.", "Ms.", "Mrs.", ""])),
            proptest::option::of(proptest::sample::select(vec!["Dr.", "Prof. Dr."])),
            proptest::option::of((1900i32..2020, 1u32..=12, 1u32..=28)),
        )
            .prop_map(|(last, first, sal, titel, dob)| {
                json!({"lastName": last, "firstName": first, "salutationName": sal,
                    "titel": titel,
                    "dateOfBirth": dob.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))})
            });
        let company = (
            spaced(word()),
            proptest::option::of(proptest::sample::select(vec![
                "GmbH",
                "G.m.b.H.",
                "gmbh",
                "AG",
                "GmbH & Co. KG",
                "UG (haftungsbeschränkt)",
                "e.K.",
            ])),
            proptest::option::of((
                proptest::sample::select(vec!["HRB ", "hrb", "HRA  "]),
                1u32..999_999,
            )),
            proptest::option::of(proptest::sample::select(vec![
                "AG Köln",
                "Amtsgericht Bonn",
            ])),
        )
            .prop_map(|(name, form, hr, court)| {
                json!({"firmenname": name, "rechtsform": form,
                    "handelsregisterNummer": hr.map(|(p, n)| format!("{p}{n}")),
                    "handelsregisterGericht": court})
            });
        prop_oneof![person, company]
    }

    #[test]
    fn generated_records_converge_within_two_runs() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let env = rt.block_on(env());
        let mut runner = TestRunner::new(Config {
            cases: 24,
            ..Config::default()
        });
        // "Neu" + a word never equals a generated name (those are lower-case after the first letter).
        let renamed = spaced(word().prop_map(|w| format!("Neu{w}")));
        let result = runner.run(&(espo_record(), renamed), |(record, new_name)| {
            rt.block_on(async {
                let id = env.person(
                    json!({"firstName": null, "lastName": null, "salutationName": null,
                        "dateOfBirth": null})
                    .as_object()
                    .map(|base| {
                        let mut r = base.clone();
                        r.extend(record.as_object().cloned().unwrap_or_default());
                        Value::Object(r)
                    })
                    .unwrap_or_default(),
                );
                // EspoCRM → Advoware: run 1 creates, run 2 writes nothing.
                let created = env.run(&id).await;
                let Ok(Outcome::Created(bet_nr)) = created else {
                    return Err(TestCaseError::fail(format!("{created:?} for {record}")));
                };
                let before = env.writes();
                prop_assert_eq!(
                    env.run(&id).await,
                    Ok(Outcome::NoChange { bookkeeping: false })
                );
                prop_assert_eq!(env.writes(), before);
                // Advoware → EspoCRM: an edit there, run 1 writes EspoCRM, run 2 nothing.
                env.aw_fake
                    .edit_beteiligter(bet_nr.get() as i64, json!({"name": new_name}));
                let outcome = env.run(&id).await;
                prop_assert!(
                    matches!(outcome, Ok(Outcome::WroteEspocrm { conflict: None })),
                    "{:?}",
                    outcome
                );
                let before = env.writes();
                prop_assert_eq!(
                    env.run(&id).await,
                    Ok(Outcome::NoChange { bookkeeping: false })
                );
                prop_assert_eq!(env.writes(), before);
                Ok(())
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

// ----- issue 12: Kommunikation and Adressen inside the same run

mod details {
    use super::*;
    use bitbylaw_fakes::advoware::{ADRESSEN, KOMMUNIKATIONEN};
    use bitbylaw_worker::clients::advoware::AdvowareClient;
    use bitbylaw_worker::handlers::beteiligte::audit::audit;
    use bitbylaw_worker::sync::beteiligte::kommunikation::{parse_bemerkung, Marker};
    use bitbylaw_worker::sync::contact::{normalize_email, normalize_phone, Region};
    use std::collections::{BTreeMap, BTreeSet};

    impl Env {
        fn aw_komm(&self, bet_nr: i64) -> Vec<Value> {
            self.aw_fake.beteiligter(bet_nr).expect("aw")["kommunikation"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }

        /// Advoware's entry list changed as a user would change it (new rowId).
        fn aw_edit_komm(&self, bet_nr: i64, f: impl FnOnce(&mut Vec<Value>)) {
            let mut list = self.aw_komm(bet_nr);
            f(&mut list);
            assert!(self
                .aw_fake
                .edit_beteiligter(bet_nr, json!({ "kommunikation": list })));
        }

        fn espo_emails(&self, id: &EspoId) -> Vec<String> {
            self.espo_record(id)["emailAddressData"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["emailAddress"].as_str().map(str::to_owned))
                .collect()
        }

        fn espo_phones(&self, id: &EspoId) -> Vec<(String, String)> {
            self.espo_record(id)["phoneNumberData"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some((
                        e["phoneNumber"].as_str()?.to_owned(),
                        e["type"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        }

        fn all_writes(&self) -> (usize, usize) {
            (self.espo_fake.total_writes(), self.aw_fake.total_writes())
        }

        fn aw_requests(&self, method: &str, resource: &str) -> Vec<Value> {
            self.aw_fake
                .requests()
                .into_iter()
                .filter(|r| r.method == method && r.path.contains(resource))
                .map(|r| r.json().unwrap_or(Value::Null))
                .collect()
        }
    }

    fn bemerkung(e: &Value) -> &str {
        e["bemerkung"].as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn kommunikation_flows_both_ways_reuses_slots_and_never_deletes() {
        let env = env().await;
        let id = env.person(json!({
            "emailAddressData": [{"emailAddress": "erika@example.de", "primary": true}],
            "phoneNumberData": [{"phoneNumber": "030 1234567", "type": "Office", "primary": true}],
        }));
        let Ok(Outcome::Created(b)) = env.run(&id).await else {
            panic!("not created");
        };
        let bet_nr = b.get() as i64;
        // The create run brings the Kommunikation over too: a new party arrives complete.
        let komm = env.aw_komm(bet_nr);
        assert_eq!(komm.len(), 2, "{komm:?}");
        let by_kz: BTreeMap<i64, &Value> = komm
            .iter()
            .map(|e| (e["kommKz"].as_i64().unwrap_or(0), e))
            .collect();
        assert_eq!(by_kz[&4]["tlf"], "erika@example.de");
        assert_eq!(
            by_kz[&1]["tlf"], "030 1234567",
            "typed as the user typed it"
        );
        assert!(bemerkung(by_kz[&4]).starts_with("[ESPOCRM:"));
        let before = env.all_writes();
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false })
        );
        assert_eq!(env.all_writes(), before, "a re-sync writes nothing");

        // Added in Advoware (with the user's own note) → added in EspoCRM, the note kept.
        env.aw_edit_komm(bet_nr, |l| {
            l.push(json!({"id": 900, "kommKz": 3, "tlf": "0171 5551234", "bemerkung": "privat", "online": false}))
        });
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        assert!(env
            .espo_phones(&id)
            .contains(&("0171 5551234".into(), "Mobile".into())));
        let added = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["id"] == 900)
            .expect("900");
        assert!(
            bemerkung(&added).starts_with("[ESPOCRM:") && bemerkung(&added).ends_with("] privat"),
            "{added}"
        );

        // Removed in EspoCRM → the Advoware entry becomes an empty slot (DELETE is 403).
        env.espo_fake
            .edit("CBeteiligte", id.as_str(), json!({"emailAddressData": []}));
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        let slot = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["kommKz"] == 4)
            .expect("kz 4");
        assert_eq!(
            (slot["tlf"].as_str(), bemerkung(&slot)),
            (Some(""), "[ESPOCRM-SLOT:4]")
        );
        // A new e-mail reuses the slot: a PUT, no POST.
        let posts = env.aw_requests("POST", KOMMUNIKATIONEN).len();
        env.espo_fake.edit(
            "CBeteiligte",
            id.as_str(),
            json!({"emailAddressData": [{"emailAddress": "neu@example.de", "primary": true}]}),
        );
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        assert_eq!(env.aw_requests("POST", KOMMUNIKATIONEN).len(), posts);
        let reused = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["id"] == slot["id"])
            .expect("slot");
        assert_eq!(reused["tlf"], "neu@example.de");
        assert_eq!(env.aw_komm(bet_nr).len(), 3);
        assert!(env.aw_fake.requests().iter().all(|r| r.method != "DELETE"));
        let before = env.all_writes();
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false })
        );
        assert_eq!(env.all_writes(), before);
        // The Beteiligter's rowId after our sub-record writes is the stored one.
        assert_eq!(
            env.espo_record(&id)["advowareRowId"],
            env.aw_fake.beteiligter(bet_nr).expect("aw")["rowId"]
        );
    }

    /// Advoware's marker is written, then the EspoCRM write fails (injected 503): the retry
    /// resumes from the intent and adds the value to EspoCRM instead of freeing the Advoware
    /// entry as "removed in EspoCRM".
    #[tokio::test]
    async fn interrupted_kommunikation_writes_resume_from_the_intent() {
        let env = env().await;
        let id = env.person(json!({
            "emailAddressData": [{"emailAddress": "a@example.de", "primary": true}],
        }));
        let Ok(Outcome::Created(b)) = env.run(&id).await else {
            panic!("not created");
        };
        let bet_nr = b.get() as i64;
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false }),
            "the create run wrote the details already"
        );
        env.aw_edit_komm(bet_nr, |l| {
            l.push(json!({"id": 901, "kommKz": 4, "tlf": "b@example.de", "online": true}))
        });
        env.espo_fake.controls().fail_next_method_on(
            "PUT",
            &format!("/api/v1/CBeteiligte/{id}"),
            1,
            503,
            None,
        );
        let err = env.run(&id).await.expect_err("EspoCRM write fails");
        assert!(err.contains("503"), "{err}");
        let entry = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["id"] == 901)
            .expect("901");
        assert!(bemerkung(&entry).starts_with("[ESPOCRM:"), "marker written");
        assert!(env.store.komm_intent(&id).await.expect("redis"));
        assert_eq!(env.espo_emails(&id), vec!["a@example.de".to_owned()]);

        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        assert_eq!(
            env.espo_emails(&id),
            vec!["a@example.de".to_owned(), "b@example.de".to_owned()]
        );
        let entry = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["id"] == 901)
            .expect("901");
        assert_eq!(entry["tlf"], "b@example.de", "not freed");
        assert!(!env.store.komm_intent(&id).await.expect("redis"));
        assert_eq!(env.espo_record(&id)["syncStatus"], "clean");
    }

    /// A tiny deterministic generator (the seeds are the test cases).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    fn norm(v: &str) -> String {
        if v.contains('@') {
            normalize_email(v).unwrap_or_else(|_| v.to_owned())
        } else {
            normalize_phone(v, Region::DE).unwrap_or_else(|_| v.to_owned())
        }
    }

    /// Random edit histories on both sides against the fakes (add, change, remove, type change,
    /// user text; Advoware: add, change, empty): every round converges within two runs (a
    /// third writes nothing), no value is held twice on either side by the sync, values added
    /// on one side arrive on the other, and no entry is POSTed while a slot of its kommKz is
    /// left free.
    #[tokio::test]
    async fn random_edit_histories_converge_against_the_fakes() {
        let env = env().await;
        for seed in [1u64, 7, 42] {
            let mut rng = Lcg(seed);
            let id = env.person(json!({"emailAddressData": [], "phoneNumberData": []}));
            let Ok(Outcome::Created(b)) = env.run(&id).await else {
                panic!("not created");
            };
            let bet_nr = b.get() as i64;
            let mut fresh = 0u32;
            let mut next_id = 50_000 + seed as i64 * 1000;
            for round in 0..6 {
                let mut added: Vec<String> = Vec::new();
                // EspoCRM edits.
                let mut emails: Vec<Value> = env.espo_record(&id)["emailAddressData"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut phones: Vec<Value> = env.espo_record(&id)["phoneNumberData"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for _ in 0..rng.next(4) {
                    fresh += 1;
                    match rng.next(5) {
                        0 => {
                            let v = format!("s{seed}r{round}n{fresh}@example.de");
                            added.push(v.clone());
                            emails.push(json!({"emailAddress": v}));
                        }
                        1 => {
                            let v = format!("030 {seed}{round}{fresh:04}");
                            added.push(v.clone());
                            let t = ["Mobile", "Office", "Home"][rng.next(3)];
                            phones.push(json!({"phoneNumber": v, "type": t}));
                        }
                        2 if !emails.is_empty() => {
                            let i = rng.next(emails.len());
                            let gone = emails.remove(i);
                            added.retain(|v| json!(v) != gone["emailAddress"]);
                        }
                        3 if !phones.is_empty() => {
                            let i = rng.next(phones.len());
                            let old = phones[i]["phoneNumber"].clone();
                            added.retain(|v| json!(v) != old);
                            phones[i]["phoneNumber"] =
                                json!(format!("040 {seed}{round}{fresh:04}"));
                        }
                        4 if !phones.is_empty() => {
                            let i = rng.next(phones.len());
                            phones[i]["type"] = json!(["Mobile", "Office", "Home"][rng.next(3)]);
                        }
                        _ => {}
                    }
                }
                env.espo_fake.edit(
                    "CBeteiligte",
                    id.as_str(),
                    json!({"emailAddressData": emails, "phoneNumberData": phones}),
                );
                // Advoware edits.
                let n_adv = rng.next(3);
                let picks: Vec<(usize, usize)> =
                    (0..n_adv).map(|_| (rng.next(4), rng.next(100))).collect();
                let mut adv_added = Vec::new();
                env.aw_edit_komm(bet_nr, |l| {
                    for (op, r) in picks {
                        fresh += 1;
                        let live: Vec<usize> = (0..l.len())
                            .filter(|i| l[*i]["tlf"].as_str().is_some_and(|t| !t.is_empty()))
                            .collect();
                        match op {
                            0 => {
                                let (kz, v) = if r % 2 == 0 {
                                    (4, format!("a{seed}r{round}n{fresh}@example.de"))
                                } else {
                                    ([1, 3, 6][r % 3], format!("089 {seed}{round}{fresh:04}"))
                                };
                                next_id += 1;
                                adv_added.push(v.clone());
                                l.push(json!({"id": next_id, "kommKz": kz, "tlf": v, "online": false}));
                            }
                            1 if !live.is_empty() => {
                                let i = live[r % live.len()];
                                let v = if l[i]["kommKz"] == 4 {
                                    format!("c{seed}r{round}n{fresh}@example.de")
                                } else {
                                    format!("0221 {seed}{round}{fresh:04}")
                                };
                                adv_added.retain(|a| json!(a) != l[i]["tlf"]);
                                l[i]["tlf"] = json!(v);
                            }
                            2 if !live.is_empty() => {
                                let i = live[r % live.len()];
                                adv_added.retain(|a| json!(a) != l[i]["tlf"]);
                                l[i]["tlf"] = json!("");
                            }
                            3 if !live.is_empty() => {
                                let i = live[r % live.len()];
                                let (m, _) = parse_bemerkung(l[i]["bemerkung"].as_str());
                                let text = format!("Notiz {fresh}");
                                l[i]["bemerkung"] = json!(match m {
                                    Some(m) => bitbylaw_worker::sync::beteiligte::kommunikation::render_bemerkung(&m, &text),
                                    None => text,
                                });
                            }
                            _ => {}
                        }
                    }
                });
                added.extend(adv_added);
                // Up to two runs, each checked for "slots before POST".
                for _ in 0..2 {
                    let posts_before = env.aw_requests("POST", KOMMUNIKATIONEN).len();
                    let outcome = env.run(&id).await;
                    assert!(outcome.is_ok(), "seed {seed} round {round}: {outcome:?}");
                    let posted: BTreeSet<i64> = env.aw_requests("POST", KOMMUNIKATIONEN)
                        [posts_before..]
                        .iter()
                        .filter_map(|b| b["kommKz"].as_i64())
                        .collect();
                    for e in env.aw_komm(bet_nr) {
                        if let (Some(Marker::Slot { kommkz }), _) =
                            parse_bemerkung(e["bemerkung"].as_str())
                        {
                            assert!(
                                !posted.contains(&kommkz.code()),
                                "seed {seed} round {round}: POST of kommKz {} with a free slot",
                                kommkz.code()
                            );
                        }
                    }
                }
                let before = env.all_writes();
                let third = env.run(&id).await;
                assert_eq!(
                    (third, env.all_writes()),
                    (Ok(Outcome::NoChange { bookkeeping: false }), before),
                    "seed {seed} round {round}: not converged in two runs"
                );
                // Both sides hold the same values, the sync's entries once each.
                let espo_vals: Vec<String> = env
                    .espo_emails(&id)
                    .into_iter()
                    .chain(env.espo_phones(&id).into_iter().map(|(v, _)| v))
                    .map(|v| norm(&v))
                    .collect();
                let espo_set: BTreeSet<String> = espo_vals.iter().cloned().collect();
                assert_eq!(espo_set.len(), espo_vals.len(), "duplicate in EspoCRM");
                let mut synced: BTreeMap<String, usize> = BTreeMap::new();
                let mut adv_set = BTreeSet::new();
                for e in env.aw_komm(bet_nr) {
                    let tlf = e["tlf"].as_str().unwrap_or("");
                    if tlf.is_empty() {
                        continue;
                    }
                    adv_set.insert(norm(tlf));
                    if let (Some(Marker::Synced { .. }), _) =
                        parse_bemerkung(e["bemerkung"].as_str())
                    {
                        *synced.entry(norm(tlf)).or_default() += 1;
                    }
                }
                assert_eq!(espo_set, adv_set, "seed {seed} round {round}");
                assert!(synced.values().all(|n| *n == 1), "{synced:?}");
                for v in &added {
                    assert!(
                        espo_set.contains(&norm(v)),
                        "seed {seed} round {round}: {v} lost"
                    );
                }
            }
        }
    }

    /// The fakes' restrictions, through the real clients: Advoware answers 403 to DELETE of a
    /// Kommunikation or an address and ignores `kommKz` (and read-only address fields) on PUT;
    /// EspoCRM's arrays replace all entries, keep one primary, drop repeated values.
    #[tokio::test]
    async fn the_fakes_enforce_the_vendor_restrictions() {
        let env = env().await;
        let bet_nr = env.aw_fake.insert_beteiligter(json!({"name": "Fake",
            "kommunikation": [{"id": 1, "kommKz": 3, "tlf": "0171 1", "bemerkung": null, "online": false}],
            "adressen": [{"id": 2, "strasse": "A-Str. 1", "plz": "10115", "ort": "Berlin", "land": "DE"}]}));
        let b = bitbylaw_core::ids::BetNr(bet_nr as u64);
        let aw: &AdvowareClient<_> = &env.aw;
        let del = aw
            .delete(&format!(
                "api/v1/advonet/Beteiligte/{bet_nr}/Kommunikationen/1"
            ))
            .await
            .expect_err("403");
        assert_eq!(del.status(), Some(403));
        let del = aw
            .delete(&format!("api/v1/advonet/Beteiligte/{bet_nr}/Adressen/2"))
            .await
            .expect_err("403");
        assert_eq!(del.status(), Some(403));
        let put = aw
            .update_kommunikation(
                b,
                1,
                &json!({"kommKz": 4, "tlf": "0171 2", "bemerkung": "x", "online": false}),
            )
            .await
            .expect("put");
        assert_eq!(
            (put["kommKz"].clone(), put["tlf"].clone()),
            (json!(3), json!("0171 2"))
        );
        let put = aw
            .update_adresse(
                b,
                2,
                &json!({"strasse": "B-Str. 2", "land": "AT", "bemerkung": "y"}),
            )
            .await
            .expect("put");
        assert_eq!(
            (
                put["strasse"].clone(),
                put["land"].clone(),
                put.get("bemerkung").cloned()
            ),
            (json!("B-Str. 2"), json!("DE"), None)
        );
        let komm = env.aw_komm(bet_nr);
        assert_eq!(komm.len(), 1, "nothing deleted");

        let id = env.person(json!({"emailAddressData": [{"emailAddress": "x@example.de"}]}));
        let after: Value = env
            .espo
            .update(
                "CBeteiligte",
                &id,
                &json!({"emailAddressData": [
                    {"emailAddress": "a@example.de", "primary": false},
                    {"emailAddress": "b@example.de", "primary": true},
                    {"emailAddress": "B@example.de", "primary": true},
                    {"emailAddress": ""}
                ]}),
            )
            .await
            .expect("update");
        let data = after["emailAddressData"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let values: Vec<(&str, bool)> = data
            .iter()
            .filter_map(|e| Some((e["emailAddress"].as_str()?, e["primary"].as_bool()?)))
            .collect();
        assert_eq!(
            values,
            vec![("a@example.de", false), ("b@example.de", true)]
        );
        assert_eq!(after["emailAddress"], "b@example.de");
        let bad = env
            .espo
            .update::<Value, _>(
                "CBeteiligte",
                &id,
                &json!({"phoneNumberData": [{"phoneNumber": "1", "type": "Pager"}]}),
            )
            .await
            .expect_err("400");
        assert_eq!(bad.status(), Some(400));
    }

    fn adresse(env: &Env, id: &EspoId, strasse: &str) -> String {
        let rec = env
            .espo_fake
            .insert(
                "CAdressen",
                json!({"beteiligteId": id.as_str(), "strasse": strasse, "plz": "10115",
                    "ort": "Berlin", "land": "DE"}),
            )
            .expect("insert");
        rec["id"].as_str().expect("id").to_owned()
    }

    fn notifications(env: &Env) -> Vec<String> {
        env.espo_fake
            .all("Notification")
            .into_iter()
            .filter_map(|n| n["message"].as_str().map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn adressen_flow_both_ways_and_what_advoware_refuses_is_a_manual_task() {
        let env = env().await;
        let (id, bet_nr) = env.synced_person().await;
        let a1 = adresse(&env, &id, "Hauptstr. 1");
        // New in EspoCRM → POSTed with every field and the marker.
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        let adr = env.aw_fake.beteiligter(bet_nr).expect("aw")["adressen"].clone();
        assert_eq!(adr.as_array().map(Vec::len), Some(1));
        assert_eq!(adr[0]["land"], "DE");
        assert_eq!(adr[0]["bemerkung"], format!("[ESPOCRM:{a1}]"));
        let before = env.all_writes();
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false })
        );
        assert_eq!(env.all_writes(), before);

        // A writable field changed in EspoCRM → PUT.
        env.espo_fake
            .edit("CAdressen", &a1, json!({"strasse": "Nebenstr. 2"}));
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        let adr = env.aw_fake.beteiligter(bet_nr).expect("aw")["adressen"][0].clone();
        assert_eq!(adr["strasse"], "Nebenstr. 2");

        // A read-only field changed in EspoCRM → notification naming Beteiligter, field, old
        // and new value; syncStatus conflict saying so; no Advoware write, no retry loop.
        env.espo_fake.edit("CAdressen", &a1, json!({"land": "AT"}));
        let aw_writes = env.aw_fake.writes(ADRESSEN);
        assert!(env.run(&id).await.is_ok());
        assert_eq!(env.aw_fake.writes(ADRESSEN), aw_writes);
        let expected = format!(
            "Beteiligter Erika Mustermann ({bet_nr}), Adresse Nebenstr. 2, 10115 Berlin: Feld land ist in Advoware nicht änderbar (alt: DE, neu: AT); bitte in Advoware manuell ändern."
        );
        assert_eq!(
            notifications(&env)
                .iter()
                .filter(|m| **m == expected)
                .count(),
            1,
            "{:?}",
            notifications(&env)
        );
        let rec = env.espo_record(&id);
        assert_eq!(rec["syncStatus"], "conflict");
        assert!(rec["syncErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("Feld land")));
        let before = env.all_writes();
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false })
        );
        assert_eq!(
            env.all_writes(),
            before,
            "no retry loop, no second notification"
        );

        // Advoware → EspoCRM: a new address there is created in EspoCRM, a change arrives.
        let mut list = env.aw_fake.beteiligter(bet_nr).expect("aw")["adressen"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list[0]["land"] = json!("AT"); // the person fixed it by hand
        list.push(json!({"id": 777, "strasse": "Kanzleiweg 3", "plz": "50667", "ort": "Köln"}));
        assert!(env
            .aw_fake
            .edit_beteiligter(bet_nr, json!({ "adressen": list })));
        assert_eq!(env.run(&id).await, Ok(Outcome::WroteDetails));
        let espo_adr = env.espo_fake.all("CAdressen");
        assert!(espo_adr
            .iter()
            .any(|a| a["strasse"] == "Kanzleiweg 3" && a["beteiligteId"] == id.as_str()));
        assert_eq!(env.espo_record(&id)["syncStatus"], "clean", "task resolved");

        // Deleted in EspoCRM → notification (Advoware answers DELETE with 403; none is sent).
        env.espo_fake.remove("CAdressen", &a1);
        assert!(env.run(&id).await.is_ok());
        assert!(notifications(&env)
            .iter()
            .any(|m| m.contains("in EspoCRM gelöscht; Advoware erlaubt kein Löschen")));
        assert_eq!(env.espo_record(&id)["syncStatus"], "conflict");
        assert!(env.aw_fake.requests().iter().all(|r| r.method != "DELETE"));
        let before = env.all_writes();
        assert!(env.run(&id).await.is_ok());
        assert_eq!(env.all_writes(), before);
    }

    /// An EspoCRM read without `phoneNumberData` (a customisation without phone field) leaves
    /// Advoware's phone entries alone: never read as "all removed", never written as empty.
    #[tokio::test]
    async fn a_missing_espocrm_array_leaves_that_class_alone() {
        let env = env().await;
        let id = env.person(json!({
            "emailAddressData": [{"emailAddress": "erika@example.de", "primary": true}],
        }));
        let Ok(Outcome::Created(b)) = env.run(&id).await else {
            panic!("not created");
        };
        let bet_nr = b.get() as i64;
        env.aw_edit_komm(bet_nr, |l| {
            l.push(json!({"id": 950, "kommKz": 3, "tlf": "0171 9", "bemerkung": "Handy", "online": false}))
        });
        // Only the new rowId is recorded: the phone class is not synced without EspoCRM's array.
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: true })
        );
        assert!(env.espo_record(&id).get("phoneNumberData").is_none());
        let phone = env
            .aw_komm(bet_nr)
            .into_iter()
            .find(|e| e["id"] == 950)
            .expect("950");
        assert_eq!(
            (phone["tlf"].as_str(), bemerkung(&phone)),
            (Some("0171 9"), "Handy")
        );
        assert_eq!(env.espo_emails(&id), vec!["erika@example.de".to_owned()]);
        let before = env.all_writes();
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false })
        );
        assert_eq!(env.all_writes(), before);
    }

    /// A synced Beteiligter whose one phone number was then changed to `030 222` in EspoCRM and to
    /// `030 333` in Advoware; its EspoCRM id and `betNr`.
    async fn phone_changed_on_both_sides(env: &Env, first_name: &str) -> (EspoId, i64) {
        let id = env.person(json!({
            "firstName": first_name,
            "phoneNumberData": [{"phoneNumber": "030 111", "type": "Mobile", "primary": true}],
        }));
        let Ok(Outcome::Created(b)) = env.run(&id).await else {
            panic!("not created");
        };
        let bet_nr = b.get() as i64;
        assert_eq!(
            env.run(&id).await,
            Ok(Outcome::NoChange { bookkeeping: false }),
            "the create run wrote the details already"
        );
        env.espo_fake.edit(
            "CBeteiligte",
            id.as_str(),
            json!({"phoneNumberData": [{"phoneNumber": "030 222", "type": "Mobile"}]}),
        );
        env.aw_edit_komm(bet_nr, |l| l[0]["tlf"] = json!("030 333"));
        (id, bet_nr)
    }

    /// The same value changed on both sides: the Beteiligte conflict policy decides, with a
    /// notification; under `manual` both are left, `syncStatus=conflict`, notified once.
    #[tokio::test]
    async fn kommunikation_changed_on_both_sides_follows_the_conflict_policy() {
        let mut env = env().await;
        for policy in [ConflictPolicy::EspocrmWins, ConflictPolicy::Manual] {
            env.settings.conflict_policy = policy;
            let (id, bet_nr) = phone_changed_on_both_sides(&env, &format!("{policy:?}")).await;
            let before = notifications(&env).len();
            assert!(env.run(&id).await.is_ok());
            let notes = notifications(&env)[before..].to_vec();
            let tlf = env.aw_komm(bet_nr)[0]["tlf"].clone();
            let phones = env.espo_phones(&id);
            match policy {
                ConflictPolicy::EspocrmWins => {
                    assert_eq!(tlf, "030 222");
                    assert_eq!(phones, vec![("030 222".to_owned(), "Mobile".to_owned())]);
                    assert!(
                        notes.iter().any(|n| n.contains("Kommunikation")
                            && n.contains("030 222")
                            && n.contains("030 333")
                            && n.contains("EspoCRM hat Vorrang")),
                        "{notes:?}"
                    );
                    assert_eq!(env.espo_record(&id)["syncStatus"], "clean");
                }
                _ => {
                    assert_eq!(tlf, "030 333", "left");
                    assert_eq!(phones, vec![("030 222".to_owned(), "Mobile".to_owned())]);
                    assert_eq!(notes.len(), 1, "{notes:?}");
                    assert_eq!(env.espo_record(&id)["syncStatus"], "conflict");
                    let before = (env.all_writes(), notifications(&env).len());
                    assert!(env.run(&id).await.is_ok());
                    assert_eq!(
                        (env.all_writes(), notifications(&env).len()),
                        before,
                        "notified once, nothing written again"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn audit_shows_kommunikation_and_adressen_differences() {
        let env = env().await;
        let id = env.person(json!({
            "emailAddressData": [{"emailAddress": "erika@example.de", "primary": true}],
        }));
        env.run(&id).await.expect("create");
        env.run(&id).await.expect("details");
        let report = audit(&env.espo, &env.aw, &env.store, &id, &env.settings)
            .await
            .expect("audit");
        assert_eq!(report.differences, 0, "{:?}", report.lines);
        env.espo_fake.edit(
            "CBeteiligte",
            id.as_str(),
            json!({"emailAddressData": [{"emailAddress": "erika@example.de"}, {"emailAddress": "neu@example.de"}]}),
        );
        adresse(&env, &id, "Hauptstr. 1");
        let report = audit(&env.espo, &env.aw, &env.store, &id, &env.settings)
            .await
            .expect("audit");
        assert!(
            report
                .lines
                .iter()
                .any(|l| l.starts_with("DIFF Kommunikation") && l.contains("neu@example.de")),
            "{:?}",
            report.lines
        );
        assert!(
            report
                .lines
                .iter()
                .any(|l| l.starts_with("DIFF Adressen") && l.contains("Hauptstr. 1")),
            "{:?}",
            report.lines
        );
        env.run(&id).await.expect("sync");
        let report = audit(&env.espo, &env.aw, &env.store, &id, &env.settings)
            .await
            .expect("audit");
        assert_eq!(report.differences, 0, "{:?}", report.lines);
    }

    /// The audit predicts the configured policy's run: a value changed on both sides is reported
    /// as a conflict either way, but only `espocrm_wins` would write it to Advoware.
    #[tokio::test]
    async fn audit_follows_the_configured_conflict_policy() {
        let mut env = env().await;
        let (id, _) = phone_changed_on_both_sides(&env, "Audit").await;
        let mut seen = Vec::new();
        for policy in [ConflictPolicy::EspocrmWins, ConflictPolicy::Manual] {
            env.settings.conflict_policy = policy;
            let report = audit(&env.espo, &env.aw, &env.store, &id, &env.settings)
                .await
                .expect("audit");
            let writes_advoware = report
                .lines
                .iter()
                .any(|l| l.contains("would be set to") && l.contains("030 222"));
            let open_conflict = report
                .lines
                .iter()
                .any(|l| l.contains("changed on both sides"));
            seen.push((policy, writes_advoware, open_conflict));
        }
        assert_eq!(
            seen,
            vec![
                (ConflictPolicy::EspocrmWins, true, true),
                (ConflictPolicy::Manual, false, true),
            ]
        );
    }
}
