//! The Bankverbindungen sync (issue 12 item 3) against a real `redis-server`, the fake EspoCRM
//! and the fake Advoware with the real clients: in process through the engine (invalid IBAN,
//! lost `POST` answer, 403 on delete, captured log output) and through the real worker binary
//! with EspoCRM's real webhooks (create → update → delete, waiting for the `betnr`, re-queued by
//! the Beteiligte create after the DLQ, `beteiligte audit`, a failure between the Advoware `POST`
//! and the write-back). The full IBAN never appears in any log or audit line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use bitbylaw_core::ids::{BetNr, EspoId};
use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake, BANKVERBINDUNGEN};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::EspoCrmClient;
use bitbylaw_worker::config::Config;
use bitbylaw_worker::handlers::bankverbindungen::engine::{BankSettings, Engine, Outcome};
use bitbylaw_worker::handlers::bankverbindungen::sides::{
    AdvowareBank, BankAdvoware, BankPaths, Deleted, SideError, System,
};
use bitbylaw_worker::handlers::bankverbindungen::store::BankStore;
use bitbylaw_worker::sync::bankverbindungen::{FieldNames, KontoId};
use common::sides::{advoware_client, advoware_settings, espo_client};
use common::{
    gateway_request, metric, metrics_text, now_secs, wait_for, RedisServer, Worker, SECRET,
};
use futures::future::BoxFuture;
use serde_json::{json, Value};

const BANK: &str = "CBankverbindungen";
const IBAN: &str = "DE89370400440532013000";
const IBAN_PRINTED: &str = "DE89 3704 0044 0532 0130 00";
const IBAN_MASKED: &str = "DE89 **** **** **** **30 00";
const IBAN_MIDDLE: &str = "37040044053201";
const BANK_PATH: &str = "/api/v1/advonet/Beteiligte/";
const NOTIFY_USER: &str = "admin1";

/// The full IBAN in no form: compact, printed, or its hidden middle.
fn assert_no_iban(text: &str) {
    for leak in [IBAN, IBAN_PRINTED, IBAN_MIDDLE, "3704 0044 0532"] {
        assert!(!text.contains(leak), "IBAN leaked ({leak}):\n{text}");
    }
}

fn bank_requests(adv: &AdvowareFake) -> Vec<bitbylaw_fakes::RecordedRequest> {
    adv.requests()
        .into_iter()
        .filter(|r| r.path.contains("/Bankverbindungen"))
        .collect()
}

fn posts(adv: &AdvowareFake) -> usize {
    bank_requests(adv)
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

// ---------------------------------------------------------------------------------------------
// In process: the engine with the real clients

/// Captures every log line of this test binary (a process-wide subscriber; see
/// `espocrm_client.rs` for why not a scoped one).
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> Buf {
    static LOGS: std::sync::OnceLock<Buf> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
    .clone()
}

fn log_text(buf: &Buf) -> String {
    String::from_utf8_lossy(&buf.0.lock().expect("buf")).into_owned()
}

struct InProcess {
    redis: RedisServer,
    adv: AdvowareFake,
    espo_fake: EspoCrmFake,
    espo: EspoCrmClient,
    bank: AdvowareBank<redis::aio::MultiplexedConnection>,
    store: BankStore<redis::aio::MultiplexedConnection>,
    settings: BankSettings,
}

async fn in_process() -> InProcess {
    let redis = RedisServer::start(false);
    let adv = advoware::start(AdvowareConfig::default()).await.unwrap();
    let espo_fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let espo = espo_client(&espo_fake);
    let conn = redis.conn().await;
    let bank = AdvowareBank {
        client: advoware_client(&advoware_settings(&adv), conn.clone()),
        paths: BankPaths::default(),
    };
    InProcess {
        store: BankStore::new(conn),
        redis,
        adv,
        espo_fake,
        espo,
        bank,
        settings: BankSettings {
            fields: FieldNames::default(),
            notify_user_id: Some(NOTIFY_USER.into()),
        },
    }
}

impl InProcess {
    fn engine<'a>(
        &'a self,
        advoware: &'a dyn BankAdvoware,
    ) -> Engine<'a, redis::aio::MultiplexedConnection> {
        Engine {
            espo: &self.espo,
            advoware,
            store: &self.store,
            settings: &self.settings,
        }
    }

    /// A Beteiligter in both systems (`betnr` set) and a Bankverbindung linked to it.
    fn seed(&self, iban: &str) -> (EspoId, i64) {
        let bet_nr = self
            .adv
            .insert_beteiligter(json!({"name": "Mustermann", "vorname": "Erika"}));
        let bet = self
            .espo_fake
            .insert(
                "CBeteiligte",
                json!({"firstName": "Erika", "lastName": "Mustermann", "betnr": bet_nr}),
            )
            .unwrap();
        let rec = self
            .espo_fake
            .insert(
                BANK,
                json!({"name": "Girokonto", "iban": iban, "bic": "COBADEFFXXX", "bankname": "Commerzbank",
                    "kontoinhaber": "Erika Mustermann", "beteiligteId": bet["id"]}),
            )
            .unwrap();
        (EspoId::new(rec["id"].as_str().unwrap()).unwrap(), bet_nr)
    }
}

#[tokio::test]
async fn a_waiting_record_is_kept_in_its_beteiligters_set_until_re_queued() {
    let t = in_process().await;
    let bet = t
        .espo_fake
        .insert("CBeteiligte", json!({"lastName": "Mustermann"}))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = t
        .espo_fake
        .insert(BANK, json!({"iban": IBAN, "beteiligteId": bet}))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (bet, id) = (EspoId::new(&bet).unwrap(), EspoId::new(&id).unwrap());
    let err = t
        .engine(&t.bank)
        .sync(&id, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no betnr"), "{err}");
    assert_eq!(t.store.waiting(&bet).await.unwrap(), vec![id.to_string()]);
    let mut c = t.redis.conn().await;
    let ttl: i64 = redis::AsyncCommands::ttl(&mut c, format!("bbl:bank:waiting:{bet}"))
        .await
        .unwrap();
    assert!(ttl > 0, "the set expires: {ttl}");
    // Re-queued from a snapshot: an id that started waiting meanwhile stays.
    let snapshot = t.store.waiting(&bet).await.unwrap();
    let later = EspoId::new("661d0000000000abc").unwrap();
    t.store.add_waiting(&bet, &later).await.unwrap();
    t.store.remove_waiting(&bet, &snapshot).await.unwrap();
    assert_eq!(
        t.store.waiting(&bet).await.unwrap(),
        vec![later.to_string()]
    );
    assert!(bank_requests(&t.adv).is_empty());
}

#[tokio::test]
async fn invalid_iban_or_bic_fails_with_a_masked_message_and_no_advoware_request() {
    let buf = logs();
    let t = in_process().await;
    let now = chrono::Utc::now();
    for (iban, bic, expected) in [
        ("DE89 3704 0044 0532 0130 01", "COBADEFFXXX", "Prüfsumme"),
        (
            "DE89 3704 0044 0532 0130 0",
            "COBADEFFXXX",
            "verlangt 22 Zeichen",
        ),
        (IBAN, "COBADE", "BIC"),
    ] {
        let (id, _) = t.seed(iban);
        t.espo_fake.edit(BANK, id.as_str(), json!({"bic": bic}));
        let outcome = t.engine(&t.bank).sync(&id, now).await.unwrap();
        assert!(matches!(outcome, Outcome::InvalidData(_)), "{outcome:?}");
        let rec = t.espo_fake.get(BANK, id.as_str()).unwrap();
        assert_eq!(rec["syncStatus"], "failed");
        let msg = rec["syncErrorMessage"].as_str().unwrap();
        assert!(msg.contains(expected), "{msg}");
        assert_no_iban(msg);
        // Our own failure write comes back as a webhook: no second write.
        let writes = t.espo_fake.writes(BANK);
        let again = t.engine(&t.bank).sync(&id, now).await.unwrap();
        assert_eq!(again, Outcome::Skipped("already failed with this reason"));
        assert_eq!(t.espo_fake.writes(BANK), writes);
    }
    let rec_msg = t.espo_fake.all(BANK)[0]["syncErrorMessage"].clone();
    assert!(
        rec_msg
            .as_str()
            .unwrap()
            .contains("DE89 **** **** **** **30 01"),
        "{rec_msg}"
    );
    assert!(
        t.adv.requests().is_empty(),
        "nothing may reach Advoware: {:?}",
        t.adv.requests()
    );
    assert_no_iban(&log_text(&buf));
    drop(t.redis);
}

/// Creates in Advoware, then returns "no answer" (the answer was lost after Advoware stored it).
struct LosesCreateAnswer<'a>(&'a AdvowareBank<redis::aio::MultiplexedConnection>);

impl BankAdvoware for LosesCreateAnswer<'_> {
    fn list(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<Vec<Value>>, SideError>> {
        self.0.list(bet_nr)
    }
    fn create<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async move {
            self.0.create(bet_nr, body).await?;
            Err(SideError::Unanswered {
                system: System::Advoware,
                message: "connection reset after the POST".into(),
            })
        })
    }
    fn update<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), SideError>> {
        self.0.update(bet_nr, id, body)
    }
    fn delete<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
    ) -> BoxFuture<'a, Result<Deleted, SideError>> {
        self.0.delete(bet_nr, id)
    }
}

#[tokio::test]
async fn a_lost_post_answer_is_adopted_by_iban_never_posted_again() {
    let t = in_process().await;
    let (id, bet_nr) = t.seed(IBAN);
    let now = chrono::Utc::now();
    let lossy = LosesCreateAnswer(&t.bank);
    let err = t.engine(&lossy).sync(&id, now).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(posts(&t.adv), 1);
    let link = t.store.link(&id).await.unwrap();
    assert!(
        link.creating.is_some(),
        "the intent stays after a lost answer"
    );
    assert_eq!(
        t.espo_fake.get(BANK, id.as_str()).unwrap()["syncStatus"],
        "failed"
    );

    // The retry lists first and finds the entry by its IBAN.
    let outcome = t.engine(&t.bank).sync(&id, now).await.unwrap();
    let stored = t.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let konto = KontoId::from_json(&stored[0]["id"]).unwrap();
    assert_eq!(outcome, Outcome::Adopted(konto.clone()));
    assert_eq!(posts(&t.adv), 1, "no second POST");
    let rec = t.espo_fake.get(BANK, id.as_str()).unwrap();
    assert_eq!(rec["syncStatus"], "clean");
    assert_eq!(rec["advowareKontoId"], konto.to_json());
    assert_eq!(rec["syncErrorMessage"], Value::Null);
    let link = t.store.link(&id).await.unwrap();
    assert_eq!(link.konto, Some(konto));
    assert_eq!(link.creating, None);
    // And now nothing more to do.
    let writes = (t.adv.writes(BANKVERBINDUNGEN), t.espo_fake.writes(BANK));
    assert_eq!(
        t.engine(&t.bank).sync(&id, now).await.unwrap(),
        Outcome::NoChange { bookkeeping: false }
    );
    assert_eq!(
        (t.adv.writes(BANKVERBINDUNGEN), t.espo_fake.writes(BANK)),
        writes
    );
}

#[tokio::test]
async fn advoware_edits_come_back_and_a_refused_delete_is_notified() {
    let t = in_process().await;
    let (id, bet_nr) = t.seed(IBAN);
    let now = chrono::Utc::now();
    let Outcome::Created(konto) = t.engine(&t.bank).sync(&id, now).await.unwrap() else {
        panic!("not created");
    };
    // A person changes the bank name in Advoware; the next run (any webhook) brings it over.
    let n: i64 = konto.as_str().parse().unwrap();
    assert!(t
        .adv
        .edit_bankverbindung(bet_nr, n, json!({"bank": "Commerzbank Köln"})));
    assert_eq!(
        t.engine(&t.bank).sync(&id, now).await.unwrap(),
        Outcome::WroteEspocrm
    );
    assert_eq!(
        t.espo_fake.get(BANK, id.as_str()).unwrap()["bankname"],
        "Commerzbank Köln"
    );
    // Delete refused with 403: a notification names the entry; the link is dropped.
    t.adv.deny_bank_delete();
    let link = t.store.link(&id).await.unwrap();
    t.espo_fake.remove(BANK, id.as_str());
    assert_eq!(
        t.engine(&t.bank).delete(&id, &link).await.unwrap(),
        Outcome::DeleteRefused
    );
    assert_eq!(t.adv.bankverbindungen(bet_nr).len(), 1);
    let notes = t.espo_fake.all("Notification");
    assert!(
        notes.iter().any(|n| n["message"]
            .as_str()
            .is_some_and(|m| m.contains("403") && m.contains(konto.as_str()))),
        "{notes:?}"
    );
    assert_eq!(t.store.link(&id).await.unwrap(), Default::default());
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn paths_and_field_names_are_settings_with_every_problem_listed() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [("GATEWAY_SIGNING_SECRET", SECRET)]
            .iter()
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
        m
    };
    let cfg = Config::load(None, &env(&[])).unwrap();
    assert_eq!(
        cfg.bankverbindungen.paths.create,
        "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen"
    );
    assert_eq!(cfg.bankverbindungen.fields.bank, "bank");
    assert_eq!(cfg.bankverbindungen.fields.ist_standard, "");
    let cfg = Config::load(
        None,
        &env(&[
            (
                "BANKVERBINDUNGEN_PATH_LIST",
                "api/v2/Beteiligte/{betnr}/Konten",
            ),
            ("BANKVERBINDUNGEN_FIELD_BANK", "bankName"),
            ("BANKVERBINDUNGEN_FIELD_IST_STANDARD", "standard"),
        ]),
    )
    .unwrap();
    assert_eq!(
        cfg.bankverbindungen.paths.list,
        "api/v2/Beteiligte/{betnr}/Konten"
    );
    assert_eq!(cfg.bankverbindungen.fields.bank, "bankName");
    assert_eq!(cfg.bankverbindungen.fields.ist_standard, "standard");
    let err = Config::load(
        None,
        &env(&[
            ("BANKVERBINDUNGEN_PATH_UPDATE", "api/v1/Konten/{betnr}"),
            ("BANKVERBINDUNGEN_FIELD_IBAN", ""),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("BANKVERBINDUNGEN_PATH_UPDATE: must contain {id}"),
        "{text}"
    );
    assert!(
        text.contains("BANKVERBINDUNGEN_FIELD_IBAN: must not be empty"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(&file, "[bankverbindungen.paths]\nlsit = \"x/{betnr}\"\n").unwrap();
    let err = Config::load(Some(&file), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown setting \"lsit\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The real worker binary with EspoCRM's webhooks

/// Stands in for the gateway: `POST /{topic}` with EspoCRM's body → signed `POST /events`.
async fn relay(State(worker): State<String>, Path(topic): Path<String>, body: Bytes) -> StatusCode {
    let event_id = format!("evt-{}", uuid::Uuid::new_v4().simple());
    match gateway_request(&worker, &topic, &event_id, &body, now_secs(), SECRET)
        .send()
        .await
    {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

struct Running {
    redis: RedisServer,
    adv: AdvowareFake,
    espo: EspoCrmFake,
    worker: Worker,
    _relay: tokio::task::JoinHandle<()>,
    relay_url: String,
    vars: Vec<(String, String)>,
}

async fn running(extra: &[(&str, &str)]) -> Running {
    let redis = RedisServer::start(false);
    let adv = advoware::start(AdvowareConfig::default()).await.unwrap();
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let mut vars: Vec<(String, String)> = common::advoware_env(&adv);
    vars.extend(
        [
            ("ESPOCRM_API_BASE_URL", espo.api_url()),
            ("ESPOCRM_API_KEY", espo.config().api_key.clone()),
            ("BETEILIGTE_NOTIFY_USER_ID", NOTIFY_USER.into()),
            // Every line at debug, so the check below also covers what operators see when debugging.
            ("WORKER_LOG_LEVEL", "debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    let mut o: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    o.extend_from_slice(extra);
    let worker = Worker::spawn(&redis.url(), &o, &["--no-schedules"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{topic}", post(relay))
        .with_state(worker.base.clone());
    let relay = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for action in ["create", "update", "delete"] {
        espo.add_webhook(
            &format!("{BANK}.{action}"),
            &format!("{relay_url}/vmh.bankverbindungen.{action}"),
        );
    }
    Running {
        redis,
        adv,
        espo,
        worker,
        _relay: relay,
        relay_url,
        vars,
    }
}

impl Running {
    fn bank(&self, id: &str) -> Value {
        self.espo.get(BANK, id).unwrap_or(Value::Null)
    }

    /// Delivers EspoCRM's pending webhooks and waits for the runs' outcome count to reach `n`.
    async fn deliver_until(&self, outcome: &str, n: f64) {
        let deliveries = self.espo.flush_webhooks().await;
        assert!(
            deliveries.iter().all(|d| d.status == Some(202)),
            "{deliveries:?}"
        );
        let label = format!("outcome=\"{outcome}\"");
        wait_for(outcome, Duration::from_secs(20), || async {
            let m = metrics_text(&self.worker.base).await;
            (metric(
                &m,
                "bitbylaw_worker_bankverbindungen_sync_runs_total",
                &label,
            ) >= n)
                .then_some(())
        })
        .await;
    }

    fn person(&self, betnr: Option<i64>) -> String {
        let mut rec = json!({"firstName": "Erika", "lastName": "Mustermann"});
        if let Some(b) = betnr {
            rec["betnr"] = json!(b);
        }
        self.espo.insert("CBeteiligte", rec).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn account(&self, beteiligte: &str) -> String {
        self.espo
            .insert(
                BANK,
                json!({"name": "Girokonto", "iban": IBAN_PRINTED, "bic": "COBADEFFXXX",
                    "bankname": "Commerzbank", "kontoinhaber": "Erika Mustermann",
                    "beteiligteId": beteiligte}),
            )
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The CLI with the worker's configuration: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        common::cli_with(&self.redis.url(), &self.vars, args)
    }

    async fn queued(&self) -> u64 {
        let mut c = self.redis.conn().await;
        let mut n = 0;
        for t in [
            "vmh.beteiligte.create",
            "vmh.beteiligte.update",
            "vmh.bankverbindungen.create",
            "vmh.bankverbindungen.update",
        ] {
            let len: u64 = redis::AsyncCommands::xlen(&mut c, format!("bbl:q:{t}"))
                .await
                .unwrap();
            n += len;
        }
        let delayed: u64 = redis::AsyncCommands::zcard(&mut c, "bbl:delayed")
            .await
            .unwrap();
        n + delayed
    }

    /// Delivers webhooks until none is left and the queues are empty (bounded: no ping-pong).
    async fn settle(&self) {
        for _ in 0..8 {
            wait_for("queues idle", Duration::from_secs(30), || async {
                (self.queued().await == 0).then_some(())
            })
            .await;
            if self.espo.flush_webhooks().await.is_empty() {
                return;
            }
        }
        panic!("webhooks keep coming");
    }

    fn assert_log_masked(&self) {
        let log = self.worker.log_text();
        assert_no_iban(&log);
        assert!(
            log.contains(IBAN_MASKED),
            "masked IBAN expected in the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_delete_reach_advoware_with_the_id_written_back() {
    let r = running(&[]).await;
    let bet_nr = r
        .adv
        .insert_beteiligter(json!({"name": "Mustermann", "vorname": "Erika"}));
    let bet = r.person(Some(bet_nr));
    let id = r.account(&bet);

    r.deliver_until("created", 1.0).await;
    let stored = r.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["iban"], IBAN);
    assert_eq!(stored[0]["bic"], "COBADEFFXXX");
    assert_eq!(stored[0]["bank"], "Commerzbank");
    assert_eq!(stored[0]["kontoinhaber"], "Erika Mustermann");
    let rec = r.bank(&id);
    assert_eq!(rec["advowareKontoId"], stored[0]["id"]);
    assert_eq!(rec["syncStatus"], "clean");
    assert!(rec["advowareLastSync"].is_string());

    // The write-back's own webhook: a run with no write anywhere.
    let writes = (r.adv.writes(BANKVERBINDUNGEN), r.espo.writes(BANK));
    r.deliver_until("no_change", 1.0).await;
    assert_eq!(
        (r.adv.writes(BANKVERBINDUNGEN), r.espo.writes(BANK)),
        writes
    );

    // Update in EspoCRM → PUT in Advoware, same entry.
    r.espo.edit(
        BANK,
        &id,
        json!({"bankname": "Commerzbank Köln", "bic": "cobadeff"}),
    );
    r.deliver_until("wrote_advoware", 1.0).await;
    let stored = r.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["bank"], "Commerzbank Köln");
    assert_eq!(stored[0]["bic"], "COBADEFF");
    assert_eq!(r.bank(&id)["advowareKontoId"], stored[0]["id"]);

    // Delete in EspoCRM → DELETE in Advoware.
    r.espo.remove(BANK, &id);
    r.deliver_until("deleted", 1.0).await;
    assert!(r.adv.bankverbindungen(bet_nr).is_empty());
    let mut c = r.redis.conn().await;
    let left: bool = redis::AsyncCommands::exists(&mut c, format!("bbl:bank:{id}"))
        .await
        .unwrap();
    assert!(!left, "the link is forgotten");
    assert_eq!(posts(&r.adv), 1);
    r.assert_log_masked();
}

/// A create path this Advoware does not serve (405) fails the job with the setting named and is
/// counted in `advoware_endpoint_mismatches`, the counter the operator's alert watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_path_advoware_does_not_serve_is_counted_as_an_endpoint_mismatch() {
    let r = running(&[(
        "BANKVERBINDUNGEN_PATH_CREATE",
        "api/v1/advonet/Beteiligte/{betnr}",
    )])
    .await;
    let mismatches = |m: &str| metric(m, "bitbylaw_worker_advoware_endpoint_mismatches_total", "");
    assert_eq!(mismatches(&metrics_text(&r.worker.base).await), 0.0);
    let bet_nr = r.adv.insert_beteiligter(json!({"name": "Muster GmbH"}));
    let bet = r.person(Some(bet_nr));
    let id = r.account(&bet);
    r.deliver_until("permanent", 1.0).await;
    assert_eq!(mismatches(&metrics_text(&r.worker.base).await), 1.0);
    assert!(r.adv.bankverbindungen(bet_nr).is_empty());
    let rec = r.bank(&id);
    assert_eq!(rec["syncStatus"], "failed", "{rec}");
    let msg = rec["syncErrorMessage"].as_str().unwrap_or_default();
    assert!(msg.contains("BANKVERBINDUNGEN_PATH_CREATE"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_iban_through_the_worker_fails_with_zero_advoware_requests() {
    let r = running(&[]).await;
    let bet_nr = r.adv.insert_beteiligter(json!({"name": "Muster GmbH"}));
    let bet = r.person(Some(bet_nr));
    let id = r.account(&bet);
    r.espo
        .edit(BANK, &id, json!({"iban": "DE89 3704 0044 0532 0130 01"}));
    r.deliver_until("invalid_data", 1.0).await;
    let rec = r.bank(&id);
    assert_eq!(rec["syncStatus"], "failed");
    assert!(rec["syncErrorMessage"]
        .as_str()
        .unwrap()
        .contains("DE89 **** **** **** **30 01"));
    assert!(r.adv.requests().is_empty(), "{:?}", r.adv.requests());
    let log = r.worker.log_text();
    assert!(!log.contains("DE89370400440532013001"), "{log}");
    assert!(!log.contains("3704 0044 0532 0130 01"), "{log}");
    assert!(log.contains("DE89 **** **** **** **30 01"), "{log}");
    // Neither the dead-lettered job nor anything else in Redis holds an IBAN (intake masks the
    // payloads of this topic; the handler reads the record from EspoCRM).
    let mut c = r.redis.conn().await;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut c, "bbl:*").await.unwrap();
    let dlq: redis::Value = redis::cmd("XRANGE")
        .arg("bbl:dlq")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let dump = format!("{keys:?} {dlq:?}");
    assert!(
        dump.contains("invalid data"),
        "the job is in the DLQ: {dump}"
    );
    for leak in [
        "DE89370400440532013001",
        "DE89370400440532013000",
        "3704 0044 0532",
    ] {
        assert!(!dump.contains(leak), "{leak} in Redis: {dump}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_betnr_the_job_waits_then_syncs() {
    // Enough retries for the Beteiligte sync to catch up.
    let r = running(&[
        ("WORKER_RETRY_DELAYS_MS", "200"),
        ("WORKER_RETRY_MAX_ATTEMPTS", "100"),
    ])
    .await;
    let bet = r.person(None);
    let id = r.account(&bet);
    r.deliver_until("waiting_for_betnr", 2.0).await;
    assert_eq!(r.bank(&id)["syncStatus"], "pending_sync");
    assert!(
        bank_requests(&r.adv).is_empty(),
        "no Advoware request while waiting"
    );
    // The Beteiligte sync creates it in Advoware and writes the betnr back.
    let bet_nr = r.adv.insert_beteiligter(json!({"name": "Mustermann"}));
    r.espo.edit("CBeteiligte", &bet, json!({"betnr": bet_nr}));
    wait_for(
        "synced after the betnr",
        Duration::from_secs(20),
        || async { (r.bank(&id)["syncStatus"] == "clean").then_some(()) },
    )
    .await;
    let stored = r.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1);
    assert_eq!(r.bank(&id)["advowareKontoId"], stored[0]["id"]);
    assert_eq!(posts(&r.adv), 1);
    r.assert_log_masked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_the_post_and_the_write_back_creates_no_duplicate() {
    let r = running(&[
        ("WORKER_RETRY_DELAYS_MS", "200"),
        ("WORKER_RETRY_MAX_ATTEMPTS", "100"),
    ])
    .await;
    let bet_nr = r.adv.insert_beteiligter(json!({"name": "Mustermann"}));
    let bet = r.person(Some(bet_nr));
    let id = r.account(&bet);
    // Every write to this EspoCRM record fails (the write-back after Advoware stored the
    // entry) until the failures are cleared: the job is retried meanwhile.
    r.espo.controls().fail_next_method_on(
        "PUT",
        &format!("/api/v1/{BANK}/{id}"),
        10_000,
        500,
        None,
    );
    r.deliver_until("retryable", 2.0).await;
    let stored = r.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    let mut c = r.redis.conn().await;
    let created: Option<String> =
        redis::AsyncCommands::hget(&mut c, format!("bbl:bank:{id}"), "created")
            .await
            .unwrap();
    assert_eq!(
        created.as_deref(),
        Some(stored[0]["id"].to_string().as_str()),
        "Advoware's id is in Redis before the write-back"
    );
    assert_eq!(
        posts(&r.adv),
        1,
        "retries resume from Redis, no second POST"
    );
    // EspoCRM is back: the next retry writes the id back.
    r.espo.controls().clear_failures();
    wait_for("written back", Duration::from_secs(20), || async {
        (r.bank(&id)["syncStatus"] == "clean").then_some(())
    })
    .await;
    assert_eq!(r.bank(&id)["advowareKontoId"], stored[0]["id"]);
    assert_eq!(posts(&r.adv), 1, "no second POST");
    assert_eq!(r.adv.bankverbindungen(bet_nr).len(), 1);
    r.assert_log_masked();
}

#[test]
fn bank_path_prefix_is_the_beteiligte_sub_resource() {
    // The fake and the default setting agree on where the resource lives.
    assert!(BankPaths::default().list.starts_with(&BANK_PATH[1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_bankverbindung_is_requeued_by_the_beteiligte_create_and_audited() {
    // One attempt only: without the re-queue by the Beteiligte sync the waiting job would stay
    // in the DLQ and the record would never sync.
    let r = running(&[("WORKER_RETRY_MAX_ATTEMPTS", "1")]).await;
    // With one attempt, a job that finds the clients still starting would end in the DLQ too:
    // wait until `/ready` says ready with both syncs' clients built (and every consumer running).
    let ready = wait_for("clients ready", Duration::from_secs(20), || async {
        let v: Value = common::client()
            .get(format!("{}/ready", r.worker.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "ready"
            && v["checks"]["bankverbindungen_clients"] == "ready"
            && v["checks"]["beteiligte_clients"] == "ready")
            .then_some(v)
    })
    .await;
    assert_eq!(
        ready["checks"]["documents_clients"], "not_configured",
        "{ready}"
    );
    let bet = r.person(None);
    let id = r.account(&bet);
    r.deliver_until("waiting_for_betnr", 1.0).await;
    // The webhook of the `pending_sync` mark: waits again, writes nothing (no further webhook).
    r.deliver_until("waiting_for_betnr", 2.0).await;
    assert!(r.espo.flush_webhooks().await.is_empty());
    wait_for("both jobs in the DLQ", Duration::from_secs(20), || async {
        let mut c = r.redis.conn().await;
        let n: u64 = redis::AsyncCommands::xlen(&mut c, "bbl:dlq").await.ok()?;
        (n >= 2).then_some(())
    })
    .await;
    let mut c = r.redis.conn().await;
    let waiting: Vec<String> =
        redis::AsyncCommands::smembers(&mut c, format!("bbl:bank:waiting:{bet}"))
            .await
            .unwrap();
    assert_eq!(waiting, vec![id.clone()]);
    assert!(bank_requests(&r.adv).is_empty());

    // Now the Beteiligte sync: a user edit creates the Beteiligter in Advoware.
    for action in ["create", "update"] {
        r.espo.add_webhook(
            &format!("CBeteiligte.{action}"),
            &format!("{}/vmh.beteiligte.{action}", r.relay_url),
        );
    }
    r.espo
        .edit("CBeteiligte", &bet, json!({"lastName": "Musterfrau"}));
    // (The flush also delivers the echoes of the runs it causes.)
    let d = r.espo.flush_webhooks().await;
    assert!(
        !d.is_empty() && d.iter().all(|d| d.status == Some(202)),
        "{d:?}"
    );
    wait_for(
        "synced after the Beteiligte create",
        Duration::from_secs(20),
        || async { (r.bank(&id)["syncStatus"] == "clean").then_some(()) },
    )
    .await;
    let bet_nr = r.espo.get("CBeteiligte", &bet).unwrap()["betnr"]
        .as_i64()
        .expect("betnr written back");
    let stored = r.adv.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(r.bank(&id)["advowareKontoId"], stored[0]["id"]);
    let waiting: Vec<String> =
        redis::AsyncCommands::smembers(&mut c, format!("bbl:bank:waiting:{bet}"))
            .await
            .unwrap();
    assert!(waiting.is_empty(), "{waiting:?}");

    // `beteiligte audit`: in sync → 0.
    r.settle().await;
    let (code, out, err) = r.cli(&["beteiligte", "audit", &bet]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Bankverbindungen: 1 in EspoCRM, 1 in Advoware"),
        "{out}"
    );
    assert!(
        out.contains(&format!("equal to Advoware entry {}", stored[0]["id"])),
        "{out}"
    );

    // A changed field in Advoware, an entry only in Advoware, one only in EspoCRM → 1, masked.
    let konto = stored[0]["id"].as_i64().unwrap();
    assert!(r
        .adv
        .edit_bankverbindung(bet_nr, konto, json!({"bank": "Deutsche Bank"})));
    r.adv.insert_bankverbindung(
        bet_nr,
        json!({"iban": "DE02120300000000202051", "bic": "BYLADEM1001"}),
    );
    let only_espo = r
        .espo
        .insert(
            BANK,
            json!({"iban": "GB82 WEST 1234 5698 7654 32", "beteiligteId": bet}),
        )
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, err) = r.cli(&["beteiligte", "audit", &bet]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "DIFF Bankverbindung {id} ({IBAN_MASKED}) bank: EspoCRM \"Commerzbank\" | Advoware \"Deutsche Bank\""
        )),
        "{out}"
    );
    assert!(
        out.contains("DIFF Bankverbindung only in Advoware: entry")
            && out.contains("(DE02 **** **** **** **20 51)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "DIFF Bankverbindung {only_espo} (GB82 **** **** **** **54 32): missing in Advoware"
        )),
        "{out}"
    );
    assert_no_iban(&out);
    for leak in [
        "DE02120300000000202051",
        "GB82WEST12345698765432",
        "WEST 1234",
    ] {
        assert!(!out.contains(leak), "{leak} in {out}");
    }
    r.assert_log_masked();
}
